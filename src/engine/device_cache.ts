// Key/value caches that stay on the device (the device graph, docs/models.md): the layout rules, pure.
//
// A run of the device graph returns present_kv = [the past rows it read, then its queries' keys/values], and the
// runner can keep it on the device as a block. A sequence's cache is a row of a block plus which of the block's slots
// hold keys that row may attend (`usable`): the other slots are another run's left padding, or keys gone stale (the
// positions of a block being decoded). So a cache is never cut, copied or restacked on the host:
//   - a full pass that refreshes caches is kept whole: row r's canvas position c is slot pad + c; the slots of the
//     positions the mode keeps (kv_cache.ts keptLength) are usable;
//   - a cached step reads one block (rows picked by past_rows) with the mask hiding what is not usable, and for dual
//     the block being decoded, whose fresh keys come from the query (Fast-dLLM's replace_position);
//   - block diffusion appends inside the graph: the step that starts a block is kept as a new block, in which the
//     completed block's query slots become usable and the new block's masked ones do not. Its cache grows by the
//     query length per block (up to twice the positions it holds), the price of appending without a host copy.
// The host keeps none of the keys; kv_cache.ts is the host form of the same rules (stepSpan, keptLength, appendCount).

import type { Batch, GraphFeeds, KvGeometry } from './batch.js';
import { keptLength, kvBytesPerPosition, positionIdsFromMask, queryFeeds, stepRows, stepSpan, type StepRow } from './kv_cache.js';
import type { Sequence } from './sequence.js';

/** A present_kv kept on the device: [layers, 2, rows, kvHeads, slots, headDim]. */
export interface DeviceBlock {
  readonly id: number;
  readonly slots: number;
  readonly bytes: number;
  /** Row caches that read it; freed at 0. */
  refs: number;
}

/** One graph row's cache on the device. */
export interface DeviceRowCache {
  readonly block: DeviceBlock;
  readonly row: number;
  /** Slot of canvas position 0 in the full pass that made the block (its left padding). */
  readonly offset: number;
  /** [block.slots]: 1 where the slot holds a key of this row that a query may attend. */
  readonly usable: Uint8Array;
  /** Canvas positions [0, cachedUpTo) are cached (kv_cache.ts RowCache.length). */
  readonly cachedUpTo: number;
}

export function blockBytes(rows: number, slots: number, g: KvGeometry): number {
  return rows * slots * kvBytesPerPosition(g);
}

/** A full pass over whole canvases as device-graph feeds: no past; kept as block `keepAs` when caches refresh. */
export function deviceFullPassFeeds(feeds: GraphFeeds, geometry: KvGeometry, keepAs: number | null): GraphFeeds {
  return {
    ...feeds,
    device: {
      geometry,
      positionIds: positionIdsFromMask(feeds.attentionMask, feeds.rows, feeds.length),
      pastBlock: null,
      pastRows: new BigInt64Array(feeds.rows),
      pastLength: 0,
      keepAs,
    },
  };
}

/** The caches of a sequence's rows from a full pass kept as `block` (rows from firstRow, canvases padded to `length`). */
export function fullPassCaches(sequence: Sequence, block: DeviceBlock, firstRow: number, length: number): DeviceRowCache[] {
  const pad = length - sequence.canvas.length;
  const keep = keptLength(sequence);
  return Array.from({ length: sequence.rowCount }, (_, r) => {
    const usable = new Uint8Array(block.slots);
    usable.fill(1, pad, pad + keep);
    return { block, row: firstRow + r, offset: pad, usable, cachedUpTo: keep };
  });
}

export interface DeviceCachedEntry {
  sequence: Sequence;
  /** Canvas indices to score: sequence.wantedPositions(). */
  positions: number[];
  /** One cache per graph row, all rows of one block. */
  caches: readonly DeviceRowCache[];
}

/** Query tokens plus past slots a cached step of this entry feeds, for groupByLength. */
export function deviceStepLength(entry: DeviceCachedEntry): number {
  const { queryStart, queryEnd } = stepSpan(entry.sequence, entry.caches[0].cachedUpTo);
  return entry.caches[0].block.slots + queryEnd - queryStart;
}

/** Block diffusion: positions at the head of this step's query that complete the cache (0 mostly). */
export function deviceAppendCount(sequence: Sequence, cache: DeviceRowCache): number {
  return sequence.blockSize === null ? 0 : Math.max(0, sequence.cacheFrontier() - cache.cachedUpTo);
}

/**
 * Cached-step inputs over one block: row r reads block row caches[r].row; its mask is 1 on the usable slots (less the
 * dual block's stale ones) and on its real queries, which are right-aligned in [0, Q). Kept as block `keepAs` when an
 * entry appends (block diffusion), else nothing is kept.
 */
export function buildDeviceStepBatch(entries: readonly DeviceCachedEntry[], padTokenId: number, geometry: KvGeometry, keepAs: () => number): Batch {
  const block = entries[0].caches[0].block;
  const rows: (StepRow & { cache: DeviceRowCache })[] = [];
  const rowOf: number[] = [];
  for (const { sequence, positions, caches } of entries) {
    if (caches.some((c) => c.block !== block)) throw new Error('a cached step reads one device block');
    rowOf.push(rows.length);
    const sequenceRows = stepRows(sequence, positions, caches.map((c) => c.cachedUpTo), rows.length);
    rows.push(...sequenceRows.map((row, i) => ({ ...row, cache: caches[i] })));
  }
  const lp = block.slots;
  const { feeds, positionIds } = queryFeeds(rows, lp, padTokenId);
  const appends = entries.some((e) => deviceAppendCount(e.sequence, e.caches[0]) > 0);
  feeds.device = {
    geometry,
    positionIds,
    pastBlock: block.id,
    pastRows: BigInt64Array.from(rows, (row) => BigInt(row.cache.row)),
    pastLength: lp,
    keepAs: appends ? keepAs() : null,
  };
  rows.forEach((row, r) => {
    const mask = r * (lp + feeds.length);
    const { usable, offset } = row.cache;
    for (let s = 0; s < lp; s++) feeds.attentionMask[mask + s] = BigInt(usable[s]);
    for (let c = row.hideFrom; c < row.hideTo; c++) feeds.attentionMask[mask + offset + c] = 0n;
  });
  return { feeds, rowOf };
}

/**
 * Block diffusion: the caches after a step kept as `block` whose query (padded to queryLength) started with `count`
 * positions that complete the cache: the old usable slots, then those query slots.
 */
export function appendedCaches(sequence: Sequence, old: readonly DeviceRowCache[], block: DeviceBlock, firstRow: number, queryLength: number, count: number): DeviceRowCache[] {
  const { queryStart, queryEnd } = stepSpan(sequence, old[0].cachedUpTo);
  const queryPad = queryLength - (queryEnd - queryStart);
  return old.map((cache, r) => {
    const usable = new Uint8Array(block.slots);
    usable.set(cache.usable);
    usable.fill(1, cache.block.slots + queryPad, cache.block.slots + queryPad + count);
    return { block, row: firstRow + r, offset: cache.offset, usable, cachedUpTo: cache.cachedUpTo + count };
  });
}
