// Key/value caches for the cached graph of format-2 model folders (docs/models.md): which pass a step runs, the
// graph inputs of a cached step (left-padded, like batch.ts), and the per-row caches cut out of a full pass.
//
// The modes are Fast-dLLM's (Wu et al. 2025, "Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV
// Cache and Parallel Decoding"; NVlabs/Fast-dLLM llada/generate.py, generate_with_prefix_cache and
// generate_with_dual_cache): at every block start a full pass over the whole canvas commits the step's tokens and
// fills the cache; the block's later steps run only
//   prefix: the block and everything after it (later blocks, suffix), over the cached keys/values before the block;
//   dual:   the block alone, over the cached keys/values of every other position (before and after the block).
// In dual mode the cache still holds the block's own positions from the block start: they are masked out and the
// block's fresh keys/values come from the query, which is Fast-dLLM's replace_position update (attention does not
// depend on the order of its keys, and cached keys are rotated by their own absolute positions).
//
// A block diffusion model (BD3-LM, Arriola et al. 2025) needs no approximation: under its block-causal attention a
// finished block never changes and never sees what follows, so its cache is exact and only grows. One full pass
// (the prefill) fills it with the blocks before the current one; every later step queries what is not cached yet up
// to the block's end over the whole cache. Right after a block completes, that query also holds the completed block,
// whose keys/values (present_kv, computed from its clean tokens) are appended: the same run that starts the next
// block, so appending costs no extra graph run.
//
// Pure: no ONNX Runtime. models/dllm/reference/batching.py (step_rows, build_step_batch) mirrors it.

import type { Batch, GraphFeeds, KvGeometry } from './batch.js';
import type { Sequence } from './sequence.js';

/**
 * One graph row's keys/values: [layers, 2, kvHeads, length, headDim], canvas positions 0 .. length-1. Never written
 * after it is made (a refresh or an append makes a new one), so its identity names its contents (pastKey).
 */
export interface RowCache {
  readonly data: Float32Array;
  readonly length: number;
}

/** A number per RowCache object, for pastKey. */
const cacheIds = new WeakMap<RowCache, number>();
let nextCacheId = 0;

function cacheId(cache: RowCache): number {
  let id = cacheIds.get(cache);
  if (id === undefined) cacheIds.set(cache, (id = nextCacheId++));
  return id;
}

export type PassKind = 'full' | 'cached';

export function kvBytesPerPosition(g: KvGeometry): number {
  return g.layers * 2 * g.kvHeads * g.headDim * Float32Array.BYTES_PER_ELEMENT;
}

/** The most cache bytes a sequence may hold: every row's keys/values over its whole canvas; 0 without a cache. */
export function cacheReservation(sequence: Sequence, g: KvGeometry | null): number {
  if (g === null || sequence.cacheMode === 'none') return 0;
  return sequence.rowCount * sequence.canvas.length * kvBytesPerPosition(g);
}

/**
 * A full pass at every block start (and whenever there is no cache); the block's later steps run from the cache.
 * Block diffusion: one full pass (the prefill), then cached steps only.
 */
export function passKind(sequence: Sequence, hasCache: boolean): PassKind {
  if (sequence.cacheMode === 'none' || !hasCache) return 'full';
  return sequence.blockSize !== null || sequence.stepInBlock > 0 ? 'cached' : 'full';
}

/** Canvas positions a full pass's keys/values are kept for: prefix mode only ever reads those before the block;
 * block diffusion keeps the final blocks. */
export function keptLength(sequence: Sequence): number {
  if (sequence.blockSize !== null) return sequence.cacheFrontier();
  return sequence.cacheMode === 'prefix' ? sequence.blockRange()[0] : sequence.canvas.length;
}

/** Block diffusion: positions at the head of this cached step's query that complete the cache (0 mostly). */
export function appendCount(sequence: Sequence, cache: RowCache): number {
  return sequence.blockSize === null ? 0 : Math.max(0, sequence.cacheFrontier() - cache.length);
}

/** The cache with positions [from, from + count) of row `row` of present_kv appended. */
export function appendRowCache(cache: RowCache, present: Float32Array, dims: readonly number[], row: number, from: number, count: number): RowCache {
  const tail = extractRowCache(present, dims, row, from, count);
  const [layers, , , kvHeads, , headDim] = dims;
  const length = cache.length + count;
  const data = new Float32Array(layers * 2 * kvHeads * length * headDim);
  for (let lh = 0; lh < layers * 2 * kvHeads; lh++) {
    data.set(cache.data.subarray(lh * cache.length * headDim, (lh + 1) * cache.length * headDim), lh * length * headDim);
    data.set(tail.data.subarray(lh * count * headDim, (lh + 1) * count * headDim), (lh * length + cache.length) * headDim);
  }
  return { data, length };
}

/** Position ids of left-padded rows from their attention mask: the first real token is 0, padding 0. */
export function positionIdsFromMask(mask: BigInt64Array, rows: number, length: number): BigInt64Array {
  const out = new BigInt64Array(rows * length);
  for (let r = 0; r < rows; r++) {
    let seen = 0n;
    for (let i = 0; i < length; i++) {
      const real = mask[r * length + i] !== 0n;
      out[r * length + i] = real ? seen : 0n;
      if (real) seen++;
    }
  }
  return out;
}

/** A full pass (the whole canvas as query, nothing cached) as cached-graph feeds. */
export function fullPassFeeds(feeds: GraphFeeds, geometry: KvGeometry, wantPresent: boolean): GraphFeeds {
  return {
    ...feeds,
    cached: {
      geometry,
      positionIds: positionIdsFromMask(feeds.attentionMask, feeds.rows, feeds.length),
      pastLength: 0,
      pastKey: '',
      buildPast: () => new Float32Array(0),
      wantPresent,
    },
  };
}

/** Row `row`'s keys/values at query indices [from, from + count) of present_kv [layers, 2, N, kvHeads, Q, headDim]. */
export function extractRowCache(present: Float32Array, dims: readonly number[], row: number, from: number, count: number): RowCache {
  const [layers, two, n, kvHeads, q, headDim] = dims;
  if (two !== 2 || present.length !== layers * 2 * n * kvHeads * q * headDim) throw new Error(`present_kv of shape [${dims.join(', ')}] does not hold ${present.length} values`);
  if (row < 0 || row >= n || from < 0 || from + count > q) throw new Error(`row ${row}, positions [${from}, ${from + count}) outside present_kv [${dims.join(', ')}]`);
  const data = new Float32Array(layers * 2 * kvHeads * count * headDim);
  for (let ls = 0; ls < layers * 2; ls++) {
    for (let h = 0; h < kvHeads; h++) {
      const src = (((ls * n + row) * kvHeads + h) * q + from) * headDim;
      data.set(present.subarray(src, src + count * headDim), (ls * kvHeads + h) * count * headDim);
    }
  }
  return { data, length: count };
}

export interface CachedEntry {
  sequence: Sequence;
  /** Canvas indices to score: sequence.wantedPositions(). */
  positions: number[];
  /** One cache per graph row of the sequence (conditional, then unconditional with guidance). */
  caches: readonly RowCache[];
}

/** One graph row of a cached step: what it queries and which cached positions it reads (host and device forms). */
export interface StepRow extends StepSpan {
  query: readonly number[];
  /** Indices into the query of the wanted positions. */
  positions: number[];
  cfgScale: number;
  partner: number;
}

/** What a cached step reads: the canvas span [queryStart, queryEnd) it queries, and cached positions [0, take) with
 * [hideFrom, hideTo) masked out. */
export interface StepSpan {
  queryStart: number;
  queryEnd: number;
  take: number;
  hideFrom: number;
  hideTo: number;
}

/**
 * The span of a sequence's cached step over a cache of `cacheLength` positions, per mode: prefix queries the block
 * and what follows over the positions before it; dual queries the block over every other position (its own stale
 * entries hidden); block diffusion queries what is not cached yet up to the block's end over the whole cache.
 * With shifted logits (Dream) the block's first prediction is the output of the position before the block, so the
 * query starts there (readFrom) and that position's cached entry is hidden: its output is computed, not read.
 */
export function stepSpan(sequence: Sequence, cacheLength: number): StepSpan {
  const [start, end] = sequence.blockRange();
  if (sequence.blockSize !== null) return { queryStart: cacheLength, queryEnd: end, take: cacheLength, hideFrom: 0, hideTo: 0 };
  const from = sequence.readFrom(start);
  if (sequence.cacheMode === 'prefix') return { queryStart: from, queryEnd: sequence.canvas.length, take: from, hideFrom: from, hideTo: start };
  return { queryStart: from, queryEnd: end, take: sequence.canvas.length, hideFrom: from, hideTo: end };
}

/** The rows of one sequence's cached step, over caches holding canvas positions [0, cachedUpTo[row]). */
export function stepRows(sequence: Sequence, positions: readonly number[], cachedUpTo: readonly number[], firstRow: number): StepRow[] {
  const canvases = sequence.rowCount === 2 ? [sequence.canvas, sequence.unconditionalCanvas()] : [sequence.canvas];
  if (cachedUpTo.length !== canvases.length) throw new Error(`a sequence of ${canvases.length} rows has ${cachedUpTo.length} caches`);
  const partner = firstRow + sequence.rowCount - 1;
  return canvases.map((canvas, i) => {
    const span = stepSpan(sequence, cachedUpTo[i]);
    if (cachedUpTo[i] < span.take) throw new Error(`cache of ${cachedUpTo[i]} positions, ${span.take} needed`);
    return {
      ...span,
      query: canvas.slice(span.queryStart, span.queryEnd),
      positions: positions.map((p) => sequence.readFrom(p) - span.queryStart),
      cfgScale: i === 0 ? sequence.params.cfgScale : 0,
      partner,
    };
  });
}

/**
 * The query side of a cached step's inputs, shared by the host and the device forms: each row's query right-aligned
 * in [0, Q) (left-padded), its position ids, its wanted positions, guidance, and the mask 1 on its real queries, which
 * follow `pastLength` cached slots whose mask the caller writes.
 */
export function queryFeeds(rows: readonly StepRow[], pastLength: number, padTokenId: number): { feeds: GraphFeeds; positionIds: BigInt64Array } {
  const n = rows.length;
  const q = Math.max(...rows.map((r) => r.query.length));
  const p = Math.max(1, ...rows.map((r) => r.positions.length));
  const feeds: GraphFeeds = {
    rows: n,
    length: q,
    positionsPerRow: p,
    inputIds: new BigInt64Array(n * q).fill(BigInt(padTokenId)),
    attentionMask: new BigInt64Array(n * (pastLength + q)),
    positions: new BigInt64Array(n * p),
    cfgScale: new Float32Array(n),
    uncondRow: new BigInt64Array(n),
  };
  const positionIds = new BigInt64Array(n * q);
  rows.forEach((row, r) => {
    const queryPad = q - row.query.length;
    const mask = r * (pastLength + q) + pastLength;
    for (let i = 0; i < row.query.length; i++) {
      feeds.inputIds[r * q + queryPad + i] = BigInt(row.query[i]);
      positionIds[r * q + queryPad + i] = BigInt(row.queryStart + i);
      feeds.attentionMask[mask + queryPad + i] = 1n;
    }
    for (let j = 0; j < p; j++) feeds.positions[r * p + j] = BigInt(queryPad + (row.positions[Math.min(j, row.positions.length - 1)] ?? 0));
    feeds.cfgScale[r] = row.cfgScale;
    feeds.uncondRow[r] = BigInt(row.partner);
  });
  return { feeds, positionIds };
}

/** Lengths a cached step of this entry feeds (past + query), for groupByLength. */
export function stepLength(entry: CachedEntry): number {
  const { queryStart, queryEnd, take } = stepSpan(entry.sequence, entry.caches[0].length);
  return take + queryEnd - queryStart;
}

/**
 * Cached-step graph inputs: per row, its cached keys/values right-aligned in [0, Lp) and its query right-aligned in
 * [0, Q), the attention mask 1 on real cached positions and real queries only. Padding keys get no weight, so a row
 * computes what it computes alone. past_kv is built only when the runner asks (buildPast): its contents depend on
 * nothing but each row's cache, how much of it is fed and Lp, which pastKey names, so the steps of a block can share
 * one past (what a step hides of it, and its queries, are in the attention mask and the other inputs).
 */
export function buildStepBatch(entries: readonly CachedEntry[], padTokenId: number, geometry: KvGeometry): Batch {
  const rows: (StepRow & { cache: RowCache })[] = [];
  const rowOf: number[] = [];
  for (const { sequence, positions, caches } of entries) {
    rowOf.push(rows.length);
    const sequenceRows = stepRows(sequence, positions, caches.map((c) => c.length), rows.length);
    rows.push(...sequenceRows.map((row, i) => ({ ...row, cache: caches[i] })));
  }
  const lp = Math.max(...rows.map((r) => r.take));
  const { feeds, positionIds } = queryFeeds(rows, lp, padTokenId);
  feeds.cached = {
    geometry,
    positionIds,
    pastLength: lp,
    pastKey: `${lp}:${rows.map((row) => `${cacheId(row.cache)}/${row.take}`).join(',')}`,
    buildPast: () => stackPast(rows, lp, geometry),
    // present_kv only when a completed block is to be appended (block diffusion, a block's first step).
    wantPresent: entries.some((e) => e.caches.some((c) => appendCount(e.sequence, c) > 0)),
  };
  rows.forEach((row, r) => {
    const pastPad = lp - row.take;
    const mask = r * (lp + feeds.length);
    for (let i = 0; i < row.take; i++) feeds.attentionMask[mask + pastPad + i] = i >= row.hideFrom && i < row.hideTo ? 0n : 1n;
  });
  return { feeds, rowOf };
}

/** past_kv [layers, 2, N, kvHeads, Lp, headDim]: row r's cached positions [0, take) right-aligned in [0, Lp). */
function stackPast(rows: readonly (StepRow & { cache: RowCache })[], lp: number, { layers, kvHeads, headDim }: KvGeometry): Float32Array {
  const n = rows.length;
  const past = new Float32Array(layers * 2 * n * kvHeads * lp * headDim);
  rows.forEach((row, r) => {
    const pastPad = lp - row.take;
    const { data, length } = row.cache;
    for (let ls = 0; ls < layers * 2; ls++) {
      for (let h = 0; h < kvHeads; h++) {
        const src = (ls * kvHeads + h) * length * headDim;
        past.set(data.subarray(src, src + row.take * headDim), (((ls * n + r) * kvHeads + h) * lp + pastPad) * headDim);
      }
    }
  });
  return past;
}
