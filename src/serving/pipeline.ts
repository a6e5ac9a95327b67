// The generation pipeline both endpoints share (docs/design.md §5): a prepared request runs on the engine through the
// transport, and one Generation turns its events into the reply, a JSON object or SSE chunks, keeping the metrics.
// What differs between /v1/completions and /v1/chat/completions is only the shape of a choice (Format); the routes
// are dispatchers.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { EngineClient, FinishEvent, GenerateRequest, StepEvent, Usage } from '../engine/types.js';
import { ApiError } from './errors.js';
import { SYSTEM_FINGERPRINT } from './ids.js';
import type { ServingObserver } from './observe.js';
import { Run, type TaggedEvent } from './run.js';
import { pipeSse } from './sse.js';

export type Endpoint = 'completions' | 'chat';

/** The endpoint-specific part of the reply: object names and the shape of a choice. */
export interface Format {
  endpoint: Endpoint;
  object: 'text_completion' | 'chat.completion';
  chunkObject: 'text_completion' | 'chat.completion.chunk';
  /** Choices of a chunk sent before the first step (chat: the role; completions with echo: the prompt); [] = none. */
  opening(choices: { index: number; part: number }[]): object[];
  /** A step's choice: `text` is the newly committed text (append). */
  step(index: number, text: string, event: StepEvent): Record<string, unknown>;
  /** A finished choice in a stream: `rest` is the final text not sent yet. */
  finish(index: number, rest: string, event: FinishEvent): object;
  /** A finished choice in a JSON reply; `part` is its prompt. */
  choice(index: number, part: number, event: FinishEvent): object;
}

/** A request turned into engine requests (serving/completions.ts, serving/chat.ts). */
export interface Prepared {
  id: string;
  created: number;
  model: string;
  requests: GenerateRequest[];
  /** Choices per engine request: the API's choice index is part * n + the engine's index. */
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** Put canvas, draft and provisional tokens on each step's `diffusion`. */
  includeCanvas: boolean;
  format: Format;
}

function usageBody(u: Usage) {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens };
}

/** The `diffusion` extension of a step's choice (schema: DiffusionStep). */
function diffusionOf(event: StepEvent, includeCanvas: boolean) {
  const ext: Record<string, unknown> = {
    step: event.step,
    block: event.block,
    committed: event.committed.map((c) => ({ position: c.position, token_id: c.tokenId, text: c.text, confidence: c.confidence })),
  };
  if (includeCanvas) {
    ext.canvas = event.canvas ?? null;
    ext.draft = event.draft ?? null;
    ext.provisional = (event.provisional ?? []).map((t) => ({ position: t.position, token_id: t.tokenId, text: t.text }));
    if (event.blockStarts !== undefined) ext.block_starts = event.blockStarts;
  }
  return ext;
}

/** One API request in flight: its run on the engine, the reply built from its events, its metrics. */
export class Generation {
  readonly run: Run;
  /** Characters of each choice's text already streamed (the engine's stable text is final: docs/design.md §5). */
  private readonly sent = new Map<number, number>();
  /** When the request was admitted to the pipeline (time to first step, latency). */
  readonly started = performance.now();

  constructor(
    readonly p: Prepared,
    client: EngineClient,
    timeoutMs: number,
    private readonly obs: ServingObserver,
  ) {
    this.run = new Run(client, p.requests, timeoutMs);
  }

  private get endpoint(): Endpoint {
    return this.p.format.endpoint;
  }

  /** The run's events, with each step counted and the first one timed. */
  private async *events(): AsyncGenerator<TaggedEvent> {
    let first = true;
    for await (const tagged of this.run.events()) {
      if (tagged.event.type === 'step') {
        if (first) {
          first = false;
          this.obs.firstStep(this.endpoint, (performance.now() - this.started) / 1000);
        }
        this.obs.step(this.endpoint);
      }
      yield tagged;
    }
  }

  private base(object: string) {
    const p = this.p;
    return { id: p.id, object, created: p.created, model: p.model, system_fingerprint: SYSTEM_FINGERPRINT };
  }

  /** The whole reply, once every choice has finished; choices in index order. */
  async full(): Promise<object> {
    const choices: { index: number; body: object }[] = [];
    for await (const { part, event } of this.events()) {
      if (event.type !== 'finish') continue;
      const index = part * this.p.n + event.index;
      choices.push({ index, body: this.p.format.choice(index, part, event) });
    }
    choices.sort((a, b) => a.index - b.index);
    return { ...this.base(this.p.format.object), choices: choices.map((c) => c.body), usage: usageBody(this.run.usage) };
  }

  /**
   * Stream chunks (sent as `data: <json>`): the opening chunk when the format has one, one per step, one per finished
   * choice, the usage last (include_usage). The first event is awaited before anything is yielded, so that admission
   * errors (validation, queue full) become plain HTTP errors.
   */
  async *chunks(): AsyncGenerator<object> {
    const p = this.p;
    const base = this.base(p.format.chunkObject);
    const usage = p.includeUsage ? { usage: null } : {};
    const events = this.events();
    const head = await events.next();
    const all = p.requests.flatMap((_, part) => Array.from({ length: p.n }, (_, i) => ({ index: part * p.n + i, part })));
    const opening = p.format.opening(all);
    if (opening.length > 0) yield { ...base, choices: opening, ...usage };
    if (head.done) return;
    for (let next: IteratorResult<TaggedEvent> = head; !next.done; next = await events.next()) {
      const { part, event } = next.value;
      if (event.type === 'done') continue;
      const index = part * p.n + event.index;
      const sent = this.sent.get(index) ?? 0;
      if (event.type === 'step') {
        this.sent.set(index, sent + event.stableText.length);
        const choice = { ...p.format.step(index, event.stableText, event), diffusion: diffusionOf(event, p.includeCanvas) };
        yield { ...base, choices: [choice], ...usage };
      } else {
        yield { ...base, choices: [p.format.finish(index, event.text.slice(sent), event)], ...usage };
      }
    }
    if (p.includeUsage) yield { ...base, choices: [], usage: usageBody(this.run.usage) };
  }
}

/** Runs a prepared request and replies: JSON, or SSE when it streams. Records the outcome either way. */
export async function serveGeneration(app: FastifyInstance, req: FastifyRequest, reply: FastifyReply, p: Prepared) {
  const generation = new Generation(p, app.transport, app.config.requestTimeoutMs, app.metrics.observer);
  const { run } = generation;
  let outcome = 'ok';
  const failed = (err: unknown) => {
    outcome = run.stopReason === 'disconnect' ? 'disconnect' : err instanceof ApiError ? (err.code ?? String(err.status)) : 'error';
  };
  app.runs.add(run);
  // Client gone (fastify#4690: watch the raw response, not request.signal): stop the generation at the next step.
  const onClose = () => {
    if (!reply.raw.writableFinished) run.cancel('disconnect');
  };
  reply.raw.on('close', onClose);
  req.log.info(
    { completionId: p.id, prompts: p.requests.length, promptTokens: p.requests.map((r) => r.promptTokenIds.length), stream: p.stream },
    'generation admitted',
  );
  try {
    if (!p.stream) return await generation.full();
    const chunks = generation.chunks();
    const first = await chunks.next();
    if (first.done) throw ApiError.internal(new Error('a stream without chunks'));
    reply.hijack();
    // The onResponse hook counts this response in dllm_http_requests_total when it ends, hijacked or not.
    await pipeSse(reply.raw, first.value, chunks, {
      keepAliveMs: app.config.keepAliveMs,
      sendTimeoutMs: app.config.httpSendTimeoutMs,
      headers: Object.fromEntries(Object.entries(reply.getHeaders()).map(([k, v]) => [k, String(v)])),
      onError: (err) => {
        failed(err);
        if (!(err instanceof ApiError) || err.status >= 500) req.log.error({ err }, 'stream failed');
        else req.log.info({ code: err.code }, 'stream ended early');
      },
    });
  } catch (err) {
    failed(err);
    throw err;
  } finally {
    reply.raw.off('close', onClose);
    app.runs.delete(run);
    if (run.stopReason === 'disconnect') outcome = 'disconnect';
    app.metrics.observer.finished(p.format.endpoint, outcome, (performance.now() - generation.started) / 1000, run.usage.completionTokens);
    req.log.info({ completionId: p.id, outcome, completionTokens: run.usage.completionTokens }, 'generation ended');
  }
}
