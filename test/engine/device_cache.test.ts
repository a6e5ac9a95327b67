// The device cache layout (src/engine/device_cache.ts), pure: which slots of a kept block a row may attend, the
// cached step's inputs over one block (rows picked by past_rows, the dual block hidden, queries right-aligned), and
// block diffusion's append inside the graph. The same rules run on WebGPU in webgpu.test.ts and golden_webgpu.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  appendedCaches,
  blockBytes,
  buildDeviceStepBatch,
  deviceAppendCount,
  deviceFullPassFeeds,
  fullPassCaches,
  type DeviceBlock,
} from '../../src/engine/device_cache.js';
import { buildBatch } from '../../src/engine/batch.js';
import { Sequence } from '../../src/engine/sequence.js';
import type { CacheMode } from '../../src/engine/types.js';
import { params } from './helpers.js';

const GEOMETRY = { layers: 2, kvHeads: 1, headDim: 2 };
const MASK = 2;

function sequence(promptLength: number, cache: CacheMode, blockSize: number | null = null, maxTokens = 16): Sequence {
  return new Sequence({
    prefix: Array.from({ length: promptLength }, (_, i) => 10 + i),
    suffix: [],
    params: params({ maxTokens, steps: maxTokens, blockLength: blockSize ?? 8, cache }),
    maskTokenId: MASK,
    eosTokenIds: [1],
    seed: 1,
    blockSize,
  });
}

const block = (id: number, rows: number, slots: number): DeviceBlock => ({ id, slots, bytes: blockBytes(rows, slots, GEOMETRY), refs: 0 });
const ones = (usable: Uint8Array) => [...usable].flatMap((u, i) => (u ? [i] : []));
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

test('a full pass keeps its present_kv whole; a row may attend the slots its mode keeps, past its left padding', () => {
  const long = sequence(5, 'dual');
  const short = sequence(3, 'prefix');
  const { feeds, rowOf } = buildBatch([{ sequence: short, positions: short.wantedPositions() }, { sequence: long, positions: long.wantedPositions() }], 0);
  const full = deviceFullPassFeeds(feeds, GEOMETRY, 7);
  assert.equal(full.device!.keepAs, 7);
  assert.equal(full.device!.pastLength, 0);
  assert.deepEqual([...full.device!.pastRows], [0n, 0n]);
  const kept = block(7, feeds.rows, feeds.length);
  // prefix: the positions before the block only (the prompt); dual: the whole canvas.
  const [s] = fullPassCaches(short, kept, rowOf[0], feeds.length);
  const pad = feeds.length - short.canvas.length;
  assert.deepEqual(ones(s.usable), range(pad, pad + 3));
  assert.deepEqual([s.row, s.offset, s.cachedUpTo], [0, pad, 3]);
  const [l] = fullPassCaches(long, kept, rowOf[1], feeds.length);
  assert.deepEqual(ones(l.usable), range(0, long.canvas.length));
  assert.deepEqual([l.row, l.offset, l.cachedUpTo], [1, 0, long.canvas.length]);
});

test('a cached step reads one block: rows picked in any order, the dual block hidden, queries right-aligned', () => {
  const a = sequence(3, 'dual');
  const b = sequence(5, 'dual');
  const { feeds } = buildBatch([{ sequence: a, positions: a.wantedPositions() }, { sequence: b, positions: b.wantedPositions() }], 0);
  const kept = block(3, 2, feeds.length);
  const cacheA = fullPassCaches(a, kept, 0, feeds.length);
  const cacheB = fullPassCaches(b, kept, 1, feeds.length);
  a.stepInBlock = b.stepInBlock = 1;
  const { feeds: step, rowOf } = buildDeviceStepBatch(
    [
      { sequence: b, positions: b.wantedPositions(), caches: cacheB },
      { sequence: a, positions: a.wantedPositions(), caches: cacheA },
    ],
    0,
    GEOMETRY,
    () => assert.fail('nothing is appended: no block is kept'),
  );
  const d = step.device!;
  assert.deepEqual(rowOf, [0, 1]);
  assert.deepEqual([...d.pastRows], [1n, 0n], 'b reads block row 1, a block row 0');
  assert.deepEqual([d.pastBlock, d.pastLength, d.keepAs], [3, feeds.length, null]);
  const lp = feeds.length;
  const kv = lp + step.length;
  // Row 1 (a, left-padded by 2 in the block): its canvas but the block [3, 11), then its 8 queries.
  const maskA = [...step.attentionMask.subarray(kv, 2 * kv)].map(Number);
  const padA = cacheA[0].offset;
  assert.deepEqual(
    maskA.slice(0, lp).flatMap((m, i) => (m ? [i] : [])),
    range(padA, lp).filter((i) => i < padA + 3 || i >= padA + 11),
  );
  assert.deepEqual(maskA.slice(lp), Array(8).fill(1));
  assert.deepEqual([...d.positionIds.subarray(8, 16)].map(Number), range(3, 11), 'absolute positions of a block');
  assert.deepEqual([...step.inputIds.subarray(8, 16)].map(Number), Array(8).fill(MASK));
});

test('block diffusion appends the completed block inside the graph: its query slots become usable', () => {
  // Prompt 6, blocks of 4 counted from position 0: generation [6, 8) completes block [4, 8), then [8, 12), [12, 14).
  const s = sequence(6, 'prefix', 4, 8);
  const { feeds } = buildBatch([{ sequence: s, positions: s.wantedPositions() }], 0);
  const prefill = block(1, 1, feeds.length);
  const old = fullPassCaches(s, prefill, 0, feeds.length);
  assert.deepEqual([old[0].cachedUpTo, ...ones(old[0].usable)], [4, 0, 1, 2, 3], 'the prefill keeps the blocks before [4, 8)');
  assert.equal(deviceAppendCount(s, old[0]), 0);
  // Block [6, 8) done: the next step queries [4, 12) (the completed model block, then the new one) and appends 4.
  for (let i = 6; i < 8; i++) s.canvas[i] = 20 + i;
  s.block = 1;
  assert.equal(deviceAppendCount(s, old[0]), 4);
  let kept = -1;
  const { feeds: step } = buildDeviceStepBatch([{ sequence: s, positions: s.wantedPositions(), caches: old }], 0, GEOMETRY, () => (kept = 9));
  assert.equal(step.device!.keepAs, 9);
  assert.equal(kept, 9);
  assert.equal(step.length, 8);
  const grown = block(9, 1, prefill.slots + step.length);
  const [cache] = appendedCaches(s, old, grown, 0, step.length, 4);
  assert.equal(cache.cachedUpTo, 8);
  assert.deepEqual(ones(cache.usable), [0, 1, 2, 3, prefill.slots, prefill.slots + 1, prefill.slots + 2, prefill.slots + 3]);
  assert.equal(deviceAppendCount(s, cache), 0);
});
