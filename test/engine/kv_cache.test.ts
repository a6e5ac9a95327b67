// Key/value caches (src/engine/kv_cache.ts, engine.ts): the cached-step layout, the full-pass / cached-step choice,
// the memory bound at admission, and that caches are freed on finish, cancel and abandoned streams. The graph is a
// synthetic cached graph whose keys/values encode their absolute positions, so every past fed back is checked.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { GraphFeeds } from '../../src/engine/batch.js';
import { DiffusionEngine } from '../../src/engine/engine.js';
import type { GraphRun, GraphRunner } from '../../src/engine/graph_runner.js';
import { appendRowCache, buildStepBatch, extractRowCache, kvBytesPerPosition, passKind, type RowCache } from '../../src/engine/kv_cache.js';
import type { ModelSpec } from '../../src/engine/model_folder.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { Sequence } from '../../src/engine/sequence.js';
import type { CacheMode, EngineEvent, GenerateRequest } from '../../src/engine/types.js';
import { headFrom, params, SPEC, TOKENIZER } from './helpers.js';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { BD3_MODEL_DIR, MODEL_DIR, openTestEngine, SKIP_NO_MODEL } from './model_fixture.js';

const SKIP_NO_CACHED_MODEL =
  SKIP_NO_MODEL ||
  (existsSync(path.join(MODEL_DIR, 'dllm.json')) && JSON.parse(readFileSync(path.join(MODEL_DIR, 'dllm.json'), 'utf8')).format === 'dllm-onnx/2'
    ? false
    : `${MODEL_DIR} has no cached graph (format 1)`);

const GEOMETRY = { layers: 2, kvHeads: 1, headDim: 2 };
const CACHED_SPEC: ModelSpec = { ...SPEC, format: 'dllm-onnx/2', cached: { fp32: 'model.kv.onnx', fp16: null, ...GEOMETRY } };

/** A cache whose entry for canvas position i holds i + 1 (row tag added), in every layer, half, head and lane. */
function positionCache(length: number, tag = 0): RowCache {
  const { layers, kvHeads, headDim } = GEOMETRY;
  const data = new Float32Array(layers * 2 * kvHeads * length * headDim);
  for (let ls = 0; ls < layers * 2; ls++) for (let i = 0; i < length; i++) for (let d = 0; d < headDim; d++) data[(ls * length + i) * headDim + d] = i + 1 + tag;
  return { data, length };
}

function sequence(promptLength: number, cache: CacheMode, overrides = {}): Sequence {
  return new Sequence({
    prefix: Array.from({ length: promptLength }, (_, i) => 10 + i),
    suffix: [],
    params: params({ maxTokens: 16, steps: 16, blockLength: 8, cache, ...overrides }),
    maskTokenId: 2,
    eosTokenIds: [1],
    seed: 1,
  });
}

test('passKind: a full pass at each block start and without a cache, cached steps inside a block', () => {
  const s = sequence(3, 'dual');
  assert.equal(passKind(s, false), 'full');
  assert.equal(passKind(s, true), 'full', 'block start');
  s.stepInBlock = 1;
  assert.equal(passKind(s, true), 'cached');
  assert.equal(passKind(s, false), 'full');
  assert.equal(passKind(sequence(3, 'none'), true), 'full');
});

test('extractRowCache cuts one row and a position range out of present_kv', () => {
  const dims = [2, 2, 3, 1, 5, 2]; // layers, 2, N, Hk, Q, Dh
  const present = new Float32Array(2 * 2 * 3 * 5 * 2).map((_, i) => i);
  const c = extractRowCache(present, dims, 1, 2, 3);
  assert.equal(c.length, 3);
  // layer 0, keys, head 0: row 1 starts at ((0 * 3 + 1) * 1 + 0) * 5 * 2 = 10; positions 2..4 -> values 14..19
  assert.deepEqual([...c.data.subarray(0, 6)], [14, 15, 16, 17, 18, 19]);
  assert.throws(() => extractRowCache(present, dims, 3, 0, 1), /outside/);
});

test('buildStepBatch: prefix queries block + rest over the prefix, dual the block over everything else; left-padded', () => {
  const prefix = sequence(3, 'prefix'); // canvas 3 + 16; block 0 = [3, 11)
  const dual = sequence(6, 'dual'); // canvas 6 + 16; block 0 = [6, 14)
  const { feeds, rowOf } = buildStepBatch(
    [
      { sequence: prefix, positions: prefix.wantedPositions(), caches: [positionCache(3)] },
      { sequence: dual, positions: dual.wantedPositions(), caches: [positionCache(22, 100)] },
    ],
    0,
    GEOMETRY,
  );
  assert.deepEqual(rowOf, [0, 1]);
  const c = feeds.cached!;
  assert.equal(c.pastLength, 22);
  assert.equal(feeds.length, 16, 'prefix query: the 16 generated positions; dual: the 8 of the block');
  const mask = (r: number) => [...feeds.attentionMask.subarray(r * 38, (r + 1) * 38)].map(Number);
  // prefix row: 19 padding, 3 cached, then its 16 queries
  assert.deepEqual(mask(0), [...Array(19).fill(0), 1, 1, 1, ...Array(16).fill(1)]);
  // dual row: 22 cached with the block [6, 14) hidden, then 8 query padding and the 8 block queries
  assert.deepEqual(mask(1), [...Array(6).fill(1), ...Array(8).fill(0), ...Array(8).fill(1), ...Array(8).fill(0), ...Array(8).fill(1)]);
  assert.deepEqual([...c.positionIds.subarray(0, 16)].map(Number), Array.from({ length: 16 }, (_, i) => 3 + i));
  assert.deepEqual([...c.positionIds.subarray(16, 32)].map(Number), [...Array(8).fill(0), 6, 7, 8, 9, 10, 11, 12, 13]);
  // head positions index the query: prefix asks for its block [3, 11) = query 0..7; dual for query 8..15
  assert.deepEqual([...feeds.positions].map(Number), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  // past of row 0, layer 0 keys: right-aligned positions 1..3
  const past = c.buildPast();
  const lane0 = (r: number, j: number) => past[((0 * 2 + r) * 22 + j) * 2];
  assert.deepEqual([19, 20, 21].map((j) => lane0(0, j)), [1, 2, 3]);
  assert.equal(lane0(0, 18), 0);
  assert.deepEqual([0, 21].map((j) => lane0(1, j)), [101, 122]);
});

test('buildStepBatch: pastKey is equal exactly when past_kv is (same caches, same taken lengths), so steps of a block share one', () => {
  const s = sequence(6, 'dual'); // block 0 = [6, 14)
  const cache = positionCache(22);
  const step = (caches: RowCache[]) => buildStepBatch([{ sequence: s, positions: s.wantedPositions(), caches }], 0, GEOMETRY).feeds.cached!;
  const first = step([cache]);
  s.stepInBlock = 1;
  const second = step([cache]);
  assert.equal(second.pastKey, first.pastKey, 'a later step of the block over the same cache');
  assert.deepEqual(second.buildPast(), first.buildPast());
  assert.notEqual(step([positionCache(22)]).pastKey, first.pastKey, 'a refreshed cache (a new object) is a new past');
  const prefix = sequence(6, 'prefix');
  const prefixKey = buildStepBatch([{ sequence: prefix, positions: prefix.wantedPositions(), caches: [cache] }], 0, GEOMETRY).feeds.cached!.pastKey;
  assert.notEqual(prefixKey, first.pastKey, 'the same cache fed to another length');
  const other = sequence(3, 'dual');
  const batched = buildStepBatch(
    [
      { sequence: s, positions: s.wantedPositions(), caches: [cache] },
      { sequence: other, positions: other.wantedPositions(), caches: [positionCache(19)] },
    ],
    0,
    GEOMETRY,
  ).feeds.cached!;
  assert.notEqual(batched.pastKey, first.pastKey, 'another batch');
});

test('buildStepBatch: a guided sequence brings its unconditional row with its own cache as partner', () => {
  const s = sequence(3, 'dual', { cfgScale: 2 });
  const { feeds, rowOf } = buildStepBatch([{ sequence: s, positions: s.wantedPositions(), caches: [positionCache(19), positionCache(19, 50)] }], 0, GEOMETRY);
  assert.deepEqual(rowOf, [0]);
  assert.deepEqual([...feeds.uncondRow].map(Number), [1, 1]);
  assert.deepEqual([...feeds.cfgScale], [2, 0]);
  assert.throws(() => buildStepBatch([{ sequence: s, positions: s.wantedPositions(), caches: [positionCache(19)] }], 0, GEOMETRY), /2 rows has 1 caches/);
});

test('Scheduler: admission keeps the summed cost within the bound, first come first served', () => {
  const items = [5, 5, 3, 1].map((cost) => ({ rowCount: 1, done: false, cost }));
  const s = new Scheduler<(typeof items)[number]>(8, 10);
  items.forEach((i) => s.add(i));
  assert.deepEqual(s.schedule().admitted, items.slice(0, 2));
  assert.equal(s.activeCost, 10);
  assert.deepEqual(s.schedule().admitted, [], 'the 3 waits, and the 1 behind it does not overtake it');
  items[0].done = true;
  const next = s.schedule();
  assert.deepEqual(next.retired, [items[0]]);
  assert.deepEqual(next.admitted, [items[2], items[3]]);
  assert.equal(s.activeCost, 9);
});

/**
 * A cached graph stand-in: the head prefers token 10 + (position % 26) at falling confidence, so commits go left to
 * right; present_kv holds position + 1 at every entry; every cached step checks that each row's unmasked past is
 * exactly the positions the mode must see.
 */
class SyntheticCachedRunner implements GraphRunner {
  readonly provider = 'synthetic';
  readonly ok = true;
  full = 0;
  cached = 0;
  pastChecks = 0;
  async run(f: GraphFeeds): Promise<GraphRun> {
    await new Promise((resolve) => setImmediate(resolve));
    const c = f.cached;
    if (c === undefined) throw new Error('the cached graph needs cached feeds');
    const { layers, kvHeads, headDim } = c.geometry;
    const kv = c.pastLength + f.length;
    const past = c.buildPast();
    if (c.pastLength === 0) this.full++;
    else this.cached++;
    const slots: [number, number][][][] = [];
    for (let r = 0; r < f.rows; r++) {
      if (c.pastLength > 0) {
        const seen: number[] = [];
        for (let j = 0; j < c.pastLength; j++) if (f.attentionMask[r * kv + j] === 1n) seen.push(past[(r * kvHeads * c.pastLength + j) * headDim] - 1);
        const queries: number[] = [];
        for (let i = 0; i < f.length; i++) if (f.attentionMask[r * kv + c.pastLength + i] === 1n) queries.push(Number(c.positionIds[r * f.length + i]));
        // prefix: the past is exactly [0, first query); dual: every position but the queries (the block)
        const expected = Array.from({ length: queries[0] }, (_, i) => i);
        const isDual = seen.length > queries[0];
        if (isDual) for (let i = queries[queries.length - 1] + 1; i < queries[queries.length - 1] + 1 + (seen.length - queries[0]); i++) expected.push(i);
        assert.deepEqual(seen, expected, 'past keys/values');
        this.pastChecks++;
      }
      const row: [number, number][][] = [];
      for (let p = 0; p < f.positionsPerRow; p++) {
        const q = Number(c.positionIds[r * f.length + Number(f.positions[r * f.positionsPerRow + p])]);
        row.push([[10 + (q % 26), 4 - q * 0.05], [11 + (q % 26), 1], [12 + (q % 26), 0], [13 + (q % 26), -1]]);
      }
      slots.push(row);
    }
    const head = headFrom(slots, 0.5);
    if (c.wantPresent) {
      const data = new Float32Array(layers * 2 * f.rows * kvHeads * f.length * headDim);
      for (let ls = 0; ls < layers * 2; ls++)
        for (let r = 0; r < f.rows; r++)
          for (let i = 0; i < f.length; i++) data.fill(Number(c.positionIds[r * f.length + i]) + 1, (((ls * f.rows + r) * kvHeads) * f.length + i) * headDim, (((ls * f.rows + r) * kvHeads) * f.length + i + 1) * headDim);
      head.present = { data, dims: [layers, 2, f.rows, kvHeads, f.length, headDim] };
    }
    return { head, runMs: 0 };
  }
  release(): void {}
  async close(): Promise<void> {}
}

function req(id: string, cache: CacheMode, extra: Partial<GenerateRequest> = {}, overrides = {}): GenerateRequest {
  return { id, promptTokenIds: [10, 11, 12], suffixTokenIds: [], params: params({ maxTokens: 16, steps: 16, blockLength: 8, cache, ...overrides }), n: 1, includeCanvas: false, ...extra };
}

async function drain(events: AsyncIterable<EngineEvent>): Promise<EngineEvent[]> {
  const out: EngineEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

const tokensOf = (events: EngineEvent[]) => events.flatMap((e) => (e.type === 'finish' ? [e.tokenIds] : []));

test('engine: every mode gives the same tokens on a graph that ignores its context; steps after a block start come from the cache', async () => {
  const results: Record<string, number[][]> = {};
  for (const cache of ['none', 'prefix', 'dual'] as const) {
    const runner = new SyntheticCachedRunner();
    const engine = new DiffusionEngine(CACHED_SPEC, TOKENIZER, runner, { cachedGraph: true });
    results[cache] = tokensOf(await drain(engine.generate(req(`r-${cache}`, cache, { suffixTokenIds: [20, 21] }))));
    const h = await engine.health();
    if (cache === 'none') {
      assert.deepEqual([runner.full, runner.cached, h.kvCache!.hits], [16, 0, 0]);
    } else {
      // 2 blocks of 8 steps: one full pass and 7 cached steps each
      assert.deepEqual([runner.full, runner.cached, h.kvCache!.refreshes, h.kvCache!.hits, runner.pastChecks], [2, 14, 2, 14, 14]);
    }
    assert.equal(h.kvCache!.bytes, 0, 'freed on finish');
    assert.equal(h.kvCache!.reservedBytes, 0);
    await engine.close();
  }
  assert.deepEqual(results.prefix, results.none);
  assert.deepEqual(results.dual, results.none);
});

test('engine: a default cache mode applies to requests without one; a folder without a cached graph refuses prefix/dual', async () => {
  const runner = new SyntheticCachedRunner();
  const engine = new DiffusionEngine(CACHED_SPEC, TOKENIZER, runner, { cachedGraph: true, defaultCache: 'dual' });
  const r = req('d', 'none');
  delete r.params.cache;
  await drain(engine.generate(r));
  assert.equal(runner.cached, 14);
  await engine.close();
  const plain = new DiffusionEngine(SPEC, TOKENIZER, runner, {});
  await assert.rejects(drain(plain.generate(req('x', 'dual'))), (err: Error & { param?: string }) => err.param === 'cache');
  await plain.close();
});

test('engine: cache memory bounds admission (the rest wait), a request that can never fit gets overloaded', async () => {
  const perSequence = 19 * kvBytesPerPosition(GEOMETRY); // canvas: BOS + 3 prompt tokens... here prefix [10,11,12] + 16
  const runner = new SyntheticCachedRunner();
  const engine = new DiffusionEngine({ ...CACHED_SPEC, bosTokenId: null }, TOKENIZER, runner, { cachedGraph: true, maxCacheBytes: 2 * perSequence });
  let most = 0;
  const watch = setInterval(async () => (most = Math.max(most, (await engine.health()).activeSequences)), 0);
  const all = await Promise.all(Array.from({ length: 6 }, (_, i) => drain(engine.generate(req(`m${i}`, 'dual')))));
  clearInterval(watch);
  assert.equal(all.length, 6);
  assert.ok(most <= 2, `at most 2 sequences held caches at once, saw ${most}`);
  const h = await engine.health();
  assert.deepEqual([h.kvCache!.bytes, h.kvCache!.reservedBytes, h.kvCache!.maxBytes], [0, 0, 2 * perSequence]);
  // n = 3 choices of one sequence's size each: they run (one after another as memory frees), not refused
  assert.equal(tokensOf(await drain(engine.generate(req('three', 'dual', { n: 3 })))).length, 3);
  // one choice larger than the whole bound could never run: 429 at once
  await assert.rejects(drain(engine.generate(req('big', 'dual', {}, { maxTokens: 64, steps: 64 }))), (err: Error & { code?: string }) => err.code === 'overloaded');
  // cache none needs no cache memory
  assert.equal(tokensOf(await drain(engine.generate(req('none', 'none', { n: 3 })))).length, 3);
  await engine.close();
});

test('engine: 100 abandoned streams leave no cache memory behind', async () => {
  const runner = new SyntheticCachedRunner();
  const engine = new DiffusionEngine(CACHED_SPEC, TOKENIZER, runner, { cachedGraph: true, maxBatchSize: 32 });
  let sawBytes = 0;
  await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      // Each client reads a few steps (the cache is filled at the first), then goes away mid-stream.
      let steps = 0;
      for await (const e of engine.generate(req(`a${i}`, i % 2 ? 'dual' : 'prefix', { n: 1 + (i % 2) }, { cfgScale: i % 3 === 0 ? 1 : 0 }))) {
        if (e.type === 'step' && ++steps === 2 + (i % 5)) {
          sawBytes = Math.max(sawBytes, engine.cacheBytes);
          break;
        }
      }
    }),
  );
  for (let i = 0; i < 100 && ((await engine.health()).activeSequences > 0 || engine.cacheBytes > 0); i++) await new Promise((r) => setTimeout(r, 5));
  const h = await engine.health();
  assert.ok(sawBytes > 0, 'caches were held while the streams ran');
  assert.deepEqual([h.activeSequences, h.waitingSequences, h.kvCache!.bytes, h.kvCache!.reservedBytes], [0, 0, 0, 0]);
  await engine.close();
});

// The same on the real model folder, when it has a cached graph (format 2): ONNX Runtime, real caches.
test('real cached graph: caches are held while streams run and all released after 100 abandoned streams', { skip: SKIP_NO_CACHED_MODEL }, async () => {
  const { engine, model } = await openTestEngine(32, { cache: 'dual' });
  const prompt = model.tokenizer.encode('Once upon a time, there was a little girl who');
  let sawBytes = 0;
  await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      let steps = 0;
      const r = req(`real-${i}`, i % 3 === 0 ? 'prefix' : 'dual', {}, { maxTokens: 16, steps: 16, blockLength: 8, ignoreEos: true });
      for await (const e of engine.generate({ ...r, promptTokenIds: prompt })) {
        if (e.type === 'step' && ++steps === 2 + (i % 4)) {
          sawBytes = Math.max(sawBytes, engine.cacheBytes);
          break;
        }
      }
    }),
  );
  for (let i = 0; i < 200 && ((await engine.health()).activeSequences > 0 || engine.cacheBytes > 0); i++) await new Promise((r) => setTimeout(r, 10));
  const h = await engine.health();
  assert.ok(sawBytes > 0);
  assert.deepEqual([h.activeSequences, h.kvCache!.bytes, h.kvCache!.reservedBytes], [0, 0, 0]);
  assert.ok(h.kvCache!.hits > 0 && h.kvCache!.refreshes >= 100);
  await engine.close();
});

test('block diffusion: the block cache grows block by block while streams run and is all released after 100 abandoned streams', { skip: existsSync(path.join(BD3_MODEL_DIR, 'model.kv.onnx')) ? false : `no model at ${BD3_MODEL_DIR}` }, async () => {
  const { engine, model } = await openTestEngine(32, { modelDir: BD3_MODEL_DIR, cache: 'auto' });
  assert.equal((await engine.health()).kvCache!.defaultMode, 'prefix', "auto on CPU is the model's exact block cache");
  const prompt = model.tokenizer.encode('Once upon a time, there was a little girl who');
  const grew: number[] = [];
  await Promise.all(
    Array.from({ length: 100 }, async (_, i) => {
      let steps = 0;
      // Blocks of 16: steps = max_tokens / 2 gives 8 steps a block; leave after 2 to 30 steps, inside later blocks too.
      const r = req(`bd3-${i}`, 'prefix', {}, { maxTokens: 64, steps: 32, blockLength: 16, ignoreEos: true });
      for await (const e of engine.generate({ ...r, promptTokenIds: prompt })) {
        if (e.type === 'step' && ++steps === 2 + ((7 * i) % 29)) {
          grew.push(engine.cacheBytes);
          break;
        }
      }
    }),
  );
  for (let i = 0; i < 200 && ((await engine.health()).activeSequences > 0 || engine.cacheBytes > 0); i++) await new Promise((r) => setTimeout(r, 10));
  const h = await engine.health();
  assert.ok(Math.max(...grew) > Math.min(...grew), 'caches grow as blocks complete');
  assert.deepEqual([h.activeSequences, h.kvCache!.bytes, h.kvCache!.reservedBytes], [0, 0, 0]);
  assert.ok(h.kvCache!.hits > 0);
  assert.equal(h.kvCache!.refreshes, 100, 'one prefill per stream, never a refresh');
  await engine.close();
});

test('appendRowCache: the cache keeps its positions and gains the query positions after them, layer by layer', () => {
  // present_kv [layers 1, 2, N 2, kvHeads 1, Q 3, headDim 2]: value = 100 * row + 10 * query index + dim (+ 1000 for values).
  const dims = [1, 2, 2, 1, 3, 2];
  const present = new Float32Array(24);
  for (let kv = 0; kv < 2; kv++) for (let r = 0; r < 2; r++) for (let q = 0; q < 3; q++) for (let d = 0; d < 2; d++) present[((kv * 2 + r) * 3 + q) * 2 + d] = 1000 * kv + 100 * r + 10 * q + d;
  const cache: RowCache = { data: new Float32Array([-1, -2, -3, -4]), length: 1 }; // keys [-1, -2], values [-3, -4]
  const grown = appendRowCache(cache, present, dims, 1, 1, 2);
  assert.equal(grown.length, 3);
  assert.deepEqual([...grown.data], [-1, -2, 110, 111, 120, 121, -3, -4, 1110, 1111, 1120, 1121]);
});
