// docs/security.md: the bound that refuses text comes from the model folder (its context length and tokenizer), never
// from a constant. A prompt within the context is served; one past it is refused by its token count, or, far past it,
// by the byte bound before any tokenizing. How long refusing 1 MiB bodies holds up a running stream and /health is
// timed in big_prompts.timing.test.ts (npm run test:timing).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';
import { jsonOf, type ErrorBody, type ModelListBody } from '../helpers/openai.js';
import type { Started } from '../../src/main.js';

const MODEL = 'tiny-llada';

describe('prompts against the context length', () => {
  let s: Started & { url: string };

  before(async () => {
    s = await startEmbedded({ MAX_BATCH_SIZE: '1', ORT_THREADS: '1' });
  });
  after(async () => {
    await s.stop();
  });

  test('a prompt that fits is served; past the context one is refused, by the byte bound or by its token count', async () => {
    const post = (prompt: string) =>
      fetch(`${s.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, prompt, max_tokens: 8, steps: 8 }),
      });
    // The context length of the model folder, as the API reports it (never a constant of the test).
    const context = (await jsonOf<ModelListBody>(fetch(`${s.url}/v1/models`))).data[0].max_model_len;
    assert.ok(context !== undefined && context > 0, 'the model card gives its context length');
    const ok = await post('word '.repeat(Math.floor(context / 4)));
    assert.equal(ok.status, 200, await ok.clone().text());
    // Past the context by its tokens (5 bytes a word: under the byte bound, so it is tokenized and counted).
    const counted = await jsonOf<ErrorBody>(post('word '.repeat(context + 8)));
    assert.equal(counted.error.code, 'context_length_exceeded');
    assert.match(counted.error.message, /you requested \d+ tokens/);
    // Far past it: refused by the byte bound before any tokenizing ("at least").
    const bounded = await jsonOf<ErrorBody>(post('word '.repeat(context * 20)));
    assert.equal(bounded.error.code, 'context_length_exceeded');
    assert.match(bounded.error.message, /at least \d+ tokens/);
  });
});
