// Runs one API request as one or more engine generations (one per prompt), merged into a single event sequence,
// with the request time limit and cancellation (client gone) applied.

import type { EngineClient, EngineEvent, GenerateRequest, Usage } from '../engine/types.js';
import { ApiError, fromEngineError } from './errors.js';

export interface TaggedEvent {
  /** Which generation (prompt) the event belongs to. */
  part: number;
  event: EngineEvent;
}

export class Run {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | null = null;
  private finished = false;
  /** Why the run stopped early: 'timeout' | 'disconnect' | 'shutdown'. */
  stopReason: string | null = null;
  /** Usage summed over the generations' done events: the one place usage is added up. */
  usage: Usage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };

  constructor(
    private readonly client: EngineClient,
    readonly requests: GenerateRequest[],
    private readonly timeoutMs: number,
  ) {}

  /** Stops every generation of this run (client gone, shutting down). */
  cancel(reason: string): void {
    if (this.finished || this.stopReason !== null) return;
    this.stopReason = reason;
    for (const r of this.requests) this.client.abort(r.id);
    this.controller.abort();
  }

  /** Events of all generations, merged in arrival order. Throws ApiError. */
  async *events(): AsyncGenerator<TaggedEvent> {
    this.timer = setTimeout(() => this.cancel('timeout'), this.timeoutMs);
    const iterators = this.requests.map((r) => this.client.generate(r)[Symbol.asyncIterator]());
    const pending = new Map<number, Promise<{ part: number; res: IteratorResult<EngineEvent> | null; err?: unknown }>>();
    const pull = (part: number) =>
      pending.set(
        part,
        iterators[part].next().then(
          (res) => ({ part, res }),
          (err) => ({ part, res: null, err }),
        ),
      );
    iterators.forEach((_, i) => pull(i));
    const aborted = new Promise<'aborted'>((resolve) => {
      if (this.controller.signal.aborted) resolve('aborted');
      this.controller.signal.addEventListener('abort', () => resolve('aborted'), { once: true });
    });
    try {
      while (pending.size > 0) {
        const winner = await Promise.race([...pending.values(), aborted]);
        if (winner === 'aborted') throw this.stopError();
        pending.delete(winner.part);
        if (winner.res === null) {
          if (this.stopReason !== null) throw this.stopError();
          throw fromEngineError(winner.err);
        }
        if (winner.res.done) continue;
        if (winner.res.value.type === 'done') {
          const u = winner.res.value.usage;
          this.usage = {
            promptTokens: this.usage.promptTokens + u.promptTokens,
            completionTokens: this.usage.completionTokens + u.completionTokens,
            totalTokens: this.usage.totalTokens + u.totalTokens,
          };
        }
        yield { part: winner.part, event: winner.res.value };
        pull(winner.part);
      }
    } finally {
      this.finished = true;
      if (this.timer) clearTimeout(this.timer);
      if (pending.size > 0) {
        // Leaving early: stop the generations still running and release their iterators.
        for (const r of this.requests) this.client.abort(r.id);
        for (const [part] of pending) void iterators[part].return?.(undefined).catch(() => undefined);
        for (const p of pending.values()) void p.catch(() => undefined);
      }
    }
  }

  private stopError(): ApiError {
    if (this.stopReason === 'timeout') return ApiError.timeout(this.timeoutMs);
    if (this.stopReason === 'shutdown') return ApiError.notReady('the server is shutting down');
    return ApiError.cancelled();
  }
}
