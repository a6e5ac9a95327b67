// A single-consumer async queue: the engine loop pushes a request's events, generate() iterates them.

export class EventChannel<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiter: (() => void) | null = null;
  private closed = false;
  private error: Error | null = null;

  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    this.wake();
  }

  /** No more items; iteration ends after the queued ones. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  /** Iteration throws `error` after the queued items. */
  fail(error: Error): void {
    if (this.closed) return;
    this.error = error;
    this.close();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.shift()!;
      } else if (this.closed) {
        if (this.error) throw this.error;
        return;
      } else {
        await new Promise<void>((resolve) => (this.waiter = resolve));
      }
    }
  }
}
