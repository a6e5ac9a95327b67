// Quantized model folders (docs/models.md, "Quantized folders"): dllm.json's `quantization` validated at start, by
// field; models/tiny-llada quantized by `python3 -m dllm.convert --from-folder … --quantize` (int8 and int4 linear layers as com.microsoft
// MatMulNBits) loads and generates on the CPU provider, greedy text close to the float model's; /v1/models reports it;
// and WebGPU (Mesa's lavapipe here) runs the quantized device graph.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openEngine } from '../../src/engine/engine.js';
import { defaultSamplingParams, ModelFolderError, parseModelSpec } from '../../src/engine/model_folder.js';
import type { CacheMode } from '../../src/engine/types.js';
import { vulkanProblem } from '../../src/engine/vulkan.js';
import { startEmbedded } from '../helpers/embedded.js';
import { collect, finishes, MODEL_DIR, ROOT, SKIP_NO_MODEL } from './model_fixture.js';
import { DLLM_JSON } from './helpers.js';

const SPEC = {
  ...DLLM_JSON,
  format: 'dllm-onnx/2',
  generation_defaults: { ...DLLM_JSON.generation_defaults, block_length: 8 },
  cached: { fp32: 'model.kv.onnx', fp16: null, layers: 2, kv_heads: 2, head_dim: 16 },
};
const INT4 = { bits: 4, block_size: 32, accuracy_level: 4, layers: 'linear' };

describe('dllm.json quantization', () => {
  test('is read into the spec; absent or null means float weights', () => {
    assert.deepEqual(parseModelSpec({ ...SPEC, quantization: INT4 }).quantization, { bits: 4, blockSize: 32, accuracyLevel: 4, layers: 'linear' });
    assert.equal(parseModelSpec({ ...SPEC, quantization: { ...INT4, bits: 8, block_size: 256, accuracy_level: 0 } }).quantization?.bits, 8);
    assert.equal(parseModelSpec(SPEC).quantization, null);
    assert.equal(parseModelSpec({ ...SPEC, quantization: null }).quantization, null);
  });

  test('what MatMulNBits or onnxruntime cannot take is refused at start, naming the field', () => {
    const cases: [unknown, RegExp][] = [
      [{ ...INT4, bits: 3 }, /field "quantization\.bits" must be one of 4, 8, got 3/],
      [{ ...INT4, bits: '4' }, /field "quantization\.bits" must be one of 4, 8, got "4"/],
      [{ ...INT4, block_size: 48 }, /field "quantization\.block_size" must be one of 16, 32, 64, 128, 256, got 48/],
      [{ ...INT4, block_size: 512 }, /field "quantization\.block_size" must be one of 16, 32, 64, 128, 256, got 512/],
      [{ ...INT4, accuracy_level: 5 }, /field "quantization\.accuracy_level" must be one of 0, 1, 2, 3, 4, got 5/],
      [{ ...INT4, layers: 'all' }, /field "quantization\.layers" must be one of linear, got "all"/],
      [{ bits: 4, block_size: 32, accuracy_level: 4 }, /field "quantization\.layers" must be one of linear, got nothing/],
      [4, /field "quantization" must be an object, got 4/],
    ];
    for (const [quantization, message] of cases) {
      assert.throws(() => parseModelSpec({ ...SPEC, quantization }, 'dllm.json'), (err: unknown) => err instanceof ModelFolderError && message.test(err.message), String(message));
    }
  });
});

// quality.py's PROMPTS: everyday openings the float model completes with ordinary text.
const PROMPTS = [
  'The weather this morning was',
  'My favourite way to spend a Sunday is',
  'When I got home from work, I',
  'The best thing about living in a small town is',
  'Before the meeting started, she',
  'Every summer our family used to',
  'The old house at the end of our street',
  'After dinner we decided to',
  'The train was late again, so',
  'My grandmother always told me that',
  'On the first day of school, the children',
  'The little shop on the corner sells',
  'It had been raining for three days when',
  'The doctor looked at the test results and',
  'If you want to learn to cook, you should',
  'We walked along the river until',
];

const PYTHON = process.env.PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');

/** models/tiny-llada with its linear layers quantized (dllm.convert.quantize_folder), in dir/int<bits>-a<level>. */
function quantize(dir: string, variants: [bits: 4 | 8, accuracyLevel: number][]): string[] {
  const outs = variants.map(([bits, level]) => path.join(dir, `int${bits}-a${level}`));
  const script = `import sys
from dllm.convert import quantize_folder
from dllm.quantize import Quantization
for out, bits, level in zip(sys.argv[2::3], sys.argv[3::3], sys.argv[4::3]):
    quantize_folder(sys.argv[1], out, Quantization(int(bits), 32, int(level)))`;
  const args = ['-c', script, MODEL_DIR, ...variants.flatMap(([bits, level], i) => [outs[i], String(bits), String(level)])];
  const r = spawnSync(PYTHON, args, { cwd: path.join(ROOT, 'models'), encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, r.stderr);
  return outs;
}

/** Greedy completions (32 tokens, blocks of 8) of PROMPTS, batched, on the CPU provider. */
async function greedy(modelDir: string, cache: CacheMode): Promise<number[][]> {
  const { engine, model } = await openEngine({ modelDir, provider: 'cpu', threads: 2, maxBatchSize: 16, cache });
  try {
    const params = { ...defaultSamplingParams(model.spec), maxTokens: 32, steps: 32, blockLength: 8, cache, ignoreEos: true };
    const runs = PROMPTS.map(async (text, i) => {
      const events = await collect(engine.generate({ id: `q${i}`, promptTokenIds: model.tokenizer.encode(text), suffixTokenIds: [], params, n: 1, includeCanvas: false }));
      return finishes(events)[0].tokenIds;
    });
    return await Promise.all(runs);
  } finally {
    await engine.close();
  }
}

function agreement(reference: number[][], got: number[][]): { same: number; tokens: number; of: number } {
  let tokens = 0;
  let of = 0;
  got.forEach((ids, i) => ids.forEach((t, j) => ((of += 1), (tokens += reference[i][j] === t ? 1 : 0))));
  return { same: got.filter((ids, i) => ids.join() === reference[i].join()).length, tokens, of };
}

describe('a quantized tiny-llada', { skip: SKIP_NO_MODEL }, () => {
  let work: string;
  const folders: Record<string, string> = {};
  before(() => {
    work = mkdtempSync(path.join(os.tmpdir(), 'dllm-quantized-'));
    [folders.int8a1, folders.int8a4, folders.int4a4] = quantize(work, [[8, 1], [8, 4], [4, 4]]);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  test('generates on the CPU provider; int8 greedy text matches the float model on most prompts', async () => {
    const reference = await greedy(MODEL_DIR, 'none');
    const scores: Record<string, ReturnType<typeof agreement>> = {};
    for (const [name, cache] of [['int8a1', 'none'], ['int8a4', 'none'], ['int4a4', 'dual']] as const) {
      const s = (scores[name] = agreement(cache === 'none' ? reference : await greedy(MODEL_DIR, cache), await greedy(folders[name], cache)));
      console.log(`# cache ${cache}, ${name}: ${s.same}/${PROMPTS.length} completions identical to fp32, ${s.tokens}/${s.of} tokens`);
      assert.equal(s.of, PROMPTS.length * 32, `${name}: every prompt completed with 32 tokens`);
    }
    // int8 weights with float32 compute: the text of nearly every prompt is the float model's (measured 15/16);
    // int8 compute (accuracy level 4) also rounds the activations (measured 10/16); int4 diverges on this 3.7M-parameter
    // model (bench/quantize.md has the losses behind it).
    assert.ok(scores.int8a1.same >= 12, `int8, accuracy level 1: ${scores.int8a1.same}/16`);
    assert.ok(scores.int8a4.same >= 6, `int8, accuracy level 4: ${scores.int8a4.same}/16`);
    assert.ok(scores.int8a4.tokens >= 0.7 * scores.int8a4.of);
  });

  test('/v1/models reports the quantization; a float model reports null', async () => {
    for (const [dir, expected] of [[folders.int4a4, INT4], [MODEL_DIR, null]] as const) {
      const s = await startEmbedded({ MODEL_DIR: dir });
      try {
        const list = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: { quantization: unknown }[] };
        assert.deepEqual(list.data[0].quantization, expected);
        const card = (await (await fetch(`${s.url}/v1/models/tiny-llada`)).json()) as { quantization: unknown };
        assert.deepEqual(card.quantization, expected);
      } finally {
        await s.stop();
      }
    }
  });

  const noVulkan = vulkanProblem();
  test('WebGPU runs the quantized device graph (MatMulNBits on the device): one tiny generation', { skip: noVulkan ?? false }, async () => {
    const { engine, model, modelPath } = await openEngine({ modelDir: folders.int4a4, provider: 'webgpu', threads: 1, cache: 'dual' });
    try {
      assert.equal((await engine.health()).provider, 'webgpu');
      assert.ok(modelPath.endsWith('model.device.onnx'));
      const params = { ...defaultSamplingParams(model.spec), maxTokens: 8, steps: 8, blockLength: 8, cache: 'dual' as const, ignoreEos: true };
      const events = await collect(engine.generate({ id: 'w', promptTokenIds: model.tokenizer.encode(PROMPTS[0]), suffixTokenIds: [], params, n: 1, includeCanvas: false }));
      assert.equal(finishes(events)[0].tokenIds.length, 8);
    } finally {
      await engine.close();
    }
  });
});
