// The main-thread side of the ONNX Runtime session: starts onnx_worker in a worker thread, sends it feeds, gets
// head outputs back. Execution provider: cpu | cuda (device id) | webgpu | auto (CUDA, else WebGPU on a hardware
// adapter, else CPU, one warning).

import type { Worker } from 'node:worker_threads';
import { startWorkerModule } from './worker_module.js';
import os from 'node:os';
import type { CachedFeeds, GraphFeeds } from './batch.js';
import type { GraphRun, GraphRunner, Transfers } from './graph_runner.js';
import type { HeadOutputs } from './head.js';

export type Provider = 'cpu' | 'cuda' | 'webgpu';
export type ProviderChoice = Provider | 'auto';

export interface OnnxSessionOptions {
  /** The graph run on CPU and CUDA (the cached graph of a format-2 folder, else model.onnx). */
  modelPath: string;
  /** The folder's device graph, run instead on WebGPU (null: the folder has none; WebGPU then runs modelPath). */
  devicePath?: string | null;
  provider: ProviderChoice;
  /** CUDA device id. */
  deviceId?: number;
  /** ONNX Runtime intra-op threads; default: the machine's cores. */
  threads?: number;
  /** Where the CPU fallback warning of `auto` goes (one line). */
  warn?: (line: string) => void;
}

export interface WorkerInit {
  modelPath: string;
  devicePath: string | null;
  provider: ProviderChoice;
  deviceId: number;
  intraOpNumThreads: number;
}

/**
 * Feeds as they cross to the worker: past_kv built, or null when the worker holds the past of that pastKey from an
 * earlier run (the steps of a block share one past: it crosses the thread boundary once per block, not every step).
 */
export interface WireFeeds extends Omit<GraphFeeds, 'cached'> {
  cached?: Omit<CachedFeeds, 'buildPast'> & { past: Float32Array | null };
}

export type WorkerRequest = { type: 'run'; id: number; feeds: WireFeeds } | { type: 'release' } | { type: 'free'; blocks: number[] };

export type WorkerReply =
  | { type: 'ready'; provider: Provider; device: boolean; warning: string | null }
  | { type: 'fatal'; message: string }
  | { type: 'result'; id: number; head: HeadOutputs; runMs: number; transfers: Transfers; deviceTensors: number }
  | { type: 'failed'; id: number; message: string; deviceTensors: number }
  | { type: 'freed'; deviceTensors: number };

export class OnnxSessionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OnnxSessionError';
  }
}

export class OnnxGraphRunner implements GraphRunner {
  private nextId = 0;
  private dead: Error | null = null;
  /** pastKey of the past_kv the worker holds ('' = none). */
  private heldPastKey = '';
  private readonly pending = new Map<number, { resolve: (run: GraphRun) => void; reject: (err: Error) => void }>();
  /** Device tensors (kept cache blocks) the worker holds, as of its last reply. */
  deviceTensors = 0;

  private constructor(
    private readonly worker: Worker,
    readonly provider: string,
    /** The worker runs the device graph: caches are blocks it keeps on the device. */
    readonly deviceCache: boolean,
  ) {
    worker.on('message', (reply: WorkerReply) => {
      if (reply.type === 'freed') this.deviceTensors = reply.deviceTensors;
      if (reply.type !== 'result' && reply.type !== 'failed') return;
      this.deviceTensors = reply.deviceTensors;
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (reply.type === 'result') waiter?.resolve({ head: reply.head, runMs: reply.runMs, transfers: reply.transfers });
      else {
        this.heldPastKey = ''; // the next cached run sends its past whatever the worker kept
        waiter?.reject(new OnnxSessionError(`session.run failed: ${reply.message}`));
      }
    });
    worker.on('error', (err) => this.die(err));
    worker.on('exit', (code) => this.die(new OnnxSessionError(`ONNX worker exited (code ${code})`)));
  }

  get ok(): boolean {
    return this.dead === null;
  }

  /** Starts the worker and opens the session; rejects with a clear message when the model or provider cannot load. */
  static async open(options: OnnxSessionOptions): Promise<OnnxGraphRunner> {
    const init: WorkerInit = {
      modelPath: options.modelPath,
      devicePath: options.devicePath ?? null,
      provider: options.provider,
      deviceId: options.deviceId ?? 0,
      intraOpNumThreads: options.threads ?? Math.max(1, os.availableParallelism()),
    };
    const worker = startWorkerModule(import.meta.url, 'onnx_worker', init);
    const ready = await new Promise<WorkerReply>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new OnnxSessionError(`ONNX worker exited during start-up (code ${code})`)));
    }).catch((err: Error) => ({ type: 'fatal' as const, message: err.message }));
    if (ready.type !== 'ready') {
      await worker.terminate();
      const message = ready.type === 'fatal' ? ready.message : 'unexpected worker reply';
      const what = {
        cuda: `the CUDA execution provider (device ${init.deviceId})`,
        webgpu: 'the WebGPU execution provider',
        cpu: 'the CPU execution provider',
        auto: 'any execution provider',
      }[options.provider];
      const graph = options.provider === 'webgpu' && init.devicePath !== null ? init.devicePath : options.modelPath;
      throw new OnnxSessionError(`cannot open ${graph} with ${what}: ${message}`);
    }
    if (ready.warning !== null) (options.warn ?? ((line) => process.emitWarning(line)))(ready.warning);
    worker.removeAllListeners('error').removeAllListeners('exit');
    return new OnnxGraphRunner(worker, ready.provider, ready.device);
  }

  run(feeds: GraphFeeds): Promise<GraphRun> {
    if (this.dead !== null) return Promise.reject(this.dead);
    const id = this.nextId++;
    const wire = this.wireFeeds(feeds);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // A new past (megabytes) moves to the worker instead of being copied; the worker keeps it for the next steps.
      const past = wire.cached?.past;
      this.worker.postMessage({ type: 'run', id, feeds: wire } satisfies WorkerRequest, past ? [past.buffer as ArrayBuffer] : []);
    });
  }

  freeBlocks(ids: readonly number[]): void {
    if (this.dead !== null || ids.length === 0) return;
    this.worker.postMessage({ type: 'free', blocks: [...ids] } satisfies WorkerRequest);
  }

  release(): void {
    if (this.dead !== null || this.heldPastKey === '') return;
    this.heldPastKey = '';
    this.worker.postMessage({ type: 'release' } satisfies WorkerRequest);
  }

  /** The feeds to send: the past is built only when the worker does not hold the one these feeds name. */
  private wireFeeds(feeds: GraphFeeds): WireFeeds {
    if (feeds.cached === undefined) return feeds as WireFeeds;
    const { buildPast, ...cached } = feeds.cached;
    if (cached.pastLength === 0) return { ...feeds, cached: { ...cached, past: buildPast() } };
    const held = cached.pastKey === this.heldPastKey;
    this.heldPastKey = cached.pastKey;
    return { ...feeds, cached: { ...cached, past: held ? null : buildPast() } };
  }

  private die(err: Error): void {
    this.dead ??= err;
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    this.die(new OnnxSessionError('ONNX session closed'));
    await this.worker.terminate();
  }
}
