// The generations in progress, for graceful shutdown: wait until none is left (woken by the last one to end, not by
// polling), up to a deadline; then cancel what is left.

/** What the registry needs of a run (serving/run.ts). */
export interface Cancellable {
  cancel(reason: string): void;
}

export class Runs<R extends Cancellable = Cancellable> {
  private readonly live = new Set<R>();
  private readonly whenEmpty = new Set<() => void>();

  get size(): number {
    return this.live.size;
  }

  add(run: R): void {
    this.live.add(run);
  }

  delete(run: R): void {
    this.live.delete(run);
    if (this.live.size > 0) return;
    for (const wake of this.whenEmpty) wake();
    this.whenEmpty.clear();
  }

  /** True once no run is left; false if some still are after `ms`. */
  drained(ms: number): Promise<boolean> {
    if (this.live.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.whenEmpty.delete(wake);
        resolve(false);
      }, ms);
      this.whenEmpty.add(wake);
    });
  }

  cancelAll(reason: string): void {
    for (const run of this.live) run.cancel(reason);
  }
}
