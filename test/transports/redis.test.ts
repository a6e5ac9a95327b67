// Redis mode with separate processes: API replicas (ROLE=api) and workers (ROLE=worker) on a private redis-server.
// The same OpenAI client suite as the embedded mode, then cancellation, the queue bound, and a worker crash. How fast
// a request learns that no worker is left (503 at once, an error chunk within the job lock) is timed apart, in
// redis.timing.test.ts (npm run test:timing).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { openaiSuite, MODEL } from '../helpers/suite.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startRole, urlOf, type RoleProcess } from '../helpers/procs.js';
import { reportedLoad } from './load.js';
import { readSse } from '../helpers/sse.js';
import { waitFor } from '../helpers/net.js';
import { findLongRequest } from '../helpers/long.js';
import { jsonOf, type ErrorBody, type ReadyBody } from '../helpers/openai.js';
import type { CompletionResponse } from '../../src/schemas/completions.js';

const SHORT = { model: MODEL, prompt: 'Once upon a time', max_tokens: 8, steps: 8 };
/** A seeded request that runs many steps on this model (see helpers/long.ts). */
let LONG: Record<string, unknown>;
const TIMEOUT_MS = 60_000;
const JOB_LOCK_MS = 2000;
const STALLED_INTERVAL_MS = 1000;

let redis: TestRedis;
const procs: RoleProcess[] = [];
let apiUrl = '';
let smallUrl = '';
let smallWorker: RoleProcess;
/** The worker of the queue "small" that the crash test left alive. */
let smallSurvivor: RoleProcess | undefined;
const alive = (p: RoleProcess | undefined): p is RoleProcess => p !== undefined && p.proc.exitCode === null && p.proc.signalCode === null;
let noWorkerUrl = '';
/** Two API replicas of the queue "small" with API_KEYS and RATE_LIMIT_PER_MINUTE: one budget across both. */
let limitedUrls: string[] = [];
const KEY = 'k-redis-secret';
const LIMIT = 4;

async function keysOf(id: string): Promise<string[]> {
  return (await redis.client.keys('*')).filter((k) => k.includes(id));
}

before(async () => {
  redis = await startRedis();
  const common = { REDIS_URL: redis.url, JOB_LOCK_MS: String(JOB_LOCK_MS), STALLED_INTERVAL_MS: String(STALLED_INTERVAL_MS), REQUEST_TIMEOUT_MS: String(TIMEOUT_MS) };
  // Queue "main": one API, one worker with a batch of 8. Queue "small": one batch slot, one queue place.
  const started = await Promise.all([
    startRole({ ...common, ROLE: 'worker', QUEUE_NAME: 'main', MAX_BATCH_SIZE: '8' }, 'worker started'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'main', PORT: '0' }, 'listening'),
    startRole({ ...common, ROLE: 'worker', QUEUE_NAME: 'small', MAX_BATCH_SIZE: '1' }, 'worker started'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'small', PORT: '0', MAX_QUEUE: '1' }, 'listening'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'nobody', PORT: '0' }, 'listening'),
    ...[1, 2].map(() =>
      startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'small', PORT: '0', API_KEYS: KEY, RATE_LIMIT_PER_MINUTE: String(LIMIT), TRUST_PROXY: 'loopback' }, 'listening'),
    ),
  ]);
  procs.push(...started);
  apiUrl = urlOf(started[1]);
  smallUrl = urlOf(started[3]);
  smallWorker = started[2];
  noWorkerUrl = urlOf(started[4]);
  limitedUrls = [urlOf(started[5]), urlOf(started[6])];
  for (const u of [apiUrl, smallUrl]) await waitFor('ready', async () => (await fetch(`${u}/ready`)).status === 200);
  LONG = (await findLongRequest(apiUrl)).body;
});

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await redis.stop();
});

describe('Redis mode (separate API and worker processes): OpenAI client suite', () => {
  openaiSuite(() => apiUrl);

  test('/ready sees the worker; /metrics answers', async () => {
    const ready = await jsonOf<ReadyBody>(fetch(`${apiUrl}/ready`));
    assert.equal(ready.transport, 'redis');
    assert.equal(ready.workers, 1);
    assert.equal(ready.max_batch_size, 8);
    assert.deepEqual(ready.providers, { 'cpu/fp32': 1 }); // from the worker's heartbeat
    assert.equal((await fetch(`${apiUrl}/metrics`)).status, 200);
  });

  test('/ready is 503 while no worker serves the queue', async () => {
    const res = await fetch(`${noWorkerUrl}/ready`);
    assert.equal(res.status, 503);
    assert.match((await jsonOf<ErrorBody>(res)).error.message, /no worker/);
    assert.equal((await fetch(`${noWorkerUrl}/health`)).status, 200);
  });

  test('API keys and the rate limit hold across API replicas (counters in Redis, keys never stored)', async () => {
    const get = (i: number, headers: Record<string, string>) => fetch(`${limitedUrls[i % 2]}/v1/models`, { headers }).then((r) => r.status);
    const withKey = { authorization: `Bearer ${KEY}`, 'x-forwarded-for': '198.51.100.1' };
    const statuses: number[] = [];
    for (let i = 0; i <= LIMIT; i++) statuses.push(await get(i, withKey));
    assert.deepEqual(statuses, [...Array(LIMIT).fill(200), 429], 'requests alternate between the replicas');
    // Wrong keys from one address, alternating replicas: 401 until the address's budget is spent, then 429, also
    // for the right key on the other replica.
    const guesses: number[] = [];
    for (let i = 0; i <= LIMIT; i++) guesses.push(await get(i, { authorization: `Bearer guess-${i}`, 'x-forwarded-for': '198.51.100.2' }));
    assert.deepEqual(guesses, [...Array(LIMIT).fill(401), 429]);
    assert.equal(await get(1, { authorization: `Bearer ${KEY}`, 'x-forwarded-for': '198.51.100.2' }), 429);
    assert.equal((await fetch(`${limitedUrls[0]}/v%31/models`, { headers: { 'x-forwarded-for': '198.51.100.3' } })).status, 401);
    const stored = await redis.client.keys('dllm:small:ratelimit:*');
    assert.ok(stored.length >= 3, stored.join(' '));
    assert.ok(stored.every((k) => !k.includes(KEY)), 'the key itself is never a Redis key');
  });
});

describe('Redis mode: cancellation, queue bound, worker crash', () => {
  test('a client that disconnects mid-stream frees its slot within two steps and leaves no Redis keys', async () => {
    const worker = procs[0];
    let id = '';
    await readSse(`${apiUrl}/v1/completions`, { ...LONG, stream: true }, {
      onEvent: (ev) => {
        id = ev.id;
        return ev.choices[0]?.diffusion?.step === 3;
      },
    });
    assert.match(id, /^cmpl-/);
    const line = await waitFor('worker cancelled the job', async () =>
      worker.logs.find((l) => l.includes(id) && l.includes('"msg":"job cancelled"')),
      10_000,
    );
    const { engineStepsSinceCancel } = JSON.parse(line) as { engineStepsSinceCancel: number };
    assert.ok(engineStepsSinceCancel <= 2, `${engineStepsSinceCancel} engine steps after the cancel arrived`);
    await waitFor('no keys of the request left', async () => (await keysOf(id)).length === 0, 5_000);
    await waitFor('worker idle', async () => (await jsonOf<ReadyBody>(fetch(`${apiUrl}/ready`))).active_sequences === 0, 5_000);
  });

  test('with N requests queued, /ready and /metrics report N waiting requests, and their sequences apart', async () => {
    // The queue paused (as an operator would): three requests of two choices each wait in it for a worker.
    const queue = new Queue('main', { connection: { url: redis.url } });
    await queue.pause();
    try {
      const waiting = [1, 2, 3].map(() =>
        fetch(`${apiUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...SHORT, n: 2 }) }),
      );
      const seen = await waitFor('three requests queued', async () => {
        const load = await reportedLoad(apiUrl);
        // /metrics reads a status at most 250 ms old: wait until both have seen the three.
        return load.ready.waitingRequests === 3 && load.metrics.waitingRequests === 3 ? load : null;
      }, 20_000);
      const want = { waitingRequests: 3, runningRequests: 0, waitingSequences: 6, runningSequences: 0 };
      assert.deepEqual(seen.ready, want);
      assert.deepEqual(seen.metrics, { ...want, queueDepth: 3, batchSize: 0 });
      await queue.resume();
      for (const res of await Promise.all(waiting)) assert.equal(res.status, 200);
    } finally {
      await queue.resume();
      await queue.close();
    }
  });

  test('a full queue answers 429 with Retry-After', async () => {
    // Deterministic: the queue is paused (BullMQ's own pause, as an operator would), so the worker, alive and
    // heartbeating, takes nothing; the first request waits, the queue (1 place) is full, the next one is refused.
    const queue = new Queue('small', { connection: { url: redis.url } });
    await queue.pause();
    try {
      const waiting = fetch(`${smallUrl}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(SHORT),
      });
      await waitFor('one request waiting', async () => (await jsonOf<ReadyBody>(fetch(`${smallUrl}/ready`))).queued >= 1, 20_000);
      const res = await fetch(`${smallUrl}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(SHORT),
      });
      assert.equal(res.status, 429, await res.clone().text());
      assert.ok(Number(res.headers.get('retry-after')) >= 1);
      assert.equal((await jsonOf<ErrorBody>(res)).error.code, 'queue_full');
      // Streams too: the refusal comes before any chunk, as a plain 429.
      const chat = await readSse(`${smallUrl}/v1/chat/completions`, { model: MODEL, messages: [{ role: 'user', content: 'hi' }], stream: true });
      assert.equal(chat.status, 429);
      assert.equal(chat.data.length, 0);
      await queue.resume();
      const served = await waiting;
      assert.equal(served.status, 200, 'the waiting request is served once the queue runs again');
    } finally {
      await queue.resume();
      await queue.close();
    }
    await waitFor('queue drained', async () => {
      const r = await jsonOf<ReadyBody>(fetch(`${smallUrl}/ready`));
      return r.queued === 0 && r.active_sequences === 0;
    }, 10_000);
    await waitFor('no event streams left', async () => (await redis.client.keys('dllm:small:ev:*')).length === 0, 5_000);
  });

  test('killing the worker mid-generation: the request still ends cleanly within the time limit', async (t) => {
    // A second worker on the queue; the one that holds the job is killed at step 5, the other one takes it up.
    const second = await startRole({ REDIS_URL: redis.url, JOB_LOCK_MS: '2000', STALLED_INTERVAL_MS: '1000', ROLE: 'worker', QUEUE_NAME: 'small', MAX_BATCH_SIZE: '1' }, 'worker started');
    procs.push(second);
    const workers = [smallWorker, second];
    const body = LONG;
    const reference = await jsonOf<CompletionResponse>(
      fetch(`${smallUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    );
    const t0 = Date.now();
    let killed: Promise<void> | null = null;
    const raw = await readSse(`${smallUrl}/v1/completions`, { ...body, stream: true }, {
      onEvent: (ev) => {
        if (ev.choices?.[0]?.diffusion?.step === 5 && !killed) {
          killed = waitFor('the worker holding the job', async () =>
            workers.find((w) => w.logs.some((l) => l.includes(ev.id) && l.includes('"msg":"job started"'))),
            5_000,
          ).then((holder) => holder.kill());
        }
      },
    });
    const elapsed = Date.now() - t0;
    assert.ok(killed, 'a worker was killed mid-generation');
    await killed;
    smallSurvivor = workers.find(alive);
    const last = raw.events.at(-1);
    t.diagnostic(`ended after ${elapsed} ms with ${last.error ? `an error: ${last.error.message}` : 'the full answer'}`);
    assert.ok(elapsed < TIMEOUT_MS + 5_000, `ended after ${elapsed} ms`);
    assert.equal(raw.data.at(-1), '[DONE]');
    if (last.error) {
      assert.equal(typeof last.error.message, 'string');
    } else {
      const text = raw.events.map((e) => e.choices?.[0]?.text ?? '').join('');
      assert.equal(text, reference.choices[0].text, 'the job taken up again gives the same answer');
      const steps = raw.events.filter((e) => e.choices?.[0]?.diffusion).map((e) => e.choices[0].diffusion.step);
      assert.deepEqual(steps, steps.map((_, i) => i), 'no step repeated or missing across the restart');
    }
    await waitFor('no keys of the request left', async () => (await keysOf(raw.events[0].id)).length === 0, 5_000);
  });
});

describe('Redis mode: logs', () => {
  test('JSON lines with request ids, and no prompt or completion text at info level', () => {
    const api = procs[1].logs.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(api.some((l) => typeof l.reqId === 'string' && l.msg === 'generation admitted'));
    for (const p of procs) {
      for (const line of p.logs) {
        for (const secret of ['Once upon a time', 'The cat sat on the', 'Tell me about cats']) {
          assert.ok(!line.includes(secret), `log line holds prompt text: ${line.slice(0, 200)}`);
        }
      }
    }
  });
});

describe('Redis mode: graceful shutdown', () => {
  test('SIGTERM: the worker finishes its running job, then both roles exit with 0', async () => {
    const [worker, api] = [procs[0], procs[1]];
    let stopping: Promise<number | null> | null = null;
    const raw = await readSse(`${apiUrl}/v1/completions`, { ...LONG, stream: true }, {
      onEvent: (ev) => {
        if (ev.choices?.[0]?.diffusion?.step === 2 && !stopping) stopping = worker.stop();
      },
    });
    assert.ok(stopping, 'the worker was asked to stop mid-generation');
    assert.equal(raw.data.at(-1), '[DONE]');
    assert.ok(raw.events.some((e) => e.choices?.[0]?.finish_reason), 'the running job finished');
    assert.equal(await stopping, 0);
    assert.equal(await api.stop(), 0);
  });
});

describe('Redis mode: Redis gone', () => {
  test('requests in flight and new ones end with 503 / service_unavailable, never 500; /ready says so', async (t) => {
    // One worker with one batch slot serves the queue "small", so that requests are running and others wait: the one
    // the crash test left, or a fresh one if it left none.
    if (!alive(smallSurvivor)) {
      const worker = await startRole({ REDIS_URL: redis.url, JOB_LOCK_MS: String(JOB_LOCK_MS), STALLED_INTERVAL_MS: String(STALLED_INTERVAL_MS), ROLE: 'worker', QUEUE_NAME: 'small', MAX_BATCH_SIZE: '1' }, 'worker started');
      procs.push(worker);
    }
    await waitFor('ready', async () => (await fetch(`${smallUrl}/ready`)).status === 200);
    let unblock: () => void;
    const begun = new Promise<void>((r) => (unblock = r));
    const streamed = readSse(`${smallUrl}/v1/completions`, { ...LONG, stream: true }, {
      onEvent: (ev) => {
        if (ev.choices?.[0]?.diffusion?.step === 2) unblock();
      },
    });
    await begun;
    // Queued behind the stream (one batch slot): in flight, not yet running.
    const plain = fetch(`${smallUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(LONG) });
    await waitFor('the plain request queued', async () => (await jsonOf<ReadyBody>(fetch(`${smallUrl}/ready`))).queued >= 1, 10_000, 20);
    const t0 = Date.now();
    await redis.stop();
    const [raw, res] = await Promise.all([streamed, plain]);
    t.diagnostic(`in flight ended ${Date.now() - t0} ms after Redis stopped`);
    assert.equal(raw.data.at(-1), '[DONE]');
    const last = raw.events.at(-1);
    assert.equal(last.error?.type, 'service_unavailable', JSON.stringify(last));
    assert.equal(last.error.code, 'not_ready');
    assert.equal(res.status, 503, await res.clone().text());
    assert.equal((await jsonOf<ErrorBody>(res)).error.type, 'service_unavailable');
    assert.ok(Date.now() - t0 < 15_000, 'in flight requests ended quickly');
    const t1 = Date.now();
    for (const stream of [false, true]) {
      const fresh = await fetch(`${smallUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...SHORT, stream }) });
      assert.equal(fresh.status, 503);
      assert.equal((await jsonOf<ErrorBody>(fresh)).error.code, 'not_ready');
    }
    assert.ok(Date.now() - t1 < 10_000);
    assert.equal((await fetch(`${smallUrl}/ready`)).status, 503);
    // The rate limit's store is gone too: 503, neither a free pass nor a 500.
    const limited = await fetch(`${limitedUrls[0]}/v1/models`, { headers: { authorization: `Bearer ${KEY}`, 'x-forwarded-for': '198.51.100.9' } });
    assert.equal(limited.status, 503, await limited.clone().text());
    assert.equal((await jsonOf<ErrorBody>(limited)).error.type, 'service_unavailable');
    // Without Redis there is nothing to shut down gracefully: end the processes here.
    await Promise.all(procs.map((p) => p.kill()));
  });
});
