// The embedded mode (ROLE=all, no Redis): the OpenAI client suite plus what only this mode can observe directly.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openaiSuite } from '../helpers/suite.js';
import { startEmbedded } from '../helpers/embedded.js';
import { jsonOf, type ReadyBody } from '../helpers/openai.js';
import type { Started } from '../../src/main.js';

let s: Started & { url: string };

describe('embedded mode: OpenAI client suite', () => {
  before(async () => {
    s = await startEmbedded({ MAX_BATCH_SIZE: '8' });
  });
  after(async () => {
    await s.stop();
  });
  openaiSuite(() => s.url);

  test('GET /health, /ready, /metrics, /docs', async () => {
    assert.deepEqual(await (await fetch(`${s.url}/health`)).json(), { status: 'ok' });
    const ready = await jsonOf<ReadyBody>(fetch(`${s.url}/ready`));
    assert.equal(ready.ready, true);
    assert.equal(ready.transport, 'local');
    assert.deepEqual(ready.providers, { 'cpu/fp32': 1 }); // the tiny model has no fp16 graph, and the provider is cpu
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    for (const name of ['dllm_queue_depth', 'dllm_batch_size', 'dllm_steps_total', 'dllm_generated_tokens_total', 'dllm_time_to_first_step_seconds', 'dllm_generation_seconds', 'dllm_http_requests_total']) {
      assert.ok(metrics.includes(name), name);
    }
    const docs = await fetch(`${s.url}/docs`);
    assert.equal(docs.status, 200);
    const json = await jsonOf<{ paths: Record<string, unknown> }>(fetch(`${s.url}/docs/json`));
    assert.ok(json.paths['/v1/completions']);
  });
});
