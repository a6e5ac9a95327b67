// Embedded mode: queue bound, client disconnect, graceful shutdown, API keys, rate limit, request ids. The real engine
// and model; small settings. The request time limit and keep-alive comments, whose verdicts depend on how long a
// generation takes on this machine, are in limits.timing.test.ts (npm run test:timing).

import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import OpenAI from 'openai';
import { startEmbedded } from '../helpers/embedded.js';
import { readSse } from '../helpers/sse.js';
import { sleep, waitFor } from '../helpers/net.js';
import { findLongRequest } from '../helpers/long.js';
import type { Started } from '../../src/main.js';

const MODEL = 'tiny-llada';
const SHORT = { model: MODEL, prompt: 'Once upon a time', max_tokens: 8, steps: 8 };
/** A seeded request that runs many steps on this model (see helpers/long.ts). */
let LONG: Record<string, unknown>;

before(async () => {
  const probe = await startEmbedded({});
  LONG = (await findLongRequest(probe.url)).body;
  await probe.stop();
});

describe('one batch slot, one queue place', () => {
  let s: Started & { url: string };
  before(async () => {
    s = await startEmbedded({ MAX_BATCH_SIZE: '1', MAX_QUEUE: '1' });
  });
  after(async () => {
    await s.stop();
  });

  test('a full queue answers 429 with Retry-After, and serves again once there is room', async () => {
    // One request of two prompts takes both places (a batch slot, a queue place) for as long as it is not stopped:
    // 2 × 16 choices of a long seeded generation run one after another on the single slot, hundreds of steps, and the
    // test stops it itself once it has seen the 429s (no race with a generation that might end first).
    const held = new AbortController();
    const running = readSse(`${s.url}/v1/completions`, { ...LONG, prompt: [LONG.prompt, LONG.prompt], n: 16, stream: true }, { signal: held.signal }).catch(() => null);
    await waitFor('two requests in flight', async () => {
      const st = await s.transport!.status();
      return st.load.runningRequests + st.load.waitingRequests >= 2;
    });
    const res = await request(s.server!.server).post('/v1/completions').send(SHORT);
    assert.equal(res.status, 429);
    assert.equal(res.body.error.type, 'rate_limit_error');
    assert.ok(Number(res.headers['retry-after']) >= 1);
    // Streams too: the refusal comes before any chunk, as a plain 429.
    const chat = await readSse(`${s.url}/v1/chat/completions`, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], stream: true });
    assert.equal(chat.status, 429);
    assert.equal(chat.data.length, 0);
    held.abort();
    await running;
    await waitFor('slots free', async () => (await s.transport!.status()).load.runningSequences === 0);
    const ok = await request(s.server!.server).post('/v1/completions').send(SHORT);
    assert.equal(ok.status, 200);
  });

  test('a client that disconnects mid-stream frees its batch slot within two steps', async (t) => {
    const engine = s.engine!;
    // Counted from the moment the server sees the connection close (a response closed before it finished): how far
    // the client's own reader lagged behind the stream before it left is not the server's doing.
    let stepsAtClose: number | null = null;
    const onRequest = (_req: IncomingMessage, res: ServerResponse) =>
      res.once('close', () => {
        if (!res.writableFinished) stepsAtClose ??= engine.stats.steps;
      });
    s.server!.server.on('request', onRequest);
    try {
      await readSse(`${s.url}/v1/completions`, { ...LONG, stream: true }, {
        onEvent: (ev) => ev.choices[0]?.diffusion?.step === 3, // true cancels the reader: the connection closes
      });
      await waitFor('slot freed', async () => (await engine.health()).activeSequences === 0, 10_000, 2);
    } finally {
      s.server!.server.off('request', onRequest);
    }
    assert.notEqual(stepsAtClose, null, 'the server saw the stream close before it finished');
    const extra = engine.stats.steps - stepsAtClose!;
    t.diagnostic(`${extra} steps after the server saw the client leave`);
    assert.ok(extra <= 2, `engine ran ${extra} steps after the client left`);
  });
});

describe('API keys, rate limit, request ids', () => {
  let s: Started & { url: string };
  before(async () => {
    s = await startEmbedded({ API_KEYS: 'key-one, key-two', RATE_LIMIT_PER_MINUTE: '3' });
  });
  after(async () => {
    await s.stop();
  });

  test('401 without a key or with a wrong one; health stays open (every form of target: test/api/access.test.ts)', async () => {
    const app = s.server!.server;
    const none = await request(app).get('/v1/models');
    assert.equal(none.status, 401);
    assert.equal(none.body.error.type, 'authentication_error');
    assert.equal((await request(app).get('/v1/models').set('authorization', 'Bearer key-three')).status, 401);
    assert.equal((await request(app).get('/health')).status, 200);
    const sdk = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'key-two', maxRetries: 0 });
    assert.equal((await sdk.models.list()).data[0].id, MODEL);
  });

  test('per-key rate limit: 429 with Retry-After; other keys unaffected', async () => {
    const app = s.server!.server;
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await request(app).get('/v1/models').set('authorization', 'Bearer key-one')).status);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
    const limited = await request(app).get('/v1/models').set('authorization', 'Bearer key-one');
    assert.ok(Number(limited.headers['retry-after']) >= 1);
    assert.equal(limited.body.error.code, 'rate_limit_exceeded');
  });

  test('x-request-id is echoed, or made up', async () => {
    const app = s.server!.server;
    assert.equal((await request(app).get('/health').set('x-request-id', 'abc-123')).headers['x-request-id'], 'abc-123');
    assert.ok((await request(app).get('/health')).headers['x-request-id']);
    const odd = (await request(app).get('/health').set('x-request-id', 'x'.repeat(500))).headers['x-request-id'];
    assert.ok(odd && odd.length < 100, 'an oversized id is replaced');
    // Deny by default: without a key, an unknown path is a 401 like any route that is not public (test/api/access.test.ts).
    assert.equal((await request(app).get('/nope').set('authorization', 'Bearer key-two')).status, 404);
    assert.equal((await request(app).get('/nope')).status, 401);
  });
});

describe('graceful shutdown', () => {
  test('running generations finish before the server stops', async () => {
    const s = await startEmbedded({});
    const running = readSse(`${s.url}/v1/completions`, { ...LONG, stream: true });
    await waitFor('generation running', async () => (await s.engine!.health()).activeSequences > 0, 10_000, 5);
    await sleep(20);
    await s.stop();
    const raw = await running;
    assert.equal(raw.data.at(-1), '[DONE]');
    assert.ok(raw.events.some((e) => e.choices?.[0]?.finish_reason), 'the generation finished');
  });

  test('past SHUTDOWN_TIMEOUT_MS a running stream ends with an error chunk, then [DONE]', async () => {
    const s = await startEmbedded({ SHUTDOWN_TIMEOUT_MS: '0' });
    let stopping: Promise<void> | null = null;
    const raw = await readSse(`${s.url}/v1/completions`, { ...LONG, stream: true }, {
      onEvent: (ev) => {
        if (ev.choices?.[0]?.diffusion?.step === 1 && !stopping) stopping = s.stop();
      },
    });
    await stopping;
    assert.equal(raw.status, 200);
    assert.equal(raw.data.at(-1), '[DONE]');
    const last = raw.events.at(-1);
    assert.equal(last.error.code, 'not_ready', JSON.stringify(last));
    assert.ok(raw.events.length > 1, 'steps came before the error');
  });
});
