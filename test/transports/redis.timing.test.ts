// Redis mode, timed (npm run test:timing): how soon a request learns that no worker serves its queue. With none at
// all, a new request is refused at once instead of waiting out the request time limit; when the last worker dies
// mid-stream, the stream ends with an error chunk within the heartbeat staleness, the job lock and the stalled
// interval. The verdicts measure wall-clock time (bounds of seconds) on separate processes: apart from
// redis.test.ts, whose checks do not depend on how fast the machine is.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { MODEL } from '../helpers/suite.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startRole, urlOf, type RoleProcess } from '../helpers/procs.js';
import { readSse } from '../helpers/sse.js';
import { waitFor } from '../helpers/net.js';
import { findLongRequest } from '../helpers/long.js';
import { jsonOf, type ErrorBody } from '../helpers/openai.js';

const SHORT = { model: MODEL, prompt: 'Once upon a time', max_tokens: 8, steps: 8 };
/** A seeded request that runs many steps on this model (see helpers/long.ts). */
let LONG: Record<string, unknown>;
const TIMEOUT_MS = 60_000;
const JOB_LOCK_MS = 2000;
const STALLED_INTERVAL_MS = 1000;

let redis: TestRedis;
const procs: RoleProcess[] = [];
/** The queue "small": one API, one worker with one batch slot. */
let smallUrl = '';
let smallWorker: RoleProcess;
/** An API of a queue no worker serves. */
let noWorkerUrl = '';

async function keysOf(id: string): Promise<string[]> {
  return (await redis.client.keys('*')).filter((k) => k.includes(id));
}

before(async () => {
  redis = await startRedis();
  const common = { REDIS_URL: redis.url, JOB_LOCK_MS: String(JOB_LOCK_MS), STALLED_INTERVAL_MS: String(STALLED_INTERVAL_MS), REQUEST_TIMEOUT_MS: String(TIMEOUT_MS) };
  const started = await Promise.all([
    startRole({ ...common, ROLE: 'worker', QUEUE_NAME: 'small', MAX_BATCH_SIZE: '1' }, 'worker started'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'small', PORT: '0', MAX_QUEUE: '1' }, 'listening'),
    startRole({ ...common, ROLE: 'api', QUEUE_NAME: 'nobody', PORT: '0' }, 'listening'),
  ]);
  procs.push(...started);
  smallWorker = started[0];
  smallUrl = urlOf(started[1]);
  noWorkerUrl = urlOf(started[2]);
  await waitFor('ready', async () => (await fetch(`${smallUrl}/ready`)).status === 200);
  LONG = (await findLongRequest(smallUrl)).body;
});

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await redis.stop();
});

describe('Redis mode: no worker left, timed', () => {
  test('no live worker: a new request gets 503 at once, streamed or not, instead of waiting out the time limit', async (t) => {
    for (const stream of [false, true]) {
      const t0 = Date.now();
      const res = await fetch(`${noWorkerUrl}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...SHORT, stream }),
      });
      const ms = Date.now() - t0;
      t.diagnostic(`stream: ${stream}: ${res.status} after ${ms} ms`);
      assert.equal(res.status, 503);
      assert.ok(Number(res.headers.get('retry-after')) >= 1);
      const body = await jsonOf<ErrorBody>(res);
      assert.equal(body.error.type, 'service_unavailable');
      assert.match(body.error.message, /no worker/);
      assert.ok(ms < 2000, `answered after ${ms} ms`);
    }
    assert.equal((await redis.client.keys('dllm:nobody:ev:*')).length, 0);
    const queue = new Queue('nobody', { connection: { url: redis.url } });
    try {
      assert.equal(await queue.getWaitingCount(), 0, 'nothing was queued');
    } finally {
      await queue.close();
    }
  });

  test('killing the last worker mid-stream: an error chunk within job lock + stalled interval + a few seconds', async (t) => {
    // One worker serves the queue "small": kill it at step 3 of a long stream.
    const holder = smallWorker;
    let killedAt = 0;
    let killing: Promise<void> | null = null;
    const raw = await readSse(`${smallUrl}/v1/completions`, { ...LONG, stream: true }, {
      onEvent: (ev) => {
        if (ev.choices?.[0]?.diffusion?.step === 3 && !killing) {
          killedAt = Date.now();
          killing = holder.kill();
        }
      },
    });
    const ms = Date.now() - killedAt;
    assert.ok(killing, 'the worker was killed mid-stream');
    await killing;
    const last = raw.events.at(-1);
    t.diagnostic(`ended ${ms} ms after the kill: ${JSON.stringify(last).slice(0, 200)}`);
    assert.equal(raw.data.at(-1), '[DONE]');
    assert.equal(last.error?.type, 'service_unavailable', JSON.stringify(last));
    assert.match(last.error.message, /no worker/);
    // Heartbeat staleness (3 s) + one XREAD block (1 s) + JOB_LOCK_MS + STALLED_INTERVAL_MS, and slack for a busy machine.
    assert.ok(ms < 3000 + 1000 + JOB_LOCK_MS + STALLED_INTERVAL_MS + 5000, `ended ${ms} ms after the kill`);
    assert.ok(ms < TIMEOUT_MS / 2, 'long before the request time limit');
    // And a new request is refused at once.
    const t0 = Date.now();
    const res = await fetch(`${smallUrl}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(SHORT) });
    assert.equal(res.status, 503);
    assert.ok(Date.now() - t0 < 2000);
    await waitFor('no keys of the request left', async () => (await keysOf(raw.events[0].id)).length === 0, 5_000);
  });
});
