// The engine: owns the step loop (nano-vllm's shape: schedule -> run the graph -> postprocess) and implements the
// EngineClient interface of types.ts for the serving layer.

import { buildBatch, groupByLength, type Batch, type BatchEntry, type KvGeometry } from './batch.js';
import { DeviceKvStore, HostKvStore, type KvStore } from './kv_store.js';
import { CompletionText } from './completion_text.js';
import { EventChannel } from './event_channel.js';
import type { GraphRun, GraphRunner, Transfers } from './graph_runner.js';
import { loadModelFolder, type ModelFolder, type ModelSpec, type TextTokenizer } from './model_folder.js';
import { OnnxGraphRunner, type ProviderChoice } from './onnx_session.js';
import { MAX_SEED, randomSeed } from './rng.js';
import { Scheduler, type Schedulable } from './scheduler.js';
import { Sequence, type Commit } from './sequence.js';
import { passKind } from './kv_cache.js';
import {
  addBytes,
  EngineError,
  type CacheMode,
  type EngineClient,
  type EngineEvent,
  type EngineHealth,
  type FinishEvent,
  type GenerateRequest,
  type StepEvent,
} from './types.js';
import { promptPrefix, validateRequest } from './validation.js';

export interface EngineOptions {
  /** The graph's precision, reported by health(). */
  precision?: 'fp32' | 'fp16';
  /** Most graph rows per step (a guided sequence takes two). */
  maxBatchSize?: number;
  /** Rows of very different lengths run as separate graph runs when one run would pad more than this ratio. */
  maxPaddedRatio?: number;
  /** The runner runs the folder's cached graph (format 2): key/value caches are available. */
  cachedGraph?: boolean;
  /** Cache mode of requests that do not set one ('none' without a cached graph). */
  defaultCache?: CacheMode;
  /** Bound on the key/value cache bytes that admitted sequences may hold (default 2 GiB). */
  maxCacheBytes?: number;
}

export const DEFAULT_MAX_CACHE_BYTES = 2 * 1024 ** 3;

/** Cumulative timings, for the benchmark and metrics. */
export interface EngineStats {
  steps: number;
  graphRuns: number;
  /** Tokens committed. */
  tokens: number;
  /** Wall time of whole steps. */
  stepMs: number;
  /** Time inside session.run, as measured in the worker thread. */
  graphMs: number;
  /** Time awaiting graph runs on the main thread (graphMs + thread hand-off). */
  graphWaitMs: number;
  /** Sequence steps run from a key/value cache. */
  cacheHits: number;
  /** Sequence steps that (re)filled a key/value cache with a full pass. */
  cacheRefreshes: number;
}

class ActiveRequest {
  readonly channel = new EventChannel<EngineEvent>();
  readonly choices: Choice[] = [];
  cancelled = false;
  failed = false;
  finishedChoices = 0;
  completionTokens = 0;
  constructor(readonly request: GenerateRequest) {}
}

class Choice implements Schedulable {
  stoppedText: string | null = null;
  finished = false;
  constructor(
    readonly owner: ActiveRequest,
    readonly index: number,
    readonly sequence: Sequence,
    readonly text: CompletionText,
    /** Cache bytes reserved while active (the scheduler's cost). */
    readonly cost: number,
  ) {}

  get rowCount(): number {
    return this.sequence.rowCount;
  }

  get done(): boolean {
    return this.finished || this.owner.cancelled || this.owner.failed;
  }
}

/** A graph run planned for a step: the active choices (by index) it serves and its inputs, built in its turn. */
interface PlannedRun {
  indices: number[];
  entries: BatchEntry[];
  build: () => Batch;
  /** A full pass whose keys/values refill caches. */
  refresh: boolean;
  /** Cached steps. */
  fromCache: boolean;
}

export class DiffusionEngine implements EngineClient {
  private readonly scheduler: Scheduler<Choice>;
  private readonly requests = new Map<string, ActiveRequest>();
  private readonly maxPaddedRatio: number;
  private readonly precision: 'fp32' | 'fp16';
  private readonly geometry: KvGeometry | null;
  private readonly defaultCache: CacheMode;
  private readonly maxCacheBytes: number;
  /** The key/value caches (null without a cached graph). */
  private readonly store: KvStore | null;
  /** Bytes moved between host and device by tensor, since start (GPU providers). */
  private readonly transfers: Transfers = { hostToDevice: {}, deviceToHost: {} };
  private running = false;
  /** The step loop in progress (resolved when idle): close() waits for it before it closes the session. */
  private loopDone: Promise<void> = Promise.resolve();
  readonly stats: EngineStats = { steps: 0, graphRuns: 0, tokens: 0, stepMs: 0, graphMs: 0, graphWaitMs: 0, cacheHits: 0, cacheRefreshes: 0 };

  constructor(
    readonly spec: ModelSpec,
    readonly tokenizer: TextTokenizer,
    private readonly runner: GraphRunner,
    options: EngineOptions = {},
  ) {
    this.geometry = options.cachedGraph && spec.cached !== null ? spec.cached : null;
    const Store = runner.deviceCache ? DeviceKvStore : HostKvStore;
    this.store = this.geometry === null ? null : new Store(this.geometry, spec.padTokenId, runner);
    this.defaultCache = this.geometry === null ? 'none' : (options.defaultCache ?? 'none');
    // A block diffusion model's only cache is its exact block cache, which requests name `prefix`.
    if (spec.blockSize !== null && this.defaultCache === 'dual') this.defaultCache = 'prefix';
    this.maxCacheBytes = options.maxCacheBytes ?? DEFAULT_MAX_CACHE_BYTES;
    this.scheduler = new Scheduler<Choice>(options.maxBatchSize ?? 16, this.maxCacheBytes);
    this.maxPaddedRatio = options.maxPaddedRatio ?? 1.5;
    this.precision = options.precision ?? 'fp32';
  }

  async *generate(request: GenerateRequest): AsyncIterable<EngineEvent> {
    validateRequest(this.spec, request);
    if (request.params.cache !== undefined && request.params.cache !== 'none' && this.geometry === null) {
      throw new EngineError('invalid_request', `cache "${request.params.cache}" needs the model's cached graph, which this engine does not run`, 'cache');
    }
    if (this.requests.has(request.id)) throw new EngineError('invalid_request', `request id ${request.id} is already running`, 'id');
    const active = new ActiveRequest(request);
    const prefix = promptPrefix(request, this.spec.bosTokenId);
    const seed = request.params.seed ?? randomSeed();
    for (let index = 0; index < request.n; index++) {
      const sequence = new Sequence({
        prefix,
        suffix: request.suffixTokenIds,
        params: request.params,
        maskTokenId: this.spec.maskTokenId,
        eosTokenIds: this.spec.eosTokenIds,
        seed: (seed + index) % (MAX_SEED + 1),
        defaultCache: this.defaultCache,
        blockSize: this.spec.blockSize,
        logitsShift: this.spec.logitsShift,
      });
      const cost = this.store?.reservation(sequence) ?? 0;
      if (cost > this.maxCacheBytes) {
        // A choice that could never be admitted (choices are admitted one by one): refuse now (429), not wait for ever.
        throw new EngineError(
          'overloaded',
          `the key/value cache of one choice of this request (${cost} bytes, cache ${sequence.cacheMode}) exceeds the engine's cache memory (${this.maxCacheBytes} bytes); use a shorter request or cache "none"`,
        );
      }
      active.choices.push(new Choice(active, index, sequence, new CompletionText(this.tokenizer, request.params.stop), cost));
    }
    this.requests.set(request.id, active);
    for (const choice of active.choices) this.scheduler.add(choice);
    this.kick();
    let completed = false;
    try {
      for await (const event of active.channel) yield event;
      completed = true;
    } finally {
      if (!completed) this.abort(request.id);
    }
  }

  abort(id: string): void {
    const active = this.requests.get(id);
    if (active === undefined) return;
    active.cancelled = true;
    this.requests.delete(id);
    active.channel.fail(new EngineError('cancelled', `request ${id} was cancelled`));
    this.kick();
  }

  async health(): Promise<EngineHealth> {
    return {
      ok: this.runner.ok,
      model: this.spec.name,
      provider: this.runner.provider,
      precision: this.precision,
      activeSequences: this.scheduler.activeCount,
      waitingSequences: this.scheduler.waitingCount,
      ...this.requestCounts(),
      maxBatchSize: this.scheduler.maxRows,
      ...(this.geometry === null
        ? {}
        : {
            kvCache: {
              defaultMode: this.defaultCache,
              bytes: this.store?.bytes ?? 0,
              reservedBytes: this.scheduler.activeCost,
              maxBytes: this.maxCacheBytes,
              hits: this.stats.cacheHits,
              refreshes: this.stats.cacheRefreshes,
            },
          }),
      ...(this.runner.provider === 'cpu'
        ? {}
        : {
            device: {
              tensors: this.runner.deviceTensors ?? 0,
              hostToDevice: { ...this.transfers.hostToDevice },
              deviceToHost: { ...this.transfers.deviceToHost },
            },
          }),
    };
  }

  /** Requests held, by whether one of their sequences is in the running batch. */
  private requestCounts(): { runningRequests: number; waitingRequests: number } {
    let runningRequests = 0;
    for (const active of this.requests.values()) if (active.choices.some((c) => this.scheduler.isActive(c))) runningRequests++;
    return { runningRequests, waitingRequests: this.requests.size - runningRequests };
  }

  /** Cache bytes held now (for tests and the benchmark). */
  get cacheBytes(): number {
    return this.store?.bytes ?? 0;
  }

  async close(): Promise<void> {
    for (const id of [...this.requests.keys()]) this.abort(id);
    // Terminating the worker thread while it is inside session.run can abort the process (seen once in the tests):
    // the aborted sequences leave at the step boundary, so the loop ends after the graph run in flight.
    await this.loopDone;
    await this.runner.close();
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.loopDone = this.loop();
  }

  /** Runs steps while any sequence is active or waiting; cancelled and finished ones leave at step boundaries. */
  private async loop(): Promise<void> {
    for (;;) {
      const { active, retired } = this.scheduler.schedule();
      for (const choice of retired) this.store?.free(choice.sequence);
      if (active.length === 0) {
        this.runner.release();
        this.running = false;
        return;
      }
      try {
        await this.step(active);
      } catch (err) {
        // A bug in batching or postprocessing: fail what was in the step, keep serving the rest.
        for (const choice of active) this.fail(choice.owner, err);
      }
    }
  }

  /** One engine step: schedule decided which choices run; plan their graph runs, run them, postprocess each choice. */
  private async step(active: Choice[]): Promise<void> {
    const t0 = performance.now();
    for (const run of this.plan(active)) await this.runGraph(active, run);
    this.stats.steps++;
    this.stats.stepMs += performance.now() - t0;
  }

  /**
   * The step's graph runs: full passes (the whole canvas; at block starts they refill caches) and cached steps, as
   * separate runs, each grouped by length; the cache store groups the cached ones (on the device, by block).
   */
  private plan(active: Choice[]): PlannedRun[] {
    const entries = active.map((choice) => ({ sequence: choice.sequence, positions: choice.sequence.wantedPositions() }));
    const full: number[] = [];
    const cached: number[] = [];
    active.forEach((choice, i) => {
      const kind = this.store === null ? 'full' : passKind(choice.sequence, this.store.holds(choice.sequence));
      (kind === 'full' ? full : cached).push(i);
    });
    const runs: PlannedRun[] = [];
    const rowCounts = full.map((i) => entries[i].sequence.rowCount);
    for (const group of groupByLength(full.map((i) => entries[i].sequence.canvas.length), rowCounts, this.maxPaddedRatio)) {
      const indices = group.map((g) => full[g]);
      const refresh = this.store !== null && indices.some((i) => entries[i].sequence.cacheMode !== 'none');
      runs.push({
        indices,
        entries,
        refresh,
        fromCache: false,
        build: () => {
          const batch = buildBatch(indices.map((i) => entries[i]), this.spec.padTokenId);
          return this.store === null ? batch : this.store.fullPass(batch, refresh);
        },
      });
    }
    if (cached.length > 0) {
      for (const run of this.store!.cachedRuns(cached.map((i) => entries[i]), this.maxPaddedRatio)) {
        runs.push({ indices: run.indices.map((g) => cached[g]), entries, refresh: false, fromCache: true, build: run.build });
      }
    }
    return runs;
  }

  /** Runs one planned graph run and postprocesses its choices; a failure fails only the run's requests. */
  private async runGraph(active: Choice[], { indices, entries, build, refresh, fromCache }: PlannedRun): Promise<void> {
    let batch: Batch;
    try {
      batch = build();
    } catch (err) {
      for (const i of indices) this.fail(active[i].owner, err);
      return;
    }
    const tRun = performance.now();
    let run: GraphRun;
    try {
      run = await this.runner.run(batch.feeds);
      this.stats.graphMs += run.runMs;
      this.countTransfers(run);
    } catch (err) {
      for (const i of indices) this.fail(active[i].owner, err);
      return;
    } finally {
      this.stats.graphWaitMs += performance.now() - tRun;
      this.stats.graphRuns++;
    }
    try {
      indices.forEach((i, j) => {
        const choice = active[i];
        if (choice.done) return;
        try {
          const { sequence } = choice;
          // The cache first: the step may end the block, and a refresh keeps positions of the block as it was.
          if (fromCache) {
            this.stats.cacheHits++;
            this.store!.append(sequence, run, batch.feeds, batch.rowOf[j]);
          } else if (refresh && sequence.cacheMode !== 'none') {
            this.store!.refresh(sequence, run, batch.feeds, batch.rowOf[j]);
            this.stats.cacheRefreshes++;
          }
          const block = sequence.block;
          const commits = sequence.applyStep(run.head, batch.rowOf[j], entries[i].positions);
          this.stats.tokens += commits.length;
          this.postprocess(choice, block, commits);
        } catch (err) {
          this.fail(choice.owner, err);
        }
      });
    } finally {
      this.store?.settle(batch.feeds);
    }
  }

  private countTransfers({ transfers }: GraphRun): void {
    if (transfers === undefined) return;
    addBytes(this.transfers.hostToDevice, transfers.hostToDevice);
    addBytes(this.transfers.deviceToHost, transfers.deviceToHost);
  }

  /** Emits the step event of a choice, and its finish (and the request's done) when it ended. */
  private postprocess(choice: Choice, block: number, commits: Commit[]): void {
    const { sequence, text, owner } = choice;
    const update = sequence.end !== null ? text.finalize(sequence.generated().slice(0, sequence.end.length)) : text.update(sequence.stablePrefix());
    choice.stoppedText = update.stoppedText;
    const event: StepEvent = {
      type: 'step',
      index: choice.index,
      step: sequence.steps - 1,
      block,
      committed: commits.map((c) => ({ ...c, text: this.tokenizer.decode([c.tokenId]) })),
      stableText: update.delta,
    };
    if (owner.request.includeCanvas) {
      const generated = sequence.generated();
      event.canvas = generated.map((t) => (t === this.spec.maskTokenId ? null : t));
      event.draft = text.draft(generated, this.spec.maskTokenId);
      event.provisional = [...sequence.provisional].map(([position, tokenId]) => ({ position, tokenId, text: this.tokenizer.decode([tokenId]) }));
      event.blockStarts = sequence.spanBlockStarts();
    }
    owner.channel.push(event);
    if (sequence.end !== null || choice.stoppedText !== null) this.finish(choice);
  }

  private finish(choice: Choice): void {
    const { sequence, text, owner } = choice;
    choice.finished = true;
    this.store?.free(choice.sequence);
    const tokens = sequence.end !== null ? sequence.generated().slice(0, sequence.end.length) : sequence.stablePrefix();
    const finalText = choice.stoppedText ?? this.tokenizer.decode(tokens);
    const kept = tokens.slice(0, text.keptCount(tokens, finalText));
    const event: FinishEvent = {
      type: 'finish',
      index: choice.index,
      finishReason: choice.stoppedText !== null ? 'stop' : sequence.end!.reason,
      text: finalText,
      tokenIds: kept,
      steps: sequence.steps,
    };
    if (sequence.params.logprobs !== null) event.logprobs = text.logprobs(kept, text.offsets(kept), sequence.logprobs);
    owner.channel.push(event);
    owner.completionTokens += kept.length;
    owner.finishedChoices++;
    if (owner.finishedChoices === owner.choices.length) {
      const { request } = owner;
      const promptTokens = promptPrefix(request, this.spec.bosTokenId).length + request.suffixTokenIds.length;
      owner.channel.push({
        type: 'done',
        usage: { promptTokens, completionTokens: owner.completionTokens, totalTokens: promptTokens + owner.completionTokens },
      });
      owner.channel.close();
      this.requests.delete(request.id);
    }
  }

  private fail(owner: ActiveRequest, err: unknown): void {
    if (owner.failed || owner.cancelled) return;
    owner.failed = true;
    this.requests.delete(owner.request.id);
    const message = err instanceof Error ? err.message : String(err);
    owner.channel.fail(err instanceof EngineError ? err : new EngineError('internal', `generation failed: ${message}`));
  }
}

export type PrecisionChoice = 'auto' | 'fp32' | 'fp16';
/** auto: dual where the cache stays in the memory that computes (CPU; WebGPU with the device graph), none on CUDA
 * (docs/deploy.md: there the cache would cross PCIe every step with onnxruntime-node 1.30). */
export type CacheChoice = 'auto' | CacheMode;

export interface OpenEngineOptions extends Omit<EngineOptions, 'precision' | 'cachedGraph' | 'defaultCache'> {
  modelDir: string;
  provider?: ProviderChoice;
  deviceId?: number;
  threads?: number;
  /** auto: the fp16 graphs on CUDA and WebGPU when the folder has them, else fp32 (also for provider auto, which may
   * fall back to CPU). */
  precision?: PrecisionChoice;
  /** Default cache mode of requests; needs a format-2 folder (else none). */
  cache?: CacheChoice;
  warn?: (line: string) => void;
}

export function resolvePrecision(choice: PrecisionChoice, provider: ProviderChoice, hasFp16: boolean): 'fp32' | 'fp16' {
  if (choice !== 'auto') return choice;
  return (provider === 'cuda' || provider === 'webgpu') && hasFp16 ? 'fp16' : 'fp32';
}

/** The default cache mode: none without a cached graph; auto is dual on CPU and with device caches, else none. */
export function resolveCache(choice: CacheChoice, provider: string, hasCachedGraph: boolean, deviceCache = false): CacheMode {
  if (!hasCachedGraph) return 'none';
  if (choice !== 'auto') return choice;
  return provider === 'cpu' || deviceCache ? 'dual' : 'none';
}

/**
 * Loads a model folder and opens its graph in a worker thread: the cached graph of a format-2 folder (it runs every
 * cache mode, `none` included, so the weights are in memory once), model.onnx otherwise; on WebGPU the device graph
 * when the folder has one (its caches stay on the GPU).
 */
export async function openEngine(options: OpenEngineOptions): Promise<{ engine: DiffusionEngine; model: ModelFolder; modelPath: string }> {
  const model = await loadModelFolder(options.modelDir);
  const precision = resolvePrecision(options.precision ?? 'auto', options.provider ?? 'cpu', model.spec.onnx.fp16 !== null);
  const cachedPath = model.cachedPath(precision);
  const modelPath = cachedPath ?? model.onnxPath(precision);
  const devicePath = cachedPath === null ? null : model.devicePath(precision);
  const runner = await OnnxGraphRunner.open({
    modelPath,
    devicePath,
    provider: options.provider ?? 'cpu',
    deviceId: options.deviceId,
    threads: options.threads,
    warn: options.warn,
  });
  const defaultCache = resolveCache(options.cache ?? 'auto', runner.provider, cachedPath !== null, runner.deviceCache);
  const engine = new DiffusionEngine(model.spec, model.tokenizer, runner, { ...options, precision, cachedGraph: cachedPath !== null, defaultCache });
  return { engine, model, modelPath: runner.deviceCache ? devicePath! : modelPath };
}
