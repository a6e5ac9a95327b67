// Serving logic without HTTP: parameter defaults, the engine's validation as the API reports it, refusals, error
// mapping. The model is the committed tiny model folder (its tokenizer and limits; no ONNX Runtime needed).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadModelFolder } from '../../src/engine/model_folder.js';
import { EngineError, type GenerateRequest } from '../../src/engine/types.js';
import { ApiError, fromEngineError } from '../../src/serving/errors.js';
import { servingModel } from '../../src/serving/model.js';
import { resolveParams } from '../../src/serving/params.js';
import { validated } from '../../src/serving/prepare.js';
import { refuseChatFields, refuseCompletionFields } from '../../src/serving/refusals.js';
import { keyMatcher } from '../../src/plugins/auth.js';
import { MODEL_DIR } from '../engine/model_fixture.js';

const model = servingModel(await loadModelFolder(MODEL_DIR));

/** A request for a prompt of `promptLen` tokens with the parameters resolved from `fields`. */
function request(fields: Parameters<typeof resolveParams>[1], promptLen = 10): GenerateRequest {
  const { params, n } = resolveParams(model, fields, promptLen + 1, 0, null);
  return { id: 'r', promptTokenIds: new Array(promptLen).fill(100), suffixTokenIds: [], params, n, includeCanvas: false };
}

const refused = (fields: Parameters<typeof resolveParams>[1], param: string, code = 'invalid_value', promptLen = 10, promptParam: 'prompt' | 'messages' = 'prompt') =>
  assert.throws(
    () => validated(model, request(fields, promptLen), promptParam),
    (e: ApiError) => e instanceof ApiError && e.status === 400 && e.param === param && (code === 'invalid_value' || e.code === code),
    `${JSON.stringify(fields)} → ${param}`,
  );

test('resolveParams: model defaults, whole blocks, steps scaled to the length; the tiny model: 64 tokens, blocks of 8', () => {
  const d = request({}).params;
  assert.deepEqual([d.maxTokens, d.blockLength, d.steps, d.temperature], [64, 8, 64, 0]);
  assert.ok(d.seed !== null && d.seed >= 0);
  const small = request({ max_tokens: 16 }).params;
  assert.deepEqual([small.blockLength, small.steps], [8, 16]);
  const seeded = resolveParams(model, { seed: 7, stop: 'x', top_k: 5, threshold: 0.9 }, 11, 0, 2).params;
  assert.deepEqual([seeded.seed, seeded.stop, seeded.topK, seeded.threshold, seeded.logprobs], [7, ['x'], 5, 0.9, 2]);
  const fixed = request({ ignore_eos: true, min_tokens: 3 }).params;
  assert.deepEqual([fixed.ignoreEos, fixed.minTokens], [true, 3]);
  assert.ok(!('ignoreEos' in d) && !('minTokens' in d), 'absent unless asked for');
  // Penalties: the folder's unless the request sets them; 0 is left out (absent = 0).
  assert.deepEqual([d.frequencyPenalty ?? 0, d.presencePenalty ?? 0], [model.defaults.frequencyPenalty, model.defaults.presencePenalty]);
  const penalised = request({ frequency_penalty: 0.5, presence_penalty: -1 }).params;
  assert.deepEqual([penalised.frequencyPenalty, penalised.presencePenalty], [0.5, -1]);
  const off = request({ frequency_penalty: 0, presence_penalty: 0 }).params;
  assert.ok(!('frequencyPenalty' in off) && !('presencePenalty' in off), 'a request turns the folder default off with 0');
});

test('resolveParams fills defaults only: a default that does not fit shrinks; what the client set is kept', () => {
  assert.equal(request({}, 470).params.maxTokens, 40, '512 - 471 = 41 positions left: five blocks of 8');
  const tight = request({}, 507).params;
  assert.deepEqual([tight.maxTokens, tight.blockLength], [4, 4]);
  assert.equal(request({ max_tokens: 64 }, 470).params.maxTokens, 64);
  assert.equal(request({ steps: 3, max_tokens: 64 }).params.steps, 3);
});

test('validation is the engine\'s, reported with the API\'s field names', () => {
  validated(model, request({}), 'prompt');
  refused({ max_tokens: 64 }, 'max_tokens', 'context_length_exceeded', 470);
  // A prompt that leaves no room at all is the prompt's fault, max_tokens or not; in a chat, the messages'.
  refused({ max_tokens: 8 }, 'prompt', 'context_length_exceeded', 511);
  refused({}, 'messages', 'context_length_exceeded', 511, 'messages');
  refused({ steps: 3, max_tokens: 64 }, 'steps');
  refused({ frequency_penalty: 2.5 }, 'frequency_penalty');
  refused({ presence_penalty: -3 }, 'presence_penalty');
  refused({ top_k: 65 }, 'top_k');
  refused({ stop: ['ok', ''] }, 'stop');
  refused({ temperature: 101 }, 'temperature');
  refused({ min_tokens: 17, max_tokens: 16 }, 'min_tokens');
  assert.throws(
    () => validated(model, { ...request({}), promptTokenIds: [5000] }, 'prompt'),
    (e: ApiError) => e.param === 'prompt' && /vocabulary/.test(e.message),
  );
});

test('unsupported OpenAI fields with non-default values are refused by name', () => {
  const base = { model: 'm', prompt: 'x' };
  for (const [field, value] of [['logit_bias', { '1': 2 }], ['best_of', 3]] as const) {
    assert.throws(() => refuseCompletionFields({ ...base, [field]: value }), (e: ApiError) => e.param === field && e.status === 400);
  }
  assert.doesNotThrow(() => refuseCompletionFields({ ...base, frequency_penalty: 0.1, presence_penalty: -1, logit_bias: {}, best_of: 1 }));
  const chat = { model: 'm', messages: [{ role: 'user' as const, content: 'x' }] };
  for (const [field, value] of [['tools', [{}]], ['tool_choice', 'auto'], ['store', true], ['service_tier', 'flex']] as const) {
    assert.throws(() => refuseChatFields({ ...chat, [field]: value }), (e: ApiError) => e.param === field && e.status === 400);
  }
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

test("Dream's sampler: alg from the request or the folder's default; LLaDA's rules switch back; naming both is refused", () => {
  // The tiny model has no default alg: alg in the request turns Dream's sampler on, with its own defaults.
  const dream = request({ alg: 'entropy', max_tokens: 16 }).params;
  assert.deepEqual([dream.alg, dream.algTemp, dream.eps, dream.threshold], ['entropy', 0, 1e-3, null]);
  assert.equal(request({ max_tokens: 16 }).params.alg, undefined);
  validated(model, request({ alg: 'topk_margin', alg_temp: 0.5, eps: 0.01, max_tokens: 16 }), 'prompt');
  // A folder whose default is Dream's sampler (architecture dream) decodes the whole span as one block.
  const dreamFolder = { ...model, defaults: { ...model.defaults, alg: 'maskgit_plus' as const, blockLength: null } };
  const d = resolveParams(dreamFolder, { max_tokens: 24 }, 11, 0, null).params;
  assert.deepEqual([d.alg, d.blockLength, d.maxTokens], ['maskgit_plus', 24, 24]);
  const llada = resolveParams(dreamFolder, { max_tokens: 24, remasking: 'margin' }, 11, 0, null).params;
  assert.deepEqual([llada.alg, llada.remasking], [undefined, 'margin']);
  for (const [fields, param] of [
    [{ alg: 'entropy', remasking: 'margin' }, 'alg'],
    [{ alg: 'entropy', threshold: 0.9 }, 'alg'],
    [{ alg_temp: 0.5 }, 'alg_temp'],
    [{ eps: 0.01, remasking: 'margin' }, 'eps'],
  ] as const) {
    assert.throws(() => request(fields), (e: ApiError) => e instanceof ApiError && e.status === 400 && e.param === param, JSON.stringify(fields));
  }
  refused({ alg: 'entropy', max_tokens: 16, eps: 1 }, 'eps');
  refused({ alg: 'entropy', max_tokens: 16, alg_temp: -1 }, 'alg_temp');
  refused({ alg: 'nope' as never, max_tokens: 16 }, 'alg');
});
