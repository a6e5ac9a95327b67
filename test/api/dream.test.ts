// Serving a Dream-architecture folder (models/tiny-dream-random: shifted logits, random weights) embedded, through the
// official `openai` client: Dream's sampler by default with its own fields, LLaDA's sampler when a request names one
// of its rules, the caches, streaming every step (also those that commit nothing), chat through the ChatML template.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { loadModelFolder } from '../../src/engine/model_folder.js';
import { startEmbedded } from '../helpers/embedded.js';
import { readSse } from '../helpers/sse.js';
import { completionParams } from '../helpers/openai.js';
import { DREAM_MODEL_DIR } from '../engine/model_fixture.js';
import type { Started } from '../../src/main.js';

const skip = existsSync(path.join(DREAM_MODEL_DIR, 'model.kv.onnx')) ? false : `no model at ${DREAM_MODEL_DIR}`;
const MODEL = 'tiny-dream-random';
let s: Started & { url: string };
let client: OpenAI;

describe('embedded Dream-architecture model', { skip }, () => {
  before(async () => {
    s = await startEmbedded({ MODEL_DIR: DREAM_MODEL_DIR });
    client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  after(async () => s?.stop());

  test('the model card says dream', async () => {
    const models = await client.models.list();
    assert.equal((models.data[0] as unknown as { architecture: string }).architecture, 'dream');
  });

  test("Dream's sampler by default: max_tokens exactly, one chunk per step, steps that commit nothing included", async () => {
    const body = { model: MODEL, prompt: 'The history of the city begins with', max_tokens: 12, steps: 24, ignore_eos: true, stream: true, include_canvas: true };
    const sse = await readSse(`${s.url}/v1/completions`, body);
    assert.equal(sse.status, 200);
    const steps = sse.events.filter((c) => c.choices?.[0]?.diffusion).map((c) => c.choices[0].diffusion);
    assert.equal(steps.length, 24);
    assert.ok(steps.some((d) => d.committed.length === 0), 'some steps commit nothing');
    assert.equal(steps.reduce((n, d) => n + d.committed.length, 0), 12);
    assert.deepEqual(steps[0].block_starts, [0, 12]); // the whole span is one block
    assert.ok(steps.at(-1).canvas.every((t: number | null) => t !== null));
    assert.equal(sse.data.at(-1), '[DONE]');
  });

  test('greedy is deterministic, alone and beside other requests; every alg, alg_temp and eps are accepted', async () => {
    const ask = (extra: object) =>
      client.completions.create(completionParams({ model: MODEL, prompt: 'Once upon a time', max_tokens: 16, ignore_eos: true, ...extra }));
    const alone = await ask({});
    const [a, b] = await Promise.all([ask({}), ask({ prompt: 'A different and much longer prompt than the other one', alg: 'topk_margin' })]);
    assert.equal(a.choices[0].text, alone.choices[0].text);
    assert.equal(b.usage!.completion_tokens, 16);
    for (const extra of [{ alg: 'maskgit_plus' }, { alg: 'origin', seed: 3 }, { alg: 'entropy', alg_temp: 0.5, seed: 1 }, { alg: 'entropy', eps: 0.05 }, { temperature: 0.7, top_p: 0.9, seed: 2 }]) {
      const r = await ask(extra);
      assert.equal(r.usage!.completion_tokens, 16, JSON.stringify(extra));
    }
  });

  test("LLaDA's sampler when a request names remasking; naming both samplers is a 400 naming alg", async () => {
    const r = await client.completions.create(completionParams({ model: MODEL, prompt: 'Hello', max_tokens: 8, block_length: 4, remasking: 'margin', ignore_eos: true }));
    assert.equal(r.usage!.completion_tokens, 8);
    await assert.rejects(
      client.completions.create(completionParams({ model: MODEL, prompt: 'Hello', max_tokens: 8, alg: 'entropy', threshold: 0.9 })),
      (err: unknown) => err instanceof OpenAI.APIError && err.status === 400 && err.param === 'alg',
    );
  });

  test('the prefix and dual caches serve it (the query starts one position before the block)', async () => {
    for (const cache of ['prefix', 'dual'] as const) {
      const r = await client.completions.create(completionParams({ model: MODEL, prompt: 'It was a dark and stormy night;', max_tokens: 16, block_length: 8, steps: 16, cache, ignore_eos: true }));
      assert.equal(r.usage!.completion_tokens, 16, cache);
    }
  });

  test("chat renders the checkpoint's ChatML template, with no BOS in front", async () => {
    const folder = await loadModelFolder(DREAM_MODEL_DIR);
    const expected = folder.tokenizer.encode('<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n');
    const r = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 8 });
    assert.equal(r.usage!.prompt_tokens, expected.length);
    const imEnd = folder.tokenizer.encode('<|im_end|>');
    assert.equal(imEnd.length, 1);
    assert.ok(folder.spec.eosTokenIds.includes(imEnd[0]), "the template's end-of-turn token ends a choice");
  });
});
