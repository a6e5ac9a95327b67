// The WebGPU provider with the caches on the device (src/engine/device_cache.ts, kv_store.ts): start-up errors that
// name what is missing, transfers counted by tensor (no past_kv ever uploaded), device tensors freed however a
// sequence ends, device memory bounded. On a machine without a GPU it runs on Mesa's lavapipe (scripts/test.sh).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { DiffusionEngine } from '../../src/engine/engine.js';
import type { ModelFolder } from '../../src/engine/model_folder.js';
import { EngineError, type EngineHealth } from '../../src/engine/types.js';
import { gpuDeviceNodes, vulkanProblem } from '../../src/engine/vulkan.js';
import { BD3_MODEL_DIR, collect, finishes, MODEL_DIR, openTestEngine, request, ROOT } from './model_fixture.js';
import { params } from './helpers.js';

/** The engine's health once the worker has answered every free (frees are messages; their replies come after). */
async function settledHealth(engine: DiffusionEngine, want: (h: EngineHealth) => boolean): Promise<EngineHealth> {
  let health = await engine.health();
  for (let i = 0; i < 200 && !want(health); i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    health = await engine.health();
  }
  return health;
}

describe('WebGPU start-up', () => {
  test('without a Vulkan driver, webgpu fails at start naming what is missing', () => {
    const env = { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json' };
    assert.match(vulkanProblem({}, env) ?? '', /no Vulkan driver/);
    // In a process of its own: Dawn keeps its first adapter search for the life of the process.
    const engineModule = pathToFileURL(path.join(ROOT, 'src/engine/engine.ts')).href;
    const script = `const { openEngine } = await import(${JSON.stringify(engineModule)});
      await openEngine({ modelDir: ${JSON.stringify(MODEL_DIR)}, provider: 'webgpu', threads: 1 }).then(
        () => console.log('opened'), (err) => console.log(err.message));`;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env, encoding: 'utf8', timeout: 60_000 });
    assert.match(child.stdout, /cannot open .*model\.device\.onnx with the WebGPU execution provider: no Vulkan driver \(no ICD manifest/);
  });

  test('a GPU is told by its device nodes, not by driver manifests', () => {
    const dev = mkdtempSync(path.join(os.tmpdir(), 'dev-'));
    try {
      assert.deepEqual(gpuDeviceNodes(dev), []);
      assert.match(vulkanProblem({ hardwareOnly: true, devDir: dev }) ?? '', /no GPU device/);
      mkdirSync(path.join(dev, 'dri'));
      writeFileSync(path.join(dev, 'dri', 'card0'), '');
      writeFileSync(path.join(dev, 'nvidiactl'), '');
      assert.deepEqual(gpuDeviceNodes(dev), [], 'neither a card node nor nvidiactl is a render device');
      writeFileSync(path.join(dev, 'dri', 'renderD128'), '');
      writeFileSync(path.join(dev, 'nvidia0'), '');
      assert.deepEqual(gpuDeviceNodes(dev), [path.join(dev, 'dri', 'renderD128'), path.join(dev, 'nvidia0')]);
    } finally {
      rmSync(dev, { recursive: true, force: true });
    }
  });

  const noGpu = gpuDeviceNodes().length === 0;
  test('auto skips WebGPU without a GPU device (lavapipe) and says so in one warning', { skip: noGpu ? false : 'this machine has a GPU' }, async () => {
    const warnings: string[] = [];
    const { engine } = await openTestEngine(4, { provider: 'auto', warn: (line) => warnings.push(line) });
    try {
      assert.equal((await engine.health()).provider, 'cpu');
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /CUDA: .*WebGPU: no GPU device .*lavapipe.*; running on CPU/);
    } finally {
      await engine.close();
    }
  });
});

describe('WebGPU with the device graph', () => {
  let engine: DiffusionEngine;
  let model: ModelFolder;
  before(async () => {
    ({ engine, model } = await openTestEngine(16, { provider: 'webgpu', cache: 'dual' }));
  });
  after(async () => engine?.close());

  test('the device graph runs and caches default to dual', async () => {
    const health = await engine.health();
    assert.equal(health.provider, 'webgpu');
    assert.equal(health.kvCache?.defaultMode, 'dual');
    assert.equal(health.device?.tensors, 0);
  });

  test('cached steps upload no past_kv: the cache stays on the device; only the head comes back', async () => {
    const prompt = model.tokenizer.encode('Once upon a time there was');
    const before = (await engine.health()).device!;
    for (const cache of ['prefix', 'dual'] as const) {
      const events = await collect(engine.generate(request(`transfers-${cache}`, prompt, params({ maxTokens: 24, steps: 24, blockLength: 8, cache }), { n: 2 })));
      assert.equal(finishes(events).length, 2);
    }
    const after = await settledHealth(engine, (h) => h.device!.tensors === 0);
    const uploaded = (tensor: string) => (after.device!.hostToDevice[tensor] ?? 0) - (before.hostToDevice[tensor] ?? 0);
    assert.ok(after.kvCache!.hits > 0 && after.kvCache!.refreshes > 0);
    assert.equal(uploaded('past_kv'), 0, 'no past_kv byte crossed to the device');
    assert.ok(uploaded('input_ids') > 0 && uploaded('attention_mask') > 0, 'the small per-step inputs are counted');
    assert.deepEqual(Object.keys(after.device!.deviceToHost).sort(), ['sum_exp_rest', 'sum_exp_shifted', 'top_count', 'topk_ids', 'topk_logits']);
    assert.equal(after.device!.tensors, 0, 'finished sequences freed their device caches');
    assert.equal(after.kvCache!.bytes, 0);
  });

  test('500 abandoned cached streams leave no device tensor behind', async () => {
    const prompt = model.tokenizer.encode('The old man');
    const abandon = async (i: number) => {
      // Each stream is dropped at a different point: before its first step, after one, or after a few.
      const stopAfter = i % 3;
      let seen = 0;
      try {
        for await (const event of engine.generate(request(`abandon-${i}`, prompt, params({ maxTokens: 16, steps: 16, blockLength: 8, cache: i % 2 ? 'dual' : 'prefix' })))) {
          if (event.type === 'step' && ++seen > stopAfter) break;
          if (stopAfter === 0) break;
        }
      } catch (err) {
        assert.ok(err instanceof EngineError && err.code === 'cancelled', String(err));
      }
    };
    const runs = Array.from({ length: 500 }, (_, i) => abandon(i));
    // Abandoned while running, not only while waiting: some streams held a cache when they were dropped.
    await Promise.all(runs);
    const health = await settledHealth(engine, (h) => h.device!.tensors === 0 && h.activeSequences === 0);
    assert.ok(health.kvCache!.refreshes > 0);
    assert.equal(health.activeSequences, 0);
    assert.equal(health.device!.tensors, 0, 'every kept block was disposed of on the device');
    assert.equal(health.kvCache!.bytes, 0);
    assert.equal(health.kvCache!.reservedBytes, 0);
  });
});

test('device cache memory is bounded: a choice that could never fit is refused, not run out of memory', async () => {
  const { engine, model } = await openTestEngine(4, { provider: 'webgpu', cache: 'dual', maxCacheBytes: 1024 * 1024 });
  try {
    const prompt = model.tokenizer.encode('Once upon a time');
    await assert.rejects(collect(engine.generate(request('too-big', prompt, params({ maxTokens: 256, steps: 256, blockLength: 8, cache: 'dual' })))), (err: unknown) => {
      assert.ok(err instanceof EngineError && err.code === 'overloaded');
      assert.match((err as Error).message, /exceeds the engine's cache memory/);
      return true;
    });
    // Without a cache the same request needs no device cache memory.
    const events = await collect(engine.generate(request('no-cache', prompt, params({ maxTokens: 16, steps: 16, blockLength: 8, cache: 'none' }))));
    assert.equal(finishes(events).length, 1);
  } finally {
    await engine.close();
  }
});

test('the block diffusion model grows its cache on the device and frees it', async () => {
  const { engine, model } = await openTestEngine(8, { modelDir: BD3_MODEL_DIR, provider: 'webgpu', cache: 'prefix' });
  try {
    const prompt = model.tokenizer.encode('Once upon a time');
    const runs = [1, 2, 3].map((seed) => collect(engine.generate(request(`bd3-${seed}`, prompt, params({ maxTokens: 40, steps: 40, blockLength: 16, cache: 'prefix', temperature: 1, seed })))));
    assert.equal((await Promise.all(runs)).flatMap(finishes).length, 3);
    const health = await settledHealth(engine, (h) => h.device!.tensors === 0);
    assert.equal(health.device!.hostToDevice.past_kv ?? 0, 0);
    assert.equal(health.device!.tensors, 0);
  } finally {
    await engine.close();
  }
});

