// Runs one API request as one or more engine generations (one per prompt), merged into a single event sequence,
// with the request time limit and cancellation (client gone) applied.

import type { EngineClient, EngineEvent, FinishEvent, GenerateRequest, Usage } from '../engine/types.js';
import type { ServingObserver } from './observe.js';
import { ApiError, fromEngineError } from './errors.js';

export interface TaggedEvent {
  /** Which generation (prompt) the event belongs to. */
  part: number;
  event: EngineEvent;
}

export interface RunObserver {
  onStep?(part: number): void;
  onFirstStep?(): void;
}

export class Run {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | null = null;
  private finished = false;
  /** Why the run stopped early: 'timeout' | 'disconnect' | 'shutdown'. */
  stopReason: string | null = null;
  /** Usage summed over the generations' done events. */
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
        if (winner.res.value.type === 'done') this.usage = addUsage(this.usage, winner.res.value.usage);
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
    return new ApiError(499, 'Client closed the request', 'cancelled', 'cancelled');
  }
}

export function addUsage(a: Usage, b: Usage): Usage {
  return {
    promptTokens: a.promptTokens + b.promptTokens,
    completionTokens: a.completionTokens + b.completionTokens,
    totalTokens: a.totalTokens + b.totalTokens,
  };
}

/**
 * The run's events with the first one awaited up front: the caller learns of admission errors (queue full,
 * validation) before it sends anything, so that they become plain HTTP errors rather than stream errors.
 */
export async function admitted(run: Run): Promise<AsyncGenerator<TaggedEvent>> {
  const it = run.events();
  const head = await it.next();
  return (async function* () {
    try {
      if (head.done) return;
      yield head.value;
      yield* it;
    } finally {
      await it.return(undefined);
    }
  })();
}

/**
 * Drains a non-streamed run: reports steps to the metrics, turns each finished choice into the endpoint's choice
 * object, sums the usage of every generation. Choices come back in index order.
 */
export async function collectChoices<C extends { index: number }>(
  run: Run,
  obs: ServingObserver,
  endpoint: string,
  toChoice: (part: number, event: FinishEvent) => C,
): Promise<{ choices: C[]; usage: Usage }> {
  const t0 = performance.now();
  let first = true;
  const choices: C[] = [];
  let usage: Usage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
  for await (const { part, event } of run.events()) {
    if (event.type === 'step') {
      if (first) {
        first = false;
        obs.firstStep(endpoint, (performance.now() - t0) / 1000);
      }
      obs.step(endpoint);
    } else if (event.type === 'finish') {
      choices.push(toChoice(part, event));
    } else {
      usage = addUsage(usage, event.usage);
    }
  }
  choices.sort((a, b) => a.index - b.index);
  return { choices, usage };
}
