// The ONNX Runtime worker (src/engine/onnx_session.ts, onnx_worker.ts) on the real cached graph: a cached step's past
// keys/values cross to the worker once per block and are reused while the feeds name the same past.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { buildBatch, type GraphFeeds } from '../../src/engine/batch.js';
import type { HeadOutputs } from '../../src/engine/head.js';
import { buildStepBatch, extractRowCache, fullPassFeeds } from '../../src/engine/kv_cache.js';
import { loadModelFolder, type ModelFolder } from '../../src/engine/model_folder.js';
import { OnnxGraphRunner } from '../../src/engine/onnx_session.js';
import { Sequence } from '../../src/engine/sequence.js';
import { params } from './helpers.js';
import { MODEL_DIR, SKIP_NO_MODEL } from './model_fixture.js';

let model: ModelFolder;
let runner: OnnxGraphRunner;
const skip = SKIP_NO_MODEL;

before(async () => {
  if (skip) return;
  model = await loadModelFolder(MODEL_DIR);
  const cachedPath = model.cachedPath('fp32');
  if (cachedPath === null) throw new Error(`${MODEL_DIR} has no cached graph`);
  runner = await OnnxGraphRunner.open({ modelPath: cachedPath, provider: 'cpu', threads: 2 });
});
after(async () => runner?.close());

/** Feeds of a dual-cache step inside block 0 of a real prompt, with a counter of how often past_kv was built. */
async function dualStepFeeds(): Promise<{ feeds: GraphFeeds; builds: () => number }> {
  const geometry = model.spec.cached!;
  const sequence = new Sequence({
    prefix: model.tokenizer.encode('The old man looked at the sea and said'),
    suffix: [],
    params: params({ maxTokens: 16, steps: 16, blockLength: 8, cache: 'dual' }),
    maskTokenId: model.spec.maskTokenId,
    eosTokenIds: model.spec.eosTokenIds,
    seed: 1,
  });
  const full = buildBatch([{ sequence, positions: sequence.wantedPositions() }], model.spec.padTokenId);
  const { head } = await runner.run(fullPassFeeds(full.feeds, geometry, true));
  const cache = extractRowCache(head.present!.data, head.present!.dims, 0, 0, sequence.canvas.length);
  sequence.stepInBlock = 1;
  const { feeds } = buildStepBatch([{ sequence, positions: sequence.wantedPositions(), caches: [cache] }], model.spec.padTokenId, geometry);
  let count = 0;
  const build = feeds.cached!.buildPast;
  return { feeds: { ...feeds, cached: { ...feeds.cached!, buildPast: () => (count++, build()) } }, builds: () => count };
}

const outputs = (h: HeadOutputs) => [[...h.topkIds], [...h.topkLogits], [...h.logsumexp]];

test('a past the worker holds is not built or sent again, and gives the same outputs; release drops it', { skip }, async () => {
  const { feeds, builds } = await dualStepFeeds();
  const first = await runner.run(feeds);
  assert.equal(builds(), 1);
  const second = await runner.run(feeds);
  assert.equal(builds(), 1, 'the next step of the block reuses the held past');
  assert.deepEqual(outputs(second.head), outputs(first.head));
  runner.release();
  const third = await runner.run(feeds);
  assert.equal(builds(), 2, 'after release the past is sent again');
  assert.deepEqual(outputs(third.head), outputs(first.head));
  const other = await dualStepFeeds();
  await runner.run(other.feeds);
  assert.equal(other.builds(), 1, 'another past (a new cache) is built');
});
