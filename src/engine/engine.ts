// The engine: owns the step loop (nano-vllm's shape: schedule -> run the graph -> postprocess) and implements the
// EngineClient interface of types.ts for the serving layer.

import { buildBatch, groupByLength } from './batch.js';
import { CompletionText } from './completion_text.js';
import { EventChannel } from './event_channel.js';
import type { GraphRunner } from './graph_runner.js';
import { loadModelFolder, type ModelFolder, type ModelSpec, type TextTokenizer } from './model_folder.js';
import { OnnxGraphRunner, type ProviderChoice } from './onnx_session.js';
import { MAX_SEED, randomSeed } from './rng.js';
import { Scheduler, type Schedulable } from './scheduler.js';
import { Sequence, type Commit } from './sequence.js';
import {
  EngineError,
  type EngineClient,
  type EngineEvent,
  type EngineHealth,
  type FinishEvent,
  type GenerateRequest,
  type StepEvent,
} from './types.js';
import { validateRequest } from './validation.js';

export interface EngineOptions {
  /** The graph's precision, reported by health(). */
  precision?: 'fp32' | 'fp16';
  /** Most graph rows per step (a guided sequence takes two). */
  maxBatchSize?: number;
  /** Rows of very different lengths run as separate graph runs when one run would pad more than this ratio. */
  maxPaddedRatio?: number;
}

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
  ) {}

  get rowCount(): number {
    return this.sequence.rowCount;
  }

  get done(): boolean {
    return this.finished || this.owner.cancelled || this.owner.failed;
  }
}

export class DiffusionEngine implements EngineClient {
  private readonly scheduler: Scheduler<Choice>;
  private readonly requests = new Map<string, ActiveRequest>();
  private readonly maxPaddedRatio: number;
  private readonly precision: 'fp32' | 'fp16';
  private running = false;
  /** The step loop in progress (resolved when idle): close() waits for it before it closes the session. */
  private loopDone: Promise<void> = Promise.resolve();
  readonly stats: EngineStats = { steps: 0, graphRuns: 0, tokens: 0, stepMs: 0, graphMs: 0, graphWaitMs: 0 };

  constructor(
    readonly spec: ModelSpec,
    readonly tokenizer: TextTokenizer,
    private readonly runner: GraphRunner,
    options: EngineOptions = {},
  ) {
    this.scheduler = new Scheduler<Choice>(options.maxBatchSize ?? 16);
    this.maxPaddedRatio = options.maxPaddedRatio ?? 1.5;
    this.precision = options.precision ?? 'fp32';
  }

  async *generate(request: GenerateRequest): AsyncIterable<EngineEvent> {
    validateRequest(this.spec, request);
    if (this.requests.has(request.id)) throw new EngineError('invalid_request', `request id ${request.id} is already running`, 'id');
    const active = new ActiveRequest(request);
    const prefix = this.spec.bosTokenId === null ? request.promptTokenIds : [this.spec.bosTokenId, ...request.promptTokenIds];
    const seed = request.params.seed ?? randomSeed();
    for (let index = 0; index < request.n; index++) {
      const sequence = new Sequence({
        prefix,
        suffix: request.suffixTokenIds,
        params: request.params,
        maskTokenId: this.spec.maskTokenId,
        eosTokenIds: this.spec.eosTokenIds,
        seed: (seed + index) % (MAX_SEED + 1),
      });
      active.choices.push(new Choice(active, index, sequence, new CompletionText(this.tokenizer, request.params.stop)));
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
      maxBatchSize: this.scheduler.maxRows,
    };
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
      const { active } = this.scheduler.schedule();
      if (active.length === 0) {
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

  private async step(active: Choice[]): Promise<void> {
    const t0 = performance.now();
    const entries = active.map((choice) => ({ sequence: choice.sequence, positions: choice.sequence.wantedPositions() }));
    const groups = groupByLength(
      entries.map((e) => e.sequence.canvas.length),
      entries.map((e) => e.sequence.rowCount),
      this.maxPaddedRatio,
    );
    for (const group of groups) {
      const { feeds, rowOf } = buildBatch(group.map((i) => entries[i]), this.spec.padTokenId);
      const tRun = performance.now();
      let head;
      try {
        const run = await this.runner.run(feeds);
        head = run.head;
        this.stats.graphMs += run.runMs;
      } catch (err) {
        for (const i of group) this.fail(active[i].owner, err);
        continue;
      } finally {
        this.stats.graphWaitMs += performance.now() - tRun;
        this.stats.graphRuns++;
      }
      group.forEach((i, j) => {
        const choice = active[i];
        if (choice.done) return;
        try {
          const block = choice.sequence.block;
          const commits = choice.sequence.applyStep(head, rowOf[j], entries[i].positions);
          this.stats.tokens += commits.length;
          this.postprocess(choice, block, commits);
        } catch (err) {
          this.fail(choice.owner, err);
        }
      });
    }
    this.stats.steps++;
    this.stats.stepMs += performance.now() - t0;
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
    }
    owner.channel.push(event);
    if (sequence.end !== null || choice.stoppedText !== null) this.finish(choice);
  }

  private finish(choice: Choice): void {
    const { sequence, text, owner } = choice;
    choice.finished = true;
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
      const promptTokens = request.promptTokenIds.length + request.suffixTokenIds.length + (this.spec.bosTokenId === null ? 0 : 1);
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

export interface OpenEngineOptions extends Omit<EngineOptions, 'precision'> {
  modelDir: string;
  provider?: ProviderChoice;
  deviceId?: number;
  threads?: number;
  /** auto: the fp16 graph on CUDA when the folder has one, else fp32 (also for provider auto, which may fall back to CPU). */
  precision?: PrecisionChoice;
  warn?: (line: string) => void;
}

export function resolvePrecision(choice: PrecisionChoice, provider: ProviderChoice, hasFp16: boolean): 'fp32' | 'fp16' {
  if (choice !== 'auto') return choice;
  return provider === 'cuda' && hasFp16 ? 'fp16' : 'fp32';
}

/** Loads a model folder and opens its graph in a worker thread. */
export async function openEngine(options: OpenEngineOptions): Promise<{ engine: DiffusionEngine; model: ModelFolder; modelPath: string }> {
  const model = await loadModelFolder(options.modelDir);
  const precision = resolvePrecision(options.precision ?? 'auto', options.provider ?? 'cpu', model.spec.onnx.fp16 !== null);
  const modelPath = model.onnxPath(precision);
  const runner = await OnnxGraphRunner.open({
    modelPath,
    provider: options.provider ?? 'cpu',
    deviceId: options.deviceId,
    threads: options.threads,
    warn: options.warn,
  });
  return { engine: new DiffusionEngine(model.spec, model.tokenizer, runner, { ...options, precision }), model, modelPath };
}
