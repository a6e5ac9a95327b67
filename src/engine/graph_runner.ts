// What the engine needs from a model run: feeds in, head outputs out. The ONNX implementation is OnnxGraphRunner
// (onnx_session.ts); tests substitute synthetic heads.

import type { GraphFeeds } from './batch.js';
import type { HeadOutputs } from './head.js';

/** Bytes one run moved between host and device memory, by tensor name (empty on the CPU provider). */
export interface Transfers {
  hostToDevice: Record<string, number>;
  deviceToHost: Record<string, number>;
}

export interface GraphRun {
  head: HeadOutputs;
  /** Milliseconds inside session.run (the rest of a step is JavaScript and thread hand-off). */
  runMs: number;
  transfers?: Transfers;
}

export interface GraphRunner {
  /** Execution provider in use: 'cpu', 'cuda' or 'webgpu'. */
  readonly provider: string;
  /** The device graph runs: caches are blocks kept by the runner on the device (feeds.device), not host arrays. */
  readonly deviceCache?: boolean;
  /** Device tensors the runner holds (kept blocks), as last reported. */
  readonly deviceTensors?: number;
  /** Disposes of kept device blocks. */
  freeBlocks?(ids: readonly number[]): void;
  /** False once the runner can no longer run the graph (its worker died). */
  readonly ok: boolean;
  run(feeds: GraphFeeds): Promise<GraphRun>;
  /** Drops what the runner keeps between runs for reuse (a cached step's past_kv); the engine calls it when idle. */
  release(): void;
  close(): Promise<void>;
}
