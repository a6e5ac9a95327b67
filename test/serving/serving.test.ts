// Serving logic without HTTP: stable-text streaming, parameter defaults and limits, error mapping.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EngineError } from '../../src/engine/types.js';
import { ApiError, fromEngineError } from '../../src/serving/errors.js';
import { resolveParams } from '../../src/serving/params.js';
import { ChoiceText } from '../../src/serving/text.js';
import type { ServingModel } from '../../src/serving/model.js';
import { keyMatcher } from '../../src/plugins/auth.js';

const model: ServingModel = {
  name: 'm',
  dir: '.',
  vocabSize: 4096,
  maxSequenceLength: 256,
  bosTokenId: 6,
  topk: 64,
  blockSize: null,
  defaults: { maxTokens: 64, steps: 64, blockLength: 32, remasking: 'low_confidence', threshold: null, temperature: 0 },
  chatTemplate: null,
  bosToken: '',
  eosToken: '',
  maxBytesPerToken: null,
  encode: () => [],
  decode: () => '',
  validate: () => undefined,
};

test('ChoiceText: deltas concatenate to the final text; text near a stop string is held back, never retracted', () => {
  const t = new ChoiceText(['END']);
  const deltas = [t.push('Hello wor'), t.push('ld E'), t.push('N')];
  assert.deepEqual(deltas, ['Hello w', 'orld', ' ']); // 'EN' could start 'END': held back
  const rest = t.finish('Hello world ');
  assert.equal(rest, '');
  assert.equal(deltas.join('') + rest, 'Hello world ');
  const plain = new ChoiceText([]);
  assert.equal(plain.push('ab') + plain.push('cd') + plain.finish('abcd'), 'abcd');
  const bad = new ChoiceText([]);
  bad.push('xyz');
  assert.equal(bad.finish('abc'), null);
});

test('resolveParams: model defaults, whole blocks, steps scaled to the length', () => {
  const d = resolveParams(model, {}, 10, 0, null, 'prompt').params;
  assert.equal(d.maxTokens, 64);
  assert.equal(d.blockLength, 32);
  assert.equal(d.steps, 64);
  assert.equal(d.temperature, 0);
  assert.ok(d.seed !== null && d.seed >= 0);
  const small = resolveParams(model, { max_tokens: 16 }, 10, 0, null, 'prompt').params;
  assert.equal(small.blockLength, 16);
  assert.equal(small.steps, 16);
  const seeded = resolveParams(model, { seed: 7, stop: 'x', top_k: 5, threshold: 0.9 }, 10, 0, 2, 'prompt').params;
  assert.deepEqual([seeded.seed, seeded.stop, seeded.topK, seeded.threshold, seeded.logprobs], [7, ['x'], 5, 0.9, 2]);
});

test('resolveParams: a default that does not fit shrinks; an explicit one is a context_length_exceeded error', () => {
  const fit = resolveParams(model, {}, 200, 0, null, 'prompt').params;
  assert.equal(fit.maxTokens, 32);
  const tight = resolveParams(model, {}, 240, 0, null, 'prompt').params;
  assert.equal(tight.maxTokens, 15);
  assert.equal(tight.blockLength, 15);
  assert.throws(
    () => resolveParams(model, { max_tokens: 64 }, 200, 0, null, 'prompt'),
    (e: ApiError) => e.status === 400 && e.code === 'context_length_exceeded' && e.param === 'max_tokens',
  );
  assert.throws(() => resolveParams(model, {}, 255, 0, null, 'prompt'), (e: ApiError) => e.code === 'context_length_exceeded');
  // A prompt that leaves no room at all is the prompt's fault, max_tokens or not.
  assert.throws(
    () => resolveParams(model, { max_tokens: 8 }, 300, 0, null, 'prompt'),
    (e: ApiError) => e.code === 'context_length_exceeded' && e.param === 'prompt',
  );
});

test('resolveParams: unsupported OpenAI fields with non-default values are refused by name', () => {
  for (const [field, value] of [['frequency_penalty', 0.1], ['presence_penalty', -1], ['logit_bias', { '1': 2 }]] as const) {
    assert.throws(() => resolveParams(model, { [field]: value }, 5, 0, null, 'prompt'), (e: ApiError) => e.param === field && e.status === 400);
  }
  assert.doesNotThrow(() => resolveParams(model, { frequency_penalty: 0, presence_penalty: 0, logit_bias: {} }, 5, 0, null, 'prompt'));
  assert.throws(() => resolveParams(model, { steps: 3, max_tokens: 64 }, 5, 0, null, 'prompt'), (e: ApiError) => e.param === 'steps');
  assert.throws(() => resolveParams(model, { top_k: 65 }, 5, 0, null, 'prompt'), (e: ApiError) => e.param === 'top_k');
});

test('engine errors map to OpenAI statuses; internal details stay hidden', () => {
  assert.equal(fromEngineError(new EngineError('invalid_request', 'bad', 'steps')).status, 400);
  assert.equal(fromEngineError(new EngineError('context_length_exceeded', 'long')).code, 'context_length_exceeded');
  const busy = fromEngineError(new EngineError('overloaded', 'full'));
  assert.equal(busy.status, 429);
  assert.ok(busy.retryAfter);
  const internal = fromEngineError(new EngineError('internal', 'secret path /x/y'));
  assert.equal(internal.status, 500);
  assert.ok(!internal.message.includes('secret'));
  assert.ok(!JSON.stringify(internal.body()).includes('secret'));
  assert.equal(fromEngineError(new TypeError('boom')).status, 500);
});

test('API keys compare in constant time against every key', () => {
  const match = keyMatcher(['alpha', 'beta']);
  const [alpha, beta] = [match('alpha'), match('beta')];
  assert.match(alpha ?? '', /^[0-9a-f]{16}$/, 'an id, not the key');
  assert.match(beta ?? '', /^[0-9a-f]{16}$/);
  assert.notEqual(alpha, beta);
  assert.equal(match('alph'), null);
  assert.equal(match(''), null);
});
