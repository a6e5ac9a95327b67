import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultSamplingParams, loadModelFolder, ModelFolderError, parseModelSpec } from '../../src/engine/model_folder.js';
import { validateRequest, validateSamplingParams } from '../../src/engine/validation.js';
import { EngineError } from '../../src/engine/types.js';
import { MODEL_DIR, ROOT, SKIP_NO_MODEL } from './model_fixture.js';
import { DLLM_JSON, params, SPEC } from './helpers.js';

const VALID = DLLM_JSON;

test('parseModelSpec reads dllm.json into camelCase', () => {
  const spec = parseModelSpec(VALID);
  assert.equal(spec.maskTokenId, 2);
  assert.deepEqual(spec.eosTokenIds, [1, 5]);
  assert.equal(spec.generationDefaults.blockLength, 32);
  assert.equal(defaultSamplingParams(spec).steps, 64);
});

test('parseModelSpec reads a block diffusion folder: its block size is its only block length', () => {
  const bd3 = { ...VALID, architecture: 'block_diffusion', block_size: 16, generation_defaults: { ...VALID.generation_defaults, block_length: 16 } };
  const spec = parseModelSpec(bd3);
  assert.equal(spec.architecture, 'block_diffusion');
  assert.equal(spec.blockSize, 16);
  assert.equal(parseModelSpec(VALID).blockSize, null);
  assert.throws(() => parseModelSpec({ ...bd3, block_size: undefined }), /"block_size"/);
  assert.throws(() => parseModelSpec({ ...bd3, generation_defaults: VALID.generation_defaults }), /block_length must equal block_size/);
});

test('parseModelSpec errors name the file and the field', () => {
  const bad: [object, RegExp][] = [
    [{ ...VALID, format: 'other/2' }, /"format"/],
    [{ ...VALID, vocab_size: 'big' }, /"vocab_size"/],
    [{ ...VALID, mask_token_id: 5000 }, /"mask_token_id".*vocab_size/],
    [{ ...VALID, eos_token_ids: [] }, /"eos_token_ids"/],
    [{ ...VALID, topk: 9999 }, /"topk"/],
    [{ ...VALID, architecture: 'gpt' }, /"architecture"/],
    [{ ...VALID, generation_defaults: { ...VALID.generation_defaults, remasking: 'x' } }, /"generation_defaults.remasking"/],
    [{ ...VALID, onnx: {} }, /"onnx.fp32"/],
    [[], /must be a JSON object/],
  ];
  for (const [raw, message] of bad) {
    assert.throws(() => parseModelSpec(raw, '/m/dllm.json'), (err: unknown) => err instanceof ModelFolderError && message.test(err.message) && err.message.startsWith('/m/dllm.json'));
  }
});

test('validateSamplingParams refuses out-of-range values with the field name', () => {
  const bad: [object, string][] = [
    [{ threshold: 0 }, 'threshold'],
    [{ threshold: 1.5 }, 'threshold'],
    [{ factor: -1 }, 'factor'],
    [{ topP: 0 }, 'top_p'],
    [{ cfgScale: -1 }, 'cfg_scale'],
    [{ seed: -3 }, 'seed'],
    [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ stop: [''] }, 'stop'],
    [{ steps: 0 }, 'steps'],
  ];
  for (const [p, param] of bad) {
    assert.throws(() => validateSamplingParams(SPEC, params(p)), (err: unknown) => err instanceof EngineError && err.param === param, param);
  }
  validateSamplingParams(SPEC, params({ threshold: 0.9, temperature: 0.7, topP: 0.9, topK: 4, seed: 1, stop: ['x'], logprobs: 4 }));
});

test('block diffusion: what such a model cannot do is refused with the field name; its span ends on a block boundary', () => {
  const bd3 = { ...SPEC, architecture: 'block_diffusion' as const, blockSize: 8, format: 'dllm-onnx/2', cached: { fp32: 'model.kv.onnx', fp16: null, layers: 1, kvHeads: 1, headDim: 4 } };
  const req = (p: object, extra: object = {}) => ({ id: 'r', promptTokenIds: [20, 21], suffixTokenIds: [], params: params({ blockLength: 8, ...p }), n: 1, includeCanvas: false, ...extra });
  const refused: [object, object, string][] = [
    [{ blockLength: 4 }, {}, 'block_length'],
    [{ cfgScale: 1.5 }, {}, 'cfg_scale'],
    [{ cache: 'dual' }, {}, 'cache'],
    [{}, { suffixTokenIds: [30] }, 'suffix'],
  ];
  for (const [p, extra, param] of refused) {
    assert.throws(() => validateRequest(bd3, req(p, extra)), (err: unknown) => err instanceof EngineError && err.param === param, param);
  }
  // steps need not divide into blocks: the blocks depend on where the prompt ends.
  validateRequest(bd3, req({ maxTokens: 16, steps: 7, cache: 'prefix' }));
  // BOS + 2 prompt tokens = 3; context 128: the span is max_tokens long, not rounded to blocks.
  validateRequest(bd3, req({ maxTokens: 125, steps: 125 }));
  assert.throws(() => validateRequest(bd3, req({ maxTokens: 126, steps: 126 })), (err: unknown) => err instanceof EngineError && err.code === 'context_length_exceeded');
  validateRequest(bd3, req({ maxTokens: 3, steps: 3 }));
});

test('loadModelFolder: missing and malformed files are named', { skip: SKIP_NO_MODEL }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dllm-folder-'));
  try {
    await assert.rejects(loadModelFolder(dir), /dllm\.json: cannot read \(ENOENT\)/);
    await writeFile(path.join(dir, 'dllm.json'), '{ not json');
    await assert.rejects(loadModelFolder(dir), /dllm\.json: not valid JSON/);
    await writeFile(path.join(dir, 'dllm.json'), JSON.stringify(VALID));
    await assert.rejects(loadModelFolder(dir), /tokenizer\.json: cannot read/);
    await copyFile(path.join(MODEL_DIR, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    await assert.rejects(loadModelFolder(dir), /model\.onnx: missing \(named by .*"onnx\.fp32"\)/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('loadModelFolder: the real folder loads; the tokenizer round-trips text and adds no special tokens', { skip: SKIP_NO_MODEL }, async () => {
  const folder = await loadModelFolder(MODEL_DIR);
  const raw = JSON.parse(await readFile(path.join(MODEL_DIR, 'dllm.json'), 'utf8'));
  assert.equal(folder.spec.name, raw.name);
  const text = 'The quick brown fox — jumps over 13 lazy dogs.\nÉté!';
  const ids = folder.tokenizer.encode(text);
  assert.ok(!ids.includes(folder.spec.bosTokenId!));
  assert.equal(folder.tokenizer.decode(ids), text);
  assert.equal(folder.tokenizer.decode([]), '');
  if (raw.onnx.fp16 === null) assert.throws(() => folder.onnxPath('fp16'), /fp16/);
});

test('parseModelSpec reads a dream folder: shifted logits, the whole span as one block, Dream sampler defaults', () => {
  const dream = { ...VALID, architecture: 'dream', generation_defaults: { ...VALID.generation_defaults, block_length: null, alg: 'entropy', alg_temp: 0, eps: 0.001 } };
  const spec = parseModelSpec(dream);
  assert.deepEqual([spec.architecture, spec.logitsShift, spec.generationDefaults.blockLength, spec.generationDefaults.alg], ['dream', 1, null, 'entropy']);
  const p = defaultSamplingParams(spec);
  assert.deepEqual([p.blockLength, p.alg, p.algTemp, p.eps], [64, 'entropy', 0, 0.001]);
  assert.equal(parseModelSpec(VALID).logitsShift, 0);
  // Only a dream folder may leave the block length to the span; eps and alg are checked by name.
  assert.throws(() => parseModelSpec({ ...VALID, generation_defaults: { ...VALID.generation_defaults, block_length: null } }), /generation_defaults.block_length/);
  assert.throws(() => parseModelSpec({ ...dream, generation_defaults: { ...dream.generation_defaults, eps: 1 } }), /generation_defaults.eps/);
  assert.throws(() => parseModelSpec({ ...dream, generation_defaults: { ...dream.generation_defaults, alg: 'best' } }), /generation_defaults.alg/);
});

test('parseModelSpec reads frequency and presence penalties in generation_defaults: absent or null is 0, OpenAI\'s range', () => {
  const none = parseModelSpec(VALID);
  assert.deepEqual([none.generationDefaults.frequencyPenalty, none.generationDefaults.presencePenalty], [0, 0]);
  assert.ok(!('frequencyPenalty' in defaultSamplingParams(none)) && !('presencePenalty' in defaultSamplingParams(none)));
  const set = parseModelSpec({ ...VALID, generation_defaults: { ...VALID.generation_defaults, frequency_penalty: 0.3, presence_penalty: null } });
  assert.deepEqual([set.generationDefaults.frequencyPenalty, set.generationDefaults.presencePenalty], [0.3, 0]);
  assert.equal(defaultSamplingParams(set).frequencyPenalty, 0.3);
  for (const field of ['frequency_penalty', 'presence_penalty']) {
    for (const value of [2.5, -2.01, 'high']) {
      assert.throws(() => parseModelSpec({ ...VALID, generation_defaults: { ...VALID.generation_defaults, [field]: value } }), new RegExp(`generation_defaults.${field}`));
    }
  }
});

test('every model folder committed under models/ loads, with its card', async () => {
  const models = path.join(ROOT, 'models');
  const folders = (await readdir(models)).filter((name) => existsSync(path.join(models, name, 'dllm.json')));
  assert.ok(folders.includes('tiny-llada') && folders.includes('tiny-dream-random'), folders.join(', '));
  for (const name of folders) {
    const folder = await loadModelFolder(path.join(models, name));
    assert.equal(folder.spec.name, name);
    assert.ok(existsSync(path.join(models, name, 'MODEL_CARD.md')), `${name} has a card`);
  }
});
