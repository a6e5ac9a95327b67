// The OpenAI-client suite both transports must pass (embedded in-process queue; Redis with separate processes).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { loadModelFolder } from '../../src/engine/model_folder.js';
import { chatParams, chatStreamParams, completionParams, completionStreamParams, jsonOf, streamed, type ErrorBody } from './openai.js';
import { MODEL_DIR } from './procs.js';
import { readSse } from './sse.js';

export const MODEL = 'tiny-llada';
/** Small settings keep the suite fast on two cores. */
export const SMALL = { max_tokens: 16, steps: 8 } as const;

const PROMPTS = [
  'The cat sat on the',
  'Once upon a time',
  'The weather today is',
  'She opened the door and',
  'In the beginning',
  'He said that the',
  'A long road leads to',
  'The old man and the',
];

export function openaiSuite(getUrl: () => string) {
  const client = () => new OpenAI({ baseURL: `${getUrl()}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });

  test('models.list names the served model', async () => {
    const list = await client().models.list();
    assert.deepEqual(
      list.data.map((m) => m.id),
      [MODEL],
    );
  });

  test('completions.create returns an OpenAI text_completion with usage', async () => {
    const r = await client().completions.create(completionParams({ model: MODEL, prompt: PROMPTS[0], ...SMALL }));
    assert.equal(r.object, 'text_completion');
    assert.match(r.id, /^cmpl-/);
    assert.equal(r.choices.length, 1);
    assert.equal(typeof r.choices[0].text, 'string');
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
    assert.ok(r.usage && r.usage.prompt_tokens > 0 && r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.ok(r.usage.completion_tokens <= SMALL.max_tokens);
  });

  test('streamed deltas concatenate to the non-streamed text (seeded sampling); every step arrives; [DONE] last', async () => {
    const body = { model: MODEL, prompt: PROMPTS[1], ...SMALL, temperature: 0.9, seed: 1234 };
    const full = await client().completions.create(completionParams(body));
    // An empty completion would make every comparison below hold for a stream that sent nothing.
    assert.ok(full.choices[0].text.length > 0, 'the non-streamed completion has text to compare the stream with');
    const stream = await client().completions.create(completionStreamParams({ ...body, stream: true }));
    let text = '';
    let textChunks = 0;
    const steps: number[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const choice of chunk.choices.map(streamed)) {
        assert.equal(choice.index, 0, 'one choice');
        text += choice.text;
        if (choice.text) textChunks++;
        if (choice.diffusion) steps.push(choice.diffusion.step);
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    assert.ok(textChunks >= 1, 'the stream carried text');
    assert.equal(text, full.choices[0].text);
    assert.equal(finish, full.choices[0].finish_reason);
    assert.ok(steps.length >= 1);
    assert.deepEqual(steps, steps.map((_, i) => i), 'one chunk per step, in order, none missing');
    const raw = await readSse(`${getUrl()}/v1/completions`, { ...body, stream: true });
    assert.equal(raw.status, 200);
    assert.match(raw.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.ok(raw.events.length >= 1, 'chunks came before [DONE]');
    assert.equal(raw.data.at(-1), '[DONE]');
    assert.equal(raw.data.filter((d) => d === '[DONE]').length, 1);
    assert.equal(raw.events.map((e) => e.choices[0]?.text ?? '').join(''), full.choices[0].text);
  });

  test('chat: non-streamed and streamed (greedy) agree; first chunk carries the role', async () => {
    const body = { model: MODEL, messages: [{ role: 'user' as const, content: 'Tell me about cats.' }], ...SMALL };
    const full = await client().chat.completions.create(chatParams(body));
    assert.equal(full.object, 'chat.completion');
    assert.equal(full.choices[0].message.role, 'assistant');
    assert.ok(full.choices[0].message.content, 'the non-streamed answer has text to compare the stream with');
    const stream = await client().chat.completions.create(chatStreamParams({ ...body, stream: true, stream_options: { include_usage: true } }));
    let text = '';
    let contentChunks = 0;
    let role: string | undefined;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null = null;
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        if (choice.delta.role) role = choice.delta.role;
        text += choice.delta.content ?? '';
        if (choice.delta.content) contentChunks++;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(role, 'assistant');
    assert.ok(contentChunks >= 1, 'the stream carried content');
    assert.equal(text, full.choices[0].message.content);
    assert.equal(finish, full.choices[0].finish_reason);
    assert.deepEqual(usage, full.usage);
  });

  test('chat with diffusing: true sends the whole draft in each chunk (Mercury convention)', async () => {
    const body = { model: MODEL, messages: [{ role: 'user' as const, content: 'Hello there' }], ...SMALL };
    const full = await client().chat.completions.create(chatParams(body));
    assert.ok(full.choices[0].message.content, 'the non-streamed answer has text to compare the stream with');
    const raw = await readSse(`${getUrl()}/v1/chat/completions`, { ...body, stream: true, diffusing: true, include_canvas: true });
    assert.equal(raw.status, 200);
    const steps = raw.events.filter((e) => e.choices[0]?.diffusion);
    assert.ok(steps.length >= 1);
    assert.ok(steps[0].choices[0].delta.content.includes('\u2591'), 'the first draft still shows masks');
    assert.equal(steps[0].choices[0].diffusion.canvas.length, 16);
    const finished = raw.events.filter((e) => e.choices[0]?.finish_reason);
    assert.equal(finished.length, 1, 'one chunk ends the choice');
    assert.equal(finished[0].choices[0].delta.content, full.choices[0].message.content, 'the final chunk holds the whole final text');
    assert.equal(raw.data.at(-1), '[DONE]');
  });

  test('several prompts × n give prompt-major choice indices', async () => {
    const r = await client().completions.create(completionParams({ model: MODEL, prompt: [PROMPTS[2], PROMPTS[3]], n: 2, ...SMALL, temperature: 0.8, seed: 5 }));
    assert.deepEqual(
      r.choices.map((c) => c.index),
      [0, 1, 2, 3],
    );
  });

  test('infill: the suffix is in the canvas (counted as prompt) and not in the completion', async () => {
    const plain = await client().completions.create(completionParams({ model: MODEL, prompt: 'The cat', ...SMALL }));
    const infill = await client().completions.create(completionParams({ model: MODEL, prompt: 'The cat', suffix: ' on the mat.', ...SMALL }));
    assert.ok(infill.usage!.prompt_tokens > plain.usage!.prompt_tokens, 'the suffix tokens are part of the prompt');
    assert.ok(!infill.choices[0].text.endsWith(' on the mat.'), 'the completion is the generated span only');
    assert.notEqual(infill.choices[0].text, plain.choices[0].text, 'the suffix is in view while decoding');
  });

  test('ignore_eos decodes every position; min_tokens holds end-of-text off; token ids are used verbatim', async () => {
    const fixed = await client().completions.create(completionParams({ model: MODEL, prompt: PROMPTS[4], ...SMALL, ignore_eos: true }));
    assert.deepEqual([fixed.choices[0].finish_reason, fixed.usage!.completion_tokens], ['length', SMALL.max_tokens]);
    const min = await client().completions.create(completionParams({ model: MODEL, prompt: PROMPTS[4], ...SMALL, min_tokens: SMALL.max_tokens }));
    assert.equal(min.usage!.completion_tokens, SMALL.max_tokens);
    const ids = await client().completions.create(completionParams({ model: MODEL, prompt: [6, 100, 200], ...SMALL }));
    assert.equal(ids.usage!.prompt_tokens, 3, 'no BOS added to token ids');
    // A text prompt is its tokens after the BOS: the same canvas as those ids sent verbatim, so the same text.
    const { spec, tokenizer } = await loadModelFolder(MODEL_DIR);
    const bosAndText = [spec.bosTokenId!, ...tokenizer.encode('The cat')];
    const text = await client().completions.create(completionParams({ model: MODEL, prompt: 'The cat', ...SMALL }));
    const verbatim = await client().completions.create(completionParams({ model: MODEL, prompt: bosAndText, ...SMALL }));
    assert.deepEqual([text.usage!.prompt_tokens, text.choices[0].text], [bosAndText.length, verbatim.choices[0].text]);
  });

  test('frequency_penalty and presence_penalty: a greedy loop gives way to tokens not committed yet', async () => {
    const ask = (penalties: { frequency_penalty?: number; presence_penalty?: number }) =>
      client().completions.create(
        completionParams({ model: MODEL, prompt: PROMPTS[7], max_tokens: 32, steps: 32, temperature: 0, ignore_eos: true, logprobs: 1, ...penalties }),
      );
    const distinct = (r: OpenAI.Completions.Completion) => new Set(r.choices[0].logprobs!.tokens!).size;
    const plain = await ask({});
    const penalised = await ask({ frequency_penalty: 2, presence_penalty: 2 });
    assert.ok(distinct(penalised) > distinct(plain), `${JSON.stringify(plain.choices[0].text)} → ${JSON.stringify(penalised.choices[0].text)}`);
    assert.deepEqual((await ask({ frequency_penalty: 0, presence_penalty: 0 })).choices[0].text, plain.choices[0].text, 'zero is no penalty');
  });

  test('include_canvas: each step carries the provisional guesses at the masked positions of its block', async () => {
    const raw = await readSse(`${getUrl()}/v1/completions`, { model: MODEL, prompt: PROMPTS[5], ...SMALL, stream: true, include_canvas: true });
    assert.equal(raw.status, 200);
    assert.equal(raw.data.at(-1), '[DONE]');
    const steps = raw.events.filter((e) => e.choices[0]?.diffusion).map((e) => e.choices[0].diffusion);
    assert.ok(steps.length >= 1, 'step chunks came');
    assert.ok(steps.some((d) => d.provisional.length > 0));
    for (const d of steps) {
      for (const t of d.provisional) {
        assert.equal(d.canvas[t.position], null, 'a provisional token sits on a masked position');
        assert.equal(typeof t.token_id, 'number');
        assert.equal(typeof t.text, 'string');
      }
    }
    assert.deepEqual(steps.at(-1).provisional, []);
  });

  test('8 concurrent streams give the same outputs as one at a time (greedy), and as the non-streamed completions', async () => {
    const body = (p: string) => ({ model: MODEL, prompt: p, ...SMALL, stream: true });
    const collect = async (p: string) => {
      const raw = await readSse(`${getUrl()}/v1/completions`, body(p));
      assert.equal(raw.status, 200, p);
      assert.equal(raw.data.at(-1), '[DONE]', p);
      return raw.events.map((e) => e.choices[0]?.text ?? '').join('');
    };
    const sequential: string[] = [];
    for (const p of PROMPTS) sequential.push(await collect(p));
    // Streams that sent nothing would agree with each other: each one is held to the non-streamed text, not empty.
    const plain = await Promise.all(PROMPTS.map((p) => client().completions.create(completionParams({ model: MODEL, prompt: p, ...SMALL }))));
    assert.deepEqual(sequential, plain.map((r) => r.choices[0].text));
    for (const [i, text] of sequential.entries()) assert.ok(text.length > 0, `the stream of ${JSON.stringify(PROMPTS[i])} carried text`);
    const concurrent = await Promise.all(PROMPTS.map(collect));
    assert.deepEqual(concurrent, sequential);
  });

  test('bad bodies get the right 4xx with the OpenAI error shape, and the server keeps serving', async () => {
    const url = `${getUrl()}/v1/completions`;
    const post = async (body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) => {
      const r = await fetch(url, { method: 'POST', headers, body });
      return { status: r.status, body: await jsonOf<ErrorBody>(r) };
    };
    const cases: [string, number, string | null][] = [
      [JSON.stringify({ model: MODEL, prompt: 5 }), 400, 'prompt'],
      [JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 'ten' }), 400, 'max_tokens'],
      [JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: -3 }), 400, 'max_tokens'],
      [JSON.stringify({ model: 'no-such-model', prompt: 'x' }), 404, 'model'],
      [JSON.stringify({ model: MODEL, prompt: 'word '.repeat(600) }), 400, null],
      [JSON.stringify({ model: MODEL, prompt: 'x', max_tokens: 4000 }), 400, 'max_tokens'],
      ['{"model": "tiny-llada", "prompt": ', 400, null],
      [JSON.stringify({ model: MODEL, prompt: 'x', frequency_penalty: 2.5 }), 400, 'frequency_penalty'],
      [JSON.stringify({ model: MODEL, prompt: 'x', logit_bias: { '5': 3 } }), 400, 'logit_bias'],
      [JSON.stringify({ model: MODEL, prompt: 'x', no_such_field: 1 }), 400, 'no_such_field'],
      [JSON.stringify({ model: MODEL, prompt: 'x', steps: 7, max_tokens: 16, block_length: 8 }), 400, 'steps'],
      [JSON.stringify({ model: MODEL, prompt: 'x', top_k: 100000 }), 400, 'top_k'],
    ];
    for (const [body, status, param] of cases) {
      const r = await post(body);
      assert.equal(r.status, status, `${body.slice(0, 80)} → ${JSON.stringify(r.body)}`);
      assert.equal(typeof r.body.error?.message, 'string');
      assert.equal(typeof r.body.error?.type, 'string');
      if (param !== null) assert.equal(r.body.error.param, param, body.slice(0, 80));
    }
    const long = await post(JSON.stringify({ model: MODEL, prompt: 'word '.repeat(600) }));
    assert.equal(long.body.error.code, 'context_length_exceeded');
    const tooBig = await post(JSON.stringify({ model: MODEL, prompt: 'x'.repeat(2 * 1024 * 1024) }));
    assert.equal(tooBig.status, 413);
    // Fastify parses text/plain into a string, which the body schema refuses (400); a type it has no parser for is 415.
    const text = await post('prompt=x', { 'content-type': 'text/plain' });
    assert.deepEqual([text.status, text.body.error.code], [400, 'invalid_value']);
    const form = await post('prompt=x', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.deepEqual([form.status, form.body.error.code], [415, 'unsupported_media_type']);
    const chat = await fetch(`${getUrl()}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }),
    });
    assert.equal(chat.status, 400);
    // Still serving.
    const ok = await client().completions.create(completionParams({ model: MODEL, prompt: 'x', ...SMALL }));
    assert.equal(ok.object, 'text_completion');
  });
}
