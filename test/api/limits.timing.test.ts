// Embedded mode, timed (npm run test:timing): the request time limit and the SSE keep-alive comments, both set to
// 100 ms here. Their verdicts depend on how long a real generation takes on this machine (a 504 needs one longer
// than the limit, a ping one longer than the keep-alive interval), so they run apart from limits.test.ts.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { startEmbedded } from '../helpers/embedded.js';
import { readSse } from '../helpers/sse.js';
import { waitFor } from '../helpers/net.js';
import { findLongRequest } from '../helpers/long.js';
import type { Started } from '../../src/main.js';

/** A seeded request that runs many steps on this model (see helpers/long.ts). */
let LONG: Record<string, unknown>;

before(async () => {
  const probe = await startEmbedded({});
  LONG = (await findLongRequest(probe.url)).body;
  await probe.stop();
});

describe('keep-alive (one batch slot, one queue place)', () => {
  let s: Started & { url: string };
  before(async () => {
    s = await startEmbedded({ MAX_BATCH_SIZE: '1', MAX_QUEUE: '1', SSE_KEEPALIVE_MS: '100' });
  });
  after(async () => {
    await s.stop();
  });

  test('keep-alive comments are sent while a stream runs', async () => {
    const raw = await readSse(`${s.url}/v1/completions`, { ...LONG, stream: true });
    assert.equal(raw.data.at(-1), '[DONE]');
    assert.ok(raw.comments.includes('ping'), `no ping in ${raw.comments.length} comments`);
  });
});

describe('request time limit', () => {
  let s: Started & { url: string };
  before(async () => {
    s = await startEmbedded({ REQUEST_TIMEOUT_MS: '100' });
  });
  after(async () => {
    await s.stop();
  });

  // 16 choices of a long generation: hundreds of milliseconds of steps even on a fast machine, never within 100 ms.
  test('non-streamed: 504 with the OpenAI error shape', async () => {
    const res = await request(s.server!.server).post('/v1/completions').send({ ...LONG, n: 16 });
    assert.equal(res.status, 504);
    assert.equal(res.body.error.code, 'timeout');
  });

  test('streamed: an error chunk, then [DONE]', async (t) => {
    const raw = await readSse(`${s.url}/v1/completions`, { ...LONG, n: 16, stream: true });
    if (raw.status === 504) {
      // A machine so slow that not even the first step came within the limit: a plain error, before any chunk.
      t.diagnostic('the first step did not come within the time limit');
    } else {
      assert.equal(raw.status, 200);
      assert.equal(raw.data.at(-1), '[DONE]');
      assert.equal(raw.events.at(-1).error.code, 'timeout');
    }
    await waitFor('slot freed', async () => (await s.engine!.health()).activeSequences === 0, 5_000, 5);
  });
});
