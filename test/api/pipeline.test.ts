// The serving seams over a synthetic engine (test/helpers/synthetic.ts): the exact SSE frames of both endpoints, the
// error objects of every failure path, and the metrics each request leaves. The real engine is tested in test/engine
// and, through HTTP with the official client, in test/api/embedded.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EngineError } from '../../src/engine/types.js';
import { SYSTEM_FINGERPRINT } from '../../src/serving/ids.js';
import { done, events, finish, frames, metric, step, syntheticApp, type Script } from '../helpers/synthetic.js';
import type { ChatChunkBody, CompletionChunkBody, ErrorBody } from '../helpers/openai.js';

const MODEL = 'tiny-llada';
const head = (object: string) => ({ id: 'ID', object, created: 0, model: MODEL, system_fingerprint: SYSTEM_FINGERPRINT });
const diffusion = (n: number, text: string) => ({ step: n, block: 0, committed: [{ position: n, token_id: 100 + n, text, confidence: 0.5 }] });
const HELLO = events(step(0, 0, 'Hel'), step(0, 1, 'lo'), finish(0, 'Hello'), done(2, 2));

async function post(script: Script, url: string, body: object, env: Record<string, string> = {}) {
  const { app, engine } = await syntheticApp(script, env);
  try {
    const res = await app.inject({ method: 'POST', url, payload: body });
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body;
    return { res, engine, metrics };
  } finally {
    await app.close();
  }
}

const completion = (extra: object = {}) => ({ model: MODEL, prompt: 'Hello', max_tokens: 16, ...extra });
const chat = (extra: object = {}) => ({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 16, ...extra });

test('completions stream: one chunk per step, one per finished choice, usage, [DONE]', async () => {
  const { res } = await post(HELLO, '/v1/completions', completion({ stream: true, stream_options: { include_usage: true } }));
  assert.equal(res.statusCode, 200);
  assert.match(String(res.headers['content-type']), /^text\/event-stream/);
  const choice = { logprobs: null, finish_reason: null };
  assert.deepEqual(frames(res.body), [
    { ...head('text_completion'), choices: [{ index: 0, text: 'Hel', ...choice, diffusion: diffusion(0, 'Hel') }], usage: null },
    { ...head('text_completion'), choices: [{ index: 0, text: 'lo', ...choice, diffusion: diffusion(1, 'lo') }], usage: null },
    { ...head('text_completion'), choices: [{ index: 0, text: '', logprobs: null, finish_reason: 'length' }], usage: null },
    { ...head('text_completion'), choices: [], usage: { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 } },
    '[DONE]',
  ]);
});

test('stable text goes out as the engine gives it: no second hold-back for stop strings', async () => {
  const script = events(step(0, 0, 'Hello wor'), step(0, 1, 'ld'), finish(0, 'Hello world', 'stop'), done(2, 2));
  const { res } = await post(script, '/v1/completions', completion({ stream: true, stop: ['END'] }));
  const texts = frames(res.body).map((f) => (f === '[DONE]' ? f : (f as CompletionChunkBody).choices[0].text));
  assert.deepEqual(texts, ['Hello wor', 'ld', '', '[DONE]']);
});

test('completions stream with echo and n = 2: an opening chunk holds the prompt of every choice', async () => {
  const script = events(step(1, 0, 'b'), step(0, 0, 'a'), finish(0, 'a'), finish(1, 'b'), done(2, 2));
  const { res, engine } = await post(script, '/v1/completions', completion({ stream: true, echo: true, n: 2 }));
  const f = frames(res.body);
  assert.deepEqual(f[0], {
    ...head('text_completion'),
    choices: [0, 1].map((index) => ({ index, text: 'Hello', logprobs: null, finish_reason: null })),
  });
  assert.deepEqual(
    (f.slice(1, -1) as CompletionChunkBody[]).map((c) => [c.choices[0].index, c.choices[0].text]),
    [[1, 'b'], [0, 'a'], [0, ''], [1, '']],
  );
  assert.equal(engine.requests[0].n, 2);
});

test('chat stream: the role first, then content deltas; no usage field without include_usage', async () => {
  const { res } = await post(HELLO, '/v1/chat/completions', chat({ stream: true }));
  const choice = { logprobs: null, finish_reason: null };
  assert.deepEqual(frames(res.body), [
    { ...head('chat.completion.chunk'), choices: [{ index: 0, delta: { role: 'assistant', content: '' }, ...choice }] },
    { ...head('chat.completion.chunk'), choices: [{ index: 0, delta: { content: 'Hel' }, ...choice, diffusion: diffusion(0, 'Hel') }] },
    { ...head('chat.completion.chunk'), choices: [{ index: 0, delta: { content: 'lo' }, ...choice, diffusion: diffusion(1, 'lo') }] },
    { ...head('chat.completion.chunk'), choices: [{ index: 0, delta: { content: '' }, logprobs: null, finish_reason: 'length' }] },
    '[DONE]',
  ]);
});

test('include_canvas: canvas, draft and the provisional tokens on each step; diffusing: the draft replaces the content', async () => {
  const canvas = { canvas: [100, null], draft: 'Hel\u2591', provisional: [{ position: 1, tokenId: 7, text: 'lo' }] };
  const script = events(step(0, 0, 'Hel', canvas), finish(0, 'Hello'), done(2, 2));
  const { res, engine } = await post(script, '/v1/chat/completions', chat({ stream: true, include_canvas: true, diffusing: true }));
  const f = frames(res.body);
  assert.deepEqual((f[1] as ChatChunkBody).choices[0], {
    index: 0,
    delta: { content: 'Hel\u2591' },
    logprobs: null,
    finish_reason: null,
    diffusion: { ...diffusion(0, 'Hel'), canvas: [100, null], draft: 'Hel\u2591', provisional: [{ position: 1, token_id: 7, text: 'lo' }] },
  });
  assert.deepEqual((f[2] as ChatChunkBody).choices[0].delta, { content: 'Hello' }, 'the last chunk holds the whole text');
  assert.equal(engine.requests[0].includeCanvas, true);
  const plain = await post(script, '/v1/completions', completion({ stream: true }));
  assert.deepEqual(Object.keys((frames(plain.res.body)[0] as CompletionChunkBody).choices[0].diffusion ?? {}), ['step', 'block', 'committed'], 'no canvas unless asked');
});

test('non-streamed: one object per request, choices in index order, usage summed over prompts', async () => {
  const script: Script = async function* (r) {
    yield finish(0, `text of ${r.id.slice(-1)}`);
    yield done(3, 5);
  };
  const { res, engine } = await post(script, '/v1/completions', completion({ prompt: ['one', 'two'] }));
  assert.equal(res.statusCode, 200);
  assert.deepEqual({ ...(res.json() as object), id: 'ID', created: 0 }, {
    ...head('text_completion'),
    choices: [0, 1].map((index) => ({ index, text: `text of ${index}`, logprobs: null, finish_reason: 'length' })),
    usage: { prompt_tokens: 6, completion_tokens: 10, total_tokens: 16 },
  });
  assert.equal(engine.requests.length, 2);
  const c = await post(HELLO, '/v1/chat/completions', chat());
  assert.deepEqual({ ...(c.res.json() as object), id: 'ID', created: 0 }, {
    ...head('chat.completion'),
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hello', refusal: null }, logprobs: null, finish_reason: 'length' }],
    usage: { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 },
  });
});

test('token-id prompts reach the engine verbatim; text prompts get the BOS; ignore_eos and min_tokens pass through', async () => {
  const ids = await post(HELLO, '/v1/completions', completion({ prompt: [6, 100, 200], ignore_eos: true, min_tokens: 4 }));
  const r = ids.engine.requests[0];
  assert.deepEqual([r.promptTokenIds, r.verbatimPrompt, r.params.ignoreEos, r.params.minTokens], [[6, 100, 200], true, true, 4]);
  const text = await post(HELLO, '/v1/completions', completion());
  assert.equal(text.engine.requests[0].verbatimPrompt, undefined);
});

/** The error object a request got, and whether the engine was asked at all. */
async function refusal(script: Script, url: string, body: object, env: Record<string, string> = {}) {
  const { res, engine, metrics } = await post(script, url, body, env);
  return { status: res.statusCode, headers: res.headers, body: res.json(), asked: engine.requests.length, metrics };
}

const failing = (err: Error): Script =>
  async function* () {
    throw err;
  };

test('errors before the first event are plain HTTP errors with the OpenAI shape', async () => {
  const err = (message: string, type: string, param: string | null, code: string | null) => ({ error: { message, type, param, code } });
  const notFound = await refusal(HELLO, '/v1/completions', completion({ model: 'other' }));
  assert.deepEqual([notFound.status, notFound.body], [404, err("The model 'other' does not exist", 'invalid_request_error', 'model', 'model_not_found')]);
  const full = await refusal(failing(new EngineError('overloaded', 'queue full: 64 requests waiting')), '/v1/completions', completion({ stream: true }));
  assert.deepEqual([full.status, full.headers['retry-after'], full.body], [429, '1', err('queue full: 64 requests waiting', 'rate_limit_error', null, 'queue_full')]);
  const gone = await refusal(failing(new EngineError('unavailable', 'no worker present')), '/v1/chat/completions', chat());
  assert.deepEqual([gone.status, gone.body], [503, err('Service not ready: no worker present', 'service_unavailable', null, 'not_ready')]);
  const bug = await refusal(failing(new EngineError('internal', 'generation failed: /secret/path')), '/v1/completions', completion());
  assert.deepEqual([bug.status, bug.body], [500, err('The server had an error while processing your request.', 'server_error', null, 'internal_error')]);
  const crash = await refusal(failing(new TypeError('x is undefined')), '/v1/completions', completion({ stream: true }));
  assert.equal(crash.status, 500);
  assert.ok(!JSON.stringify(crash.body).includes('undefined'));
});

test('invalid requests never reach the engine: schema limits are the engine\'s, the rest is the engine\'s validation', async () => {
  const cases: [object, string][] = [
    [{ temperature: 101 }, 'temperature'],
    [{ n: 17 }, 'n'],
    [{ logprobs: 6 }, 'logprobs'],
    [{ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ steps: 7 }, 'steps'],
    [{ top_k: 65 }, 'top_k'],
    [{ min_tokens: 17 }, 'min_tokens'],
    [{ prompt: [6, 4096] }, 'prompt'],
    [{ max_tokens: 600 }, 'max_tokens'],
  ];
  for (const [extra, param] of cases) {
    const r = await refusal(HELLO, '/v1/completions', completion(extra));
    assert.deepEqual([r.status, r.body.error.param, r.asked], [400, param, 0], JSON.stringify(extra));
  }
  const ok = await refusal(HELLO, '/v1/completions', completion({ temperature: 50 }));
  assert.equal(ok.status, 200, 'temperature up to the engine\'s maximum');
  const chatLong = await refusal(HELLO, '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'word '.repeat(600) }] }));
  assert.deepEqual([chatLong.status, chatLong.body.error.code, chatLong.body.error.param], [400, 'context_length_exceeded', 'messages']);
});

test('an error after the stream began is one error chunk, then [DONE]; the status stays 200', async () => {
  const script: Script = async function* () {
    yield step(0, 0, 'Hel');
    throw new EngineError('internal', 'generation failed: /secret/path');
  };
  const { res, metrics } = await post(script, '/v1/completions', completion({ stream: true }));
  assert.equal(res.statusCode, 200);
  const f = frames(res.body);
  assert.equal(f.length, 3);
  assert.deepEqual(f.slice(1), [
    { error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: 'internal_error' } },
    '[DONE]',
  ]);
  assert.equal(metric(metrics, 'dllm_generation_seconds_count', { endpoint: 'completions', outcome: 'internal_error' }), 1);
});

test('a generation past REQUEST_TIMEOUT_MS is stopped: 504, and the engine is told to abort', async () => {
  const forever: Script = async function* (_r, signal) {
    yield step(0, 0, 'a');
    await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    throw new EngineError('cancelled', 'cancelled');
  };
  const r = await refusal(forever, '/v1/completions', completion(), { REQUEST_TIMEOUT_MS: '100' });
  assert.deepEqual([r.status, r.body.error.code], [504, 'timeout']);
  const { res, engine } = await post(forever, '/v1/chat/completions', chat({ stream: true }), { REQUEST_TIMEOUT_MS: '100' });
  assert.equal((frames(res.body).at(-2) as ErrorBody).error.code, 'timeout');
  assert.ok(engine.aborted.includes(engine.requests[0].id));
});

test('metrics: a streamed request is counted once in dllm_http_requests_total; steps, tokens and outcomes per endpoint', async () => {
  const { app } = await syntheticApp(HELLO);
  try {
    const get = async () => (await app.inject({ method: 'GET', url: '/metrics' })).body;
    const stream = await app.inject({ method: 'POST', url: '/v1/completions', payload: completion({ stream: true }) });
    assert.equal(stream.statusCode, 200);
    let m = await get();
    assert.equal(metric(m, 'dllm_http_requests_total', { method: 'POST', route: '/v1/completions', status: '200' }), 1);
    assert.equal(metric(m, 'dllm_steps_total', { endpoint: 'completions' }), 2);
    assert.equal(metric(m, 'dllm_generated_tokens_total', { endpoint: 'completions' }), 2);
    assert.equal(metric(m, 'dllm_time_to_first_step_seconds_count', { endpoint: 'completions' }), 1);
    assert.equal(metric(m, 'dllm_generation_seconds_count', { endpoint: 'completions', outcome: 'ok' }), 1);
    await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat() });
    await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: chat({ temperature: 101 }) });
    m = await get();
    assert.equal(metric(m, 'dllm_http_requests_total', { method: 'POST', route: '/v1/chat/completions', status: '200' }), 1);
    assert.equal(metric(m, 'dllm_http_requests_total', { method: 'POST', route: '/v1/chat/completions', status: '400' }), 1);
    assert.equal(metric(m, 'dllm_steps_total', { endpoint: 'chat' }), 2);
    assert.equal(metric(m, 'dllm_generation_seconds_count', { endpoint: 'chat', outcome: 'ok' }), 1, 'a refused request never became a generation');
    assert.equal(metric(m, 'dllm_http_requests_total', { method: 'POST', route: '/v1/completions', status: '200' }), 1, 'still once');
  } finally {
    await app.close();
  }
});

test('metrics: a refused admission counts its status and its outcome', async () => {
  const { metrics } = await post(failing(new EngineError('overloaded', 'queue full')), '/v1/completions', completion({ stream: true }));
  assert.equal(metric(metrics, 'dllm_http_requests_total', { route: '/v1/completions', status: '429' }), 1);
  assert.equal(metric(metrics, 'dllm_generation_seconds_count', { endpoint: 'completions', outcome: 'queue_full' }), 1);
  assert.equal(metric(metrics, 'dllm_steps_total', { endpoint: 'completions' }), 0);
});
