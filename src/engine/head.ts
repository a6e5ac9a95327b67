// What one run of the graph returns (docs/design.md §3), reshaped for the sampler: the sampling head's outputs for
// N rows × P wanted positions × the K best tokens. Full logits never leave the graph.

export interface HeadOutputs {
  rows: number;
  positions: number;
  k: number;
  /** [rows, positions, k], descending along k. */
  topkLogits: Float32Array;
  /** [rows, positions, k] token ids of topkLogits. */
  topkIds: Int32Array;
  /** [rows, positions]: log of the full-vocabulary softmax normaliser (float64 graphs give it exactly; float32
   * graphs of older folders are widened). */
  logsumexp: Float64Array;
  /** [rows, positions]: entropy of the full-vocabulary softmax. */
  entropy: Float64Array;
  /** Cached graphs, when asked for (feeds.cached.wantPresent): the query tokens' keys/values, present_kv
   * [layers, 2, rows, kvHeads, Q, headDim]. */
  present?: { data: Float32Array; dims: number[] };
}

/** The head's outputs at one (row, position): logits/ids start at `offset` (k entries), scalars at `index`. */
export interface HeadSlot {
  outputs: HeadOutputs;
  /** row * positions + position. */
  index: number;
  /** index * k. */
  offset: number;
}

export function headSlot(outputs: HeadOutputs, row: number, position: number): HeadSlot {
  const index = row * outputs.positions + position;
  return { outputs, index, offset: index * outputs.k };
}
