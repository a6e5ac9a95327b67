// Serving the block diffusion model (models/tiny-bd3) embedded, through the official `openai` client: its block size
// is advertised and is the only block_length, the stream lays out its own blocks, and what it cannot do is a 400.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { startEmbedded } from '../helpers/embedded.js';
import { readSse } from '../helpers/sse.js';
import { completionParams } from '../helpers/openai.js';
import { BD3_MODEL_DIR } from '../engine/model_fixture.js';
import type { Started } from '../../src/main.js';

const skip = existsSync(path.join(BD3_MODEL_DIR, 'model.kv.onnx')) ? false : `no model at ${BD3_MODEL_DIR}`;
let s: Started & { url: string };
let client: OpenAI;

describe('embedded block diffusion model', { skip }, () => {
  before(async () => {
    s = await startEmbedded({ MODEL_DIR: BD3_MODEL_DIR });
    client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  after(async () => s?.stop());

  test('the model card advertises its block size', async () => {
    const models = await client.models.list();
    assert.equal((models.data[0] as unknown as { block_size: number }).block_size, 16);
  });

  test('a completion is exactly max_tokens long; another block_length, a suffix or dual cache are refused by name', async () => {
    const r = await client.completions.create(completionParams({ model: 'tiny-bd3', prompt: 'The history of the city begins with', max_tokens: 21, ignore_eos: true }));
    assert.equal(r.usage!.completion_tokens, 21);
    assert.equal(r.choices[0].finish_reason, 'length');
    for (const [extra, param] of [[{ block_length: 8 }, 'block_length'], [{ suffix: ' the end.' }, 'suffix'], [{ cache: 'dual' }, 'cache']] as const) {
      await assert.rejects(
        client.completions.create(completionParams({ model: 'tiny-bd3', prompt: 'Hello', max_tokens: 8, ...extra })),
        (err: unknown) => err instanceof OpenAI.APIError && err.status === 400 && err.param === param,
        param,
      );
    }
  });

  test('a prompt that fills the context is refused as too long, naming the prompt', async () => {
    await assert.rejects(
      client.completions.create({ model: 'tiny-bd3', prompt: 'the '.repeat(600) }),
      (err: unknown) => err instanceof OpenAI.APIError && err.status === 400 && err.code === 'context_length_exceeded' && err.param === 'prompt',
    );
  });

  test("include_canvas streams the model's own blocks: the first completes the prompt's last block", async () => {
    const prompt = 'Once upon a time';
    const promptTokens = (await client.completions.create({ model: 'tiny-bd3', prompt, max_tokens: 1 })).usage!.prompt_tokens;
    const sse = await readSse(`${s.url}/v1/completions`, { model: 'tiny-bd3', prompt, max_tokens: 40, stream: true, include_canvas: true, ignore_eos: true });
    assert.equal(sse.status, 200);
    assert.equal(sse.data.at(-1), '[DONE]');
    const chunks = sse.events.filter((c) => c.choices?.[0]?.diffusion);
    assert.ok(chunks.length > 0, 'step chunks came');
    const starts = chunks[0].choices[0].diffusion.block_starts as number[];
    const first = 16 - (promptTokens % 16); // prompt_tokens counts BOS, the canvas's position 0
    const expected = [0, ...[first, first + 16, first + 32].filter((i) => i > 0 && i < 40), 40];
    assert.deepEqual(starts, expected);
    assert.ok(chunks.every((c) => JSON.stringify(c.choices[0].diffusion.block_starts) === JSON.stringify(starts)));
  });
});
