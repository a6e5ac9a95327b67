// Redis mode with separate processes: API replicas (ROLE=api) and workers (ROLE=worker) on a private redis-server.
// The same OpenAI client suite as the embedded mode, then cancellation, the queue bound, and a worker crash.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openaiSuite, MODEL } from '../helpers/suite.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startRole, urlOf, type RoleProcess } from '../helpers/procs.js';
import { readSse } from '../helpers/sse.js';
import { waitFor } from '../helpers/net.js';
import { findLongRequest } from '../helpers/long.js';

const SHORT = { model: MODEL, prompt: 'Once upon a time', max_tokens: 8, steps: 8 };
/** A seeded request that runs many steps on this model (see helpers/long.ts). */
let LONG: Record<string, unknown>;
const TIMEOUT_MS = 60_000;

let redis: TestRedis;
const procs: RoleProcess[] = [];
let apiUrl = '';
let smallUrl = '';
let smallWorker: RoleProcess;
let noWorkerUrl = '';

async function keysOf(id: string): Promise<string[]> {
  return (await redis.client.keys('*')).filter((k) => k.includes(id));
}

before(async () => {
  redis = await startRedis();
  const common = { REDIS_URL: redis.url, JOB_LOCK_MS: '2000', STALLED_INTERVAL_MS: '1000', REQUEST_TIMEOUT_MS: String(TIMEOUT_MS) };
  // Queue "main": one API, one worker with a batch of 8. Queue "small": one batch slot, one queue place.
  const started = await Promise.all([
    startRole({ ...common, ROLE: 'worker', QUEUE_NAME: 'main', MAX_BATCH_SIZE: '8' }, 'worker started'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'main', PORT: '0' }, 'listening'),
    startRole({ ...common, ROLE: 'worker', QUEUE_NAME: 'small', MAX_BATCH_SIZE: '1' }, 'worker started'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'small', PORT: '0', MAX_QUEUE: '1' }, 'listening'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'nobody', PORT: '0' }, 'listening'),
  ]);
  procs.push(...started);
  apiUrl = urlOf(started[1]);
  smallUrl = urlOf(started[3]);
  smallWorker = started[2];
  noWorkerUrl = urlOf(started[4]);
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
    const ready = (await (await fetch(`${apiUrl}/ready`)).json()) as any;
    assert.equal(ready.transport, 'redis');
    assert.equal(ready.workers, 1);
    assert.equal(ready.max_batch_size, 8);
    assert.deepEqual(ready.providers, { 'cpu/fp32': 1 }); // from the worker's heartbeat
    assert.equal((await fetch(`${apiUrl}/metrics`)).status, 200);
  });

  test('/ready is 503 while no worker serves the queue', async () => {
    const res = await fetch(`${noWorkerUrl}/ready`);
    assert.equal(res.status, 503);
    assert.match(((await res.json()) as any).error.message, /no worker/);
    assert.equal((await fetch(`${noWorkerUrl}/health`)).status, 200);
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
    await waitFor('worker idle', async () => ((await (await fetch(`${apiUrl}/ready`)).json()) as any).active_sequences === 0, 5_000);
  });

  test('a full queue answers 429 with Retry-After', async () => {
    const acs = [new AbortController(), new AbortController()];
    // Requests of 60+ steps keep the single slot busy long enough to see the second one waiting.
    const longer = (await findLongRequest(apiUrl, 60, 'queue-full')).body;
    const running = acs.map((ac) => readSse(`${smallUrl}/v1/completions`, { ...longer, stream: true }, { signal: ac.signal }).catch(() => null));
    // One job runs on the single slot, one waits: the queue (1 place) is full.
    await waitFor('one active, one waiting', async () => {
      const r = (await (await fetch(`${smallUrl}/ready`)).json()) as any;
      return r.queued >= 1;
    }, 20_000);
    const res = await fetch(`${smallUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(SHORT),
    });
    assert.equal(res.status, 429, await res.clone().text());
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
    assert.equal(((await res.json()) as any).error.code, 'queue_full');
    acs.forEach((ac) => ac.abort());
    await Promise.all(running);
    await waitFor('queue drained', async () => {
      const r = (await (await fetch(`${smallUrl}/ready`)).json()) as any;
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
    const reference = (await (await fetch(`${smallUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })).json()) as any;
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
  test('requests get 503 quickly (not a hang), and /ready says so', async () => {
    await redis.stop();
    const t0 = Date.now();
    const res = await fetch(`${smallUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(SHORT),
    });
    assert.equal(res.status, 503);
    assert.equal(((await res.json()) as any).error.code, 'not_ready');
    assert.ok(Date.now() - t0 < 10_000);
    assert.equal((await fetch(`${smallUrl}/ready`)).status, 503);
    // Without Redis there is nothing to shut down gracefully: end the processes here.
    await Promise.all(procs.map((p) => p.kill()));
  });
});
