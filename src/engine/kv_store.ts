// The one owner of key/value cache memory (nano-vllm's block_manager is the model): which sequences hold a cache,
// what it costs to admit one, the feeds that read caches, filling and growing them after a run, freeing them, and
// the bytes held. Two forms of the same rules (docs/models.md): on the host (kv_cache.ts: caches are arrays cut out
// of present_kv, restacked into past_kv), or on the device (device_cache.ts: caches are blocks the runner keeps on
// the GPU, never seen by the host). The engine only asks.

import { groupByLength, type Batch, type BatchEntry, type GraphFeeds, type KvGeometry } from './batch.js';
import {
  appendedCaches,
  blockBytes,
  buildDeviceStepBatch,
  deviceAppendCount,
  deviceFullPassFeeds,
  deviceStepLength,
  fullPassCaches,
  type DeviceBlock,
  type DeviceRowCache,
} from './device_cache.js';
import type { GraphRun, GraphRunner } from './graph_runner.js';
import {
  appendCount,
  appendRowCache,
  buildStepBatch,
  cacheReservation,
  extractRowCache,
  fullPassFeeds,
  keptLength,
  stepLength,
  stepSpan,
  type RowCache,
} from './kv_cache.js';
import type { Sequence } from './sequence.js';

/** A graph run of cached steps: the entries (by index) it serves and its inputs, built when it is its turn. */
export interface CachedRun {
  indices: number[];
  build: () => Batch;
}

export interface KvStore {
  /** Cache bytes held now (host memory, or device memory on the device). */
  readonly bytes: number;
  /** The sequence holds a cache: its next step may run from it (kv_cache.ts passKind). */
  holds(sequence: Sequence): boolean;
  /** Bytes to reserve when the sequence is admitted (the scheduler's cost; 0 without a cache). */
  reservation(sequence: Sequence): number;
  /** A full pass's inputs; with refresh its keys/values are kept for the sequences' caches. */
  fullPass(batch: Batch, refresh: boolean): Batch;
  /** The cached steps of these entries (each holding a cache), grouped into graph runs. */
  cachedRuns(entries: readonly BatchEntry[], maxPaddedRatio: number): CachedRun[];
  /** After a refreshing full pass: the sequence's rows (from firstRow) become its cache. */
  refresh(sequence: Sequence, run: GraphRun, feeds: GraphFeeds, firstRow: number): void;
  /** After a cached step: block diffusion appends the block the previous step completed. */
  append(sequence: Sequence, run: GraphRun, feeds: GraphFeeds, firstRow: number): void;
  /** After every successful run, once its sequences were handled: drops what it kept that no cache took. */
  settle(feeds: GraphFeeds): void;
  free(sequence: Sequence): void;
}

function bytesOf(caches: readonly RowCache[]): number {
  return caches.reduce((sum, c) => sum + c.data.byteLength, 0);
}

/** What both forms share: the caches by sequence (one per graph row), the bytes held, the graph's geometry. */
abstract class CacheTable<C> {
  protected readonly caches = new Map<Sequence, C[]>();
  bytes = 0;

  constructor(
    protected readonly geometry: KvGeometry,
    protected readonly padTokenId: number,
    protected readonly runner: GraphRunner,
  ) {}

  holds(sequence: Sequence): boolean {
    return this.caches.has(sequence);
  }
}

/** Caches as host arrays: cut from present_kv after a run, stacked into past_kv for the next (kv_cache.ts). */
export class HostKvStore extends CacheTable<RowCache> implements KvStore {
  reservation(sequence: Sequence): number {
    return cacheReservation(sequence, this.geometry);
  }

  fullPass(batch: Batch, refresh: boolean): Batch {
    return { ...batch, feeds: fullPassFeeds(batch.feeds, this.geometry, refresh) };
  }

  cachedRuns(entries: readonly BatchEntry[], maxPaddedRatio: number): CachedRun[] {
    const cached = entries.map((e) => ({ ...e, caches: this.caches.get(e.sequence)! }));
    return groupByLength(cached.map(stepLength), cached.map((e) => e.sequence.rowCount), maxPaddedRatio).map((group) => ({
      indices: group,
      build: () => buildStepBatch(group.map((g) => cached[g]), this.padTokenId, this.geometry),
    }));
  }

  refresh(sequence: Sequence, { head }: GraphRun, feeds: GraphFeeds, firstRow: number): void {
    if (head.present === undefined) throw new Error('the cached graph returned no present_kv');
    const pad = feeds.length - sequence.canvas.length;
    const keep = keptLength(sequence);
    const kv: RowCache[] = [];
    for (let r = 0; r < sequence.rowCount; r++) kv.push(extractRowCache(head.present.data, head.present.dims, firstRow + r, pad, keep));
    this.free(sequence);
    this.caches.set(sequence, kv);
    this.bytes += bytesOf(kv);
  }

  append(sequence: Sequence, { head }: GraphRun, feeds: GraphFeeds, firstRow: number): void {
    const old = this.caches.get(sequence)!;
    const count = appendCount(sequence, old[0]);
    if (count === 0) return;
    if (head.present === undefined) throw new Error('the cached graph returned no present_kv');
    const { queryStart, queryEnd } = stepSpan(sequence, old[0].length);
    const pad = feeds.length - (queryEnd - queryStart); // the rows' queries are left-padded to the query length
    const kv = old.map((c, r) => appendRowCache(c, head.present!.data, head.present!.dims, firstRow + r, pad, count));
    this.bytes += bytesOf(kv) - bytesOf(old);
    this.caches.set(sequence, kv);
  }

  settle(): void {}

  free(sequence: Sequence): void {
    const kv = this.caches.get(sequence);
    if (kv === undefined) return;
    this.bytes -= bytesOf(kv);
    this.caches.delete(sequence);
  }
}

/**
 * Caches as blocks on the device (device_cache.ts): a run's present_kv is kept by the runner under a block id; a
 * sequence's rows are rows of a block. A block is freed on the device when no row reads it any more.
 */
export class DeviceKvStore extends CacheTable<DeviceRowCache> implements KvStore {
  /** Blocks kept on the device, by id. */
  private readonly blocks = new Map<number, DeviceBlock>();
  private nextId = 1;

  /**
   * Twice the host bound: a block is as long as the longest canvas of its full pass (the engine pads at most
   * maxPaddedRatio, 1.5 by default), and a block diffusion cache grows by up to two blocks per block it holds.
   */
  reservation(sequence: Sequence): number {
    return 2 * cacheReservation(sequence, this.geometry);
  }

  fullPass(batch: Batch, refresh: boolean): Batch {
    return { ...batch, feeds: deviceFullPassFeeds(batch.feeds, this.geometry, refresh ? this.nextId++ : null) };
  }

  cachedRuns(entries: readonly BatchEntry[], maxPaddedRatio: number): CachedRun[] {
    const cached = entries.map((e) => ({ ...e, caches: this.caches.get(e.sequence)! }));
    // One run reads one block: the sequences of each block, then grouped by length as on the host.
    const byBlock = new Map<DeviceBlock, number[]>();
    cached.forEach((e, i) => {
      const block = e.caches[0].block;
      byBlock.set(block, byBlock.get(block) ?? []);
      byBlock.get(block)!.push(i);
    });
    const runs: CachedRun[] = [];
    for (const members of byBlock.values()) {
      const lengths = members.map((i) => deviceStepLength(cached[i]));
      for (const group of groupByLength(lengths, members.map((i) => cached[i].sequence.rowCount), maxPaddedRatio)) {
        const indices = group.map((g) => members[g]);
        runs.push({ indices, build: () => buildDeviceStepBatch(indices.map((i) => cached[i]), this.padTokenId, this.geometry, () => this.nextId++) });
      }
    }
    return runs;
  }

  refresh(sequence: Sequence, _run: GraphRun, feeds: GraphFeeds, firstRow: number): void {
    const block = this.keptBlock(feeds);
    const kv = fullPassCaches(sequence, block, firstRow, feeds.length);
    this.free(sequence);
    this.take(sequence, kv);
  }

  append(sequence: Sequence, _run: GraphRun, feeds: GraphFeeds, firstRow: number): void {
    const old = this.caches.get(sequence)!;
    const count = deviceAppendCount(sequence, old[0]);
    if (count === 0) return;
    const kv = appendedCaches(sequence, old, this.keptBlock(feeds), firstRow, feeds.length, count);
    this.free(sequence);
    this.take(sequence, kv);
  }

  settle(feeds: GraphFeeds): void {
    const id = feeds.device?.keepAs ?? null;
    if (id === null) return;
    const block = this.blocks.get(id);
    if (block === undefined) this.runner.freeBlocks?.([id]); // kept by the runner, taken by no cache
    else if (block.refs === 0) this.drop(block);
  }

  free(sequence: Sequence): void {
    const kv = this.caches.get(sequence);
    if (kv === undefined) return;
    this.caches.delete(sequence);
    for (const cache of kv) {
      cache.block.refs--;
      if (cache.block.refs === 0) this.drop(cache.block);
    }
  }

  /** The block a successful run kept (feeds.device.keepAs), registered on first use. */
  private keptBlock(feeds: GraphFeeds): DeviceBlock {
    const id = feeds.device?.keepAs ?? null;
    if (id === null) throw new Error('the run kept no device block');
    let block = this.blocks.get(id);
    if (block === undefined) {
      const slots = feeds.device!.pastLength + feeds.length;
      block = { id, slots, bytes: blockBytes(feeds.rows, slots, this.geometry), refs: 0 };
      this.blocks.set(id, block);
      this.bytes += block.bytes;
    }
    return block;
  }

  private take(sequence: Sequence, kv: DeviceRowCache[]): void {
    for (const cache of kv) cache.block.refs++;
    this.caches.set(sequence, kv);
  }

  private drop(block: DeviceBlock): void {
    if (!this.blocks.delete(block.id)) return;
    this.bytes -= block.bytes;
    this.runner.freeBlocks?.([block.id]);
  }
}
