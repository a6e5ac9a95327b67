// The engine on the real model through ONNX Runtime in a worker thread: batching invariance, seeded reproducibility,
// execution providers, and an event loop that stays free while the graph runs.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { DiffusionEngine } from '../../src/engine/engine.js';
import type { ModelFolder } from '../../src/engine/model_folder.js';
import { OnnxGraphRunner } from '../../src/engine/onnx_session.js';
import { buildBatch } from '../../src/engine/batch.js';
import { Sequence } from '../../src/engine/sequence.js';
import { collect, finishes, MODEL_DIR, openTestEngine, request, SKIP_NO_MODEL } from './model_fixture.js';
import { params } from './helpers.js';
import path from 'node:path';

let engine: DiffusionEngine;
let model: ModelFolder;

before(async () => {
  if (SKIP_NO_MODEL) return;
  ({ engine, model } = await openTestEngine(6));
});
after(async () => engine?.close());

const PROMPTS = ['The man said', 'Once upon a time, in a land far away, there lived a king who', 'Yes', 'It was the best of times, it was'];

test('greedy results are the same alone and batched (mixed lengths and settings, admitted at different steps)', { skip: SKIP_NO_MODEL }, async () => {
  const settings = [
    params({ maxTokens: 16, steps: 16, blockLength: 8 }),
    params({ maxTokens: 24, steps: 12, blockLength: 8, remasking: 'margin' }),
    params({ maxTokens: 32, steps: 32, blockLength: 32, threshold: 0.9 }),
    params({ maxTokens: 16, steps: 16, blockLength: 16, cfgScale: 1 }),
  ];
  const requests = PROMPTS.map((prompt, i) => request(`b${i}`, model.tokenizer.encode(prompt), settings[i]));
  const alone = [];
  for (const r of requests) alone.push(finishes(await collect(engine.generate(r)))[0].tokenIds);
  // Max batch 6 rows: the guided request (2 rows) waits for a free slot, so requests join at different steps.
  const together = await Promise.all(
    [...requests, ...requests].map((r, i) => collect(engine.generate({ ...r, id: `${r.id}-together-${i}` }))),
  );
  assert.deepEqual(together.map((events) => finishes(events)[0].tokenIds), [...alone, ...alone]);
});

test('seeded sampling is reproducible alone and batched', { skip: SKIP_NO_MODEL }, async () => {
  const p = params({ maxTokens: 16, steps: 16, blockLength: 8, temperature: 0.9, seed: 1234, remasking: 'random' });
  const ids = model.tokenizer.encode(PROMPTS[0]);
  const first = finishes(await collect(engine.generate(request('s1', ids, p, { n: 2 })))).map((f) => f.tokenIds);
  const [again] = await Promise.all([
    collect(engine.generate(request('s2', ids, p, { n: 2 }))),
    collect(engine.generate(request('s3', model.tokenizer.encode(PROMPTS[1]), params({ maxTokens: 16, steps: 8, blockLength: 8 })))),
  ]);
  assert.deepEqual(finishes(again).map((f) => f.tokenIds), first);
});

test('the event loop stays free while the graph runs in the worker thread', { skip: SKIP_NO_MODEL }, async () => {
  const runner = await OnnxGraphRunner.open({ modelPath: path.join(MODEL_DIR, 'model.onnx'), provider: 'cpu', threads: 1 });
  try {
    const sequence = new Sequence({
      prefix: [model.spec.bosTokenId ?? 0, ...model.tokenizer.encode(PROMPTS[1])],
      suffix: [],
      params: params({ maxTokens: 128, steps: 128, blockLength: 128 }),
      maskTokenId: model.spec.maskTokenId,
      eosTokenIds: model.spec.eosTokenIds,
      seed: 0,
    });
    const { feeds } = buildBatch(Array.from({ length: 4 }, () => ({ sequence, positions: sequence.wantedPositions() })), model.spec.padTokenId);
    let done = false;
    let turns = 0;
    const spin = (): void => {
      if (done) return;
      turns++;
      setImmediate(spin);
    };
    const run = runner.run(feeds).finally(() => (done = true));
    spin();
    const { head, runMs } = await run;
    assert.equal(head.rows, 4);
    assert.ok(turns > 1, `the main thread turned ${turns} times during a ${runMs.toFixed(0)} ms run`);
  } finally {
    await runner.close();
  }
});

test('providers: cuda without CUDA is a clear start-up error; auto falls back to CPU with one warning', { skip: SKIP_NO_MODEL }, async () => {
  const modelPath = path.join(MODEL_DIR, 'model.onnx');
  let cuda: OnnxGraphRunner | null = null;
  try {
    cuda = await OnnxGraphRunner.open({ modelPath, provider: 'cuda', threads: 1 });
  } catch (err) {
    assert.match((err as Error).message, /cannot open .*model\.onnx with the CUDA execution provider \(device 0\)/);
  }
  if (cuda !== null) {
    assert.equal(cuda.provider, 'cuda');
    await cuda.close();
    return;
  }
  const warnings: string[] = [];
  const auto = await OnnxGraphRunner.open({ modelPath, provider: 'auto', threads: 1, warn: (line) => warnings.push(line) });
  assert.equal(auto.provider, 'cpu');
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /CUDA.*running on CPU/);
  await auto.close();
  assert.equal(auto.ok, false);
  await assert.rejects(auto.run({} as never), /closed/);
  await assert.rejects(OnnxGraphRunner.open({ modelPath: '/nonexistent/model.onnx', provider: 'cpu' }), /cannot open \/nonexistent\/model\.onnx/);
});
