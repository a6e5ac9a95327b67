// Which graph of a model folder the engine opens (MODEL_PRECISION), and that health() reports it.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openEngine, resolvePrecision } from '../../src/engine/engine.js';
import { MODEL_DIR } from './model_fixture.js';

test('auto runs fp16 only on CUDA and only when the folder has an fp16 graph', () => {
  assert.equal(resolvePrecision('auto', 'cuda', true), 'fp16');
  assert.equal(resolvePrecision('auto', 'cuda', false), 'fp32');
  assert.equal(resolvePrecision('auto', 'webgpu', true), 'fp16');
  assert.equal(resolvePrecision('auto', 'webgpu', false), 'fp32');
  assert.equal(resolvePrecision('auto', 'cpu', true), 'fp32');
  assert.equal(resolvePrecision('auto', 'auto', true), 'fp32'); // provider auto may fall back to CPU
  assert.equal(resolvePrecision('fp16', 'cpu', true), 'fp16');
  assert.equal(resolvePrecision('fp32', 'cuda', true), 'fp32');
});

test('the tiny model opens its fp32 graph and health() says so; asking for fp16 names the missing field', async () => {
  const { engine, modelPath } = await openEngine({ modelDir: MODEL_DIR, provider: 'cpu', threads: 1 });
  try {
    // A format-2 folder runs its cached graph (it also computes full passes); a format-1 folder its model.onnx.
    assert.match(modelPath, /model(\.kv)?\.onnx$/);
    const health = await engine.health();
    assert.equal(health.provider, 'cpu');
    assert.equal(health.precision, 'fp32');
  } finally {
    await engine.close();
  }
  await assert.rejects(openEngine({ modelDir: MODEL_DIR, provider: 'cpu', precision: 'fp16' }), /onnx\.fp16" is null/);
});
