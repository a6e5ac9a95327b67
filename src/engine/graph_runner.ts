// What the engine needs from a model run: feeds in, head outputs out. The ONNX implementation is OnnxGraphRunner
// (onnx_session.ts); tests substitute synthetic heads.

import type { GraphFeeds } from './batch.js';
import type { HeadOutputs } from './head.js';

export interface GraphRun {
  head: HeadOutputs;
  /** Milliseconds inside session.run (the rest of a step is JavaScript and thread hand-off). */
  runMs: number;
}

export interface GraphRunner {
  /** Execution provider in use: 'cpu' or 'cuda'. */
  readonly provider: string;
  /** False once the runner can no longer run the graph (its worker died). */
  readonly ok: boolean;
  run(feeds: GraphFeeds): Promise<GraphRun>;
  /** Drops what the runner keeps between runs for reuse (a cached step's past_kv); the engine calls it when idle. */
  release(): void;
  close(): Promise<void>;
}
