// The app over a synthetic engine, for inject-level tests of the serving seams (fastify/demo's style): the engine
// is a script of events per request, so that every SSE frame, error object and metric can be checked exactly.
// Everything else is real: the app plugin, the schemas, the tiny model folder's tokenizer and limits.

import Fastify, { type FastifyInstance } from 'fastify';
import app from '../../src/app.js';
import { serverOptions } from '../../src/server.js';
import { loadConfig } from '../../src/config.js';
import { loadModelFolder } from '../../src/engine/model_folder.js';
import type { EngineEvent, EngineHealth, FinishEvent, GenerateRequest, StepEvent } from '../../src/engine/types.js';
import { servingModel } from '../../src/serving/model.js';
import { NO_LOAD, type Transport } from '../../src/transports/transport.js';
import { MODEL_DIR } from './procs.js';

/** The events (or the error) a request gets: a function of the request, so that tests can check what was sent. */
export type Script = (request: GenerateRequest, signal: AbortSignal) => AsyncIterable<EngineEvent>;

export class SyntheticEngine implements Transport {
  readonly kind = 'local' as const;
  readonly requests: GenerateRequest[] = [];
  readonly aborted: string[] = [];
  private readonly controllers = new Map<string, AbortController>();

  constructor(public script: Script) {}

  async *generate(request: GenerateRequest): AsyncIterable<EngineEvent> {
    this.requests.push(request);
    const controller = new AbortController();
    this.controllers.set(request.id, controller);
    yield* this.script(request, controller.signal);
  }

  abort(id: string): void {
    this.aborted.push(id);
    this.controllers.get(id)?.abort();
  }

  async health(): Promise<EngineHealth> {
    return { ok: true, model: 'tiny-llada', provider: 'cpu', precision: 'fp32', activeSequences: 0, waitingSequences: 0, runningRequests: 0, waitingRequests: 0, maxBatchSize: 16 };
  }

  async status() {
    return { ready: true, workers: 1, load: NO_LOAD, maxBatchSize: 16, providers: { 'cpu/fp32': 1 } };
  }

  async close(): Promise<void> {}
}

export const step = (index: number, n: number, stableText: string, extra: Partial<StepEvent> = {}): StepEvent => ({
  type: 'step',
  index,
  step: n,
  block: 0,
  committed: [{ position: n, tokenId: 100 + n, text: stableText, confidence: 0.5 }],
  stableText,
  ...extra,
});

export const finish = (index: number, text: string, finishReason: FinishEvent['finishReason'] = 'length'): FinishEvent => ({
  type: 'finish',
  index,
  finishReason,
  text,
  tokenIds: [],
  steps: 2,
});

export const done = (promptTokens: number, completionTokens: number): EngineEvent => ({
  type: 'done',
  usage: { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens },
});

/** A script that sends these events in order, for any request. */
export const events =
  (...list: EngineEvent[]): Script =>
  async function* () {
    yield* list;
  };

export async function syntheticApp(script: Script, env: Record<string, string> = {}): Promise<{ app: FastifyInstance; engine: SyntheticEngine }> {
  const config = loadConfig({ MODEL_DIR, LOG_LEVEL: 'silent', ...env });
  const engine = new SyntheticEngine(script);
  const fastify = Fastify(serverOptions(config, false));
  await fastify.register(app, { config, model: servingModel(await loadModelFolder(MODEL_DIR)), transport: engine });
  await fastify.ready();
  return { app: fastify as unknown as FastifyInstance, engine };
}

/** The `data:` payloads of an SSE body, parsed, with the per-request id and time replaced by fixed values. */
export function frames(body: string): unknown[] {
  assertFraming(body);
  return body
    .split('\n\n')
    .filter((f) => f.startsWith('data: '))
    .map((f) => f.slice('data: '.length))
    .map((d) => (d === '[DONE]' ? d : { ...JSON.parse(d), ...('id' in JSON.parse(d) ? { id: 'ID', created: 0 } : {}) }));
}

/** Every frame is `data: <payload>\n\n` (or a `: ping` comment), and the body ends with exactly one [DONE]. */
function assertFraming(body: string): void {
  if (!body.endsWith('data: [DONE]\n\n')) throw new Error(`stream does not end with [DONE]: ${JSON.stringify(body.slice(-80))}`);
  for (const f of body.slice(0, -2).split('\n\n')) {
    if (!/^(data: [^\n]+|: ping)$/.test(f)) throw new Error(`bad SSE frame ${JSON.stringify(f)}`);
  }
  if (body.split('data: [DONE]').length !== 2) throw new Error('more than one [DONE]');
}

/** The value of a Prometheus sample (0 when absent). */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (ok) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}
