// One graph run's inputs from many sequences (docs/design.md §3): left-padded canvases with their attention mask, the
// wanted positions per row, and guidance pairs (a conditional row and its unconditional partner in the same batch).

import type { Sequence } from './sequence.js';

/** The key/value geometry of a cached graph: past_kv / present_kv are [layers, 2, N, kvHeads, length, headDim]. */
export interface KvGeometry {
  layers: number;
  kvHeads: number;
  headDim: number;
}

/** The extra inputs of a cached graph (format 2, docs/models.md); `length` is then the query length Q. */
export interface CachedFeeds {
  geometry: KvGeometry;
  /** [rows, Q]: absolute position of each query token (RoPE); 0 on padding. */
  positionIds: BigInt64Array;
  pastLength: number;
  /**
   * Names the past keys/values: feeds with equal keys have equal past_kv. Within a block the past does not change from
   * step to step, so a runner that still holds the past of this key neither builds nor sends it again ('' = no past).
   */
  pastKey: string;
  /** Builds past_kv [layers, 2, rows, kvHeads, pastLength, headDim], left-padded per row (megabytes: only on demand). */
  buildPast: () => Float32Array;
  /** Ask for present_kv (the query tokens' keys/values), to fill caches. */
  wantPresent: boolean;
}

/**
 * The extra inputs of the device graph (docs/models.md), whose caches stay on the device as blocks: present_kv
 * tensors the runner keeps under an id. Query row i reads row pastRows[i] of block pastBlock (none: no past).
 */
export interface DeviceFeeds {
  geometry: KvGeometry;
  /** [rows, Q]: absolute position of each query token (RoPE); 0 on padding. */
  positionIds: BigInt64Array;
  pastBlock: number | null;
  /** [rows]: the block row each query row reads. */
  pastRows: BigInt64Array;
  /** Slots of the block (0 without one). */
  pastLength: number;
  /** Keep this run's present_kv (the block's rows, then the queries) as a new block of this id; null: discard it. */
  keepAs: number | null;
}

export interface GraphFeeds {
  rows: number;
  /** L: tokens per row (the query length Q for a cached graph). */
  length: number;
  /** P: wanted positions per row (rows with fewer repeat their last one). */
  positionsPerRow: number;
  inputIds: BigInt64Array;
  /** [rows, L]; for a cached graph [rows, pastLength + Q]: the cached positions first, then the queries. */
  attentionMask: BigInt64Array;
  positions: BigInt64Array;
  cfgScale: Float32Array;
  uncondRow: BigInt64Array;
  /** Present when the runner's graph is a cached graph. */
  cached?: CachedFeeds;
  /** Present when the runner's graph is the device graph (attentionMask is then [rows, pastLength + Q]). */
  device?: DeviceFeeds;
}

export interface BatchEntry {
  sequence: Sequence;
  /** Canvas indices to score: sequence.wantedPositions(). */
  positions: number[];
}

export interface Batch {
  feeds: GraphFeeds;
  /** Per entry, the row whose head outputs drive its sampler (the conditional row). */
  rowOf: number[];
}

interface Row {
  canvas: readonly number[];
  /** Canvas indices whose graph outputs are read (Sequence.readFrom of the wanted positions). */
  positions: readonly number[];
  cfgScale: number;
  partner: number;
}

/** Lays entries out as rows: [cond, uncond] for guided sequences, [cond] otherwise. */
export function buildBatch(entries: readonly BatchEntry[], padTokenId: number): Batch {
  const rows: Row[] = [];
  const rowOf: number[] = [];
  for (const entry of entries) {
    const { sequence } = entry;
    const positions = entry.positions.map((p) => sequence.readFrom(p));
    const cond = rows.length;
    rowOf.push(cond);
    if (sequence.params.cfgScale > 0) {
      rows.push({ canvas: sequence.canvas, positions, cfgScale: sequence.params.cfgScale, partner: cond + 1 });
      rows.push({ canvas: sequence.unconditionalCanvas(), positions, cfgScale: 0, partner: cond + 1 });
    } else {
      rows.push({ canvas: sequence.canvas, positions, cfgScale: 0, partner: cond });
    }
  }
  const length = Math.max(...rows.map((r) => r.canvas.length));
  const p = Math.max(1, ...rows.map((r) => r.positions.length));
  const n = rows.length;
  const feeds: GraphFeeds = {
    rows: n,
    length,
    positionsPerRow: p,
    inputIds: new BigInt64Array(n * length).fill(BigInt(padTokenId)),
    attentionMask: new BigInt64Array(n * length),
    positions: new BigInt64Array(n * p),
    cfgScale: new Float32Array(n),
    uncondRow: new BigInt64Array(n),
  };
  rows.forEach((row, r) => {
    const pad = length - row.canvas.length;
    for (let i = 0; i < row.canvas.length; i++) {
      feeds.inputIds[r * length + pad + i] = BigInt(row.canvas[i]);
      feeds.attentionMask[r * length + pad + i] = 1n;
    }
    for (let j = 0; j < p; j++) {
      const position = row.positions[Math.min(j, row.positions.length - 1)] ?? 0;
      feeds.positions[r * p + j] = BigInt(pad + position);
    }
    feeds.cfgScale[r] = row.cfgScale;
    feeds.uncondRow[r] = BigInt(row.partner);
  });
  return { feeds, rowOf };
}

/**
 * Splits items (with their canvas lengths and row counts) into graph runs so that padding stays bounded: sorted by
 * length, an item joins the current run while padded tokens stay within `maxPaddedRatio` × real tokens.
 * Returns groups of item indices.
 */
export function groupByLength(lengths: readonly number[], rowCounts: readonly number[], maxPaddedRatio = 1.5): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[a] - lengths[b] || a - b);
  const groups: number[][] = [];
  let current: number[] = [];
  let real = 0;
  let rows = 0;
  for (const i of order) {
    const nextReal = real + lengths[i] * rowCounts[i];
    const nextRows = rows + rowCounts[i];
    if (current.length > 0 && lengths[i] * nextRows > maxPaddedRatio * nextReal) {
      groups.push(current);
      current = [];
      real = 0;
      rows = 0;
    }
    current.push(i);
    real += lengths[i] * rowCounts[i];
    rows += rowCounts[i];
  }
  if (current.length > 0) groups.push(current);
  return groups;
}
