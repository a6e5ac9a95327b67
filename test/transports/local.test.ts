// The in-process transport's load figures under real load: one request running in a batch of one, three waiting
// with two choices each, as /ready and /metrics report them (the Redis transport's are in redis.test.ts).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';
import { waitFor } from '../helpers/net.js';
import { reportedLoad } from './load.js';

let s: Awaited<ReturnType<typeof startEmbedded>>;
before(async () => {
  s = await startEmbedded({ MAX_BATCH_SIZE: '1', KV_CACHE: 'none' });
});
after(async () => s?.stop());

test('with N requests waiting, /ready and /metrics report N waiting requests, and their sequences apart', async () => {
  const held = new AbortController();
  const post = (body: object) =>
    fetch(`${s.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: held.signal }).catch(() => null);
  // A long request takes the only batch slot; three more of two choices each wait behind it.
  const long = { model: 'tiny-llada', prompt: 'Once upon a time', max_tokens: 512 - 8, steps: 512 - 8, block_length: 8, ignore_eos: true };
  const running = post(long);
  await waitFor('the long request running', async () => (await reportedLoad(s.url)).ready.runningRequests === 1);
  const waiting = [1, 2, 3].map(() => post({ ...long, max_tokens: 8, steps: 8, n: 2 }));
  const want = { waitingRequests: 3, runningRequests: 1, waitingSequences: 6, runningSequences: 1 };
  const seen = await waitFor('three requests waiting', async () => {
    const load = await reportedLoad(s.url);
    // /metrics reads a status at most 250 ms old: wait until both have seen the three.
    return load.ready.waitingRequests === 3 && load.metrics.waitingRequests === 3 ? load : null;
  });
  assert.deepEqual(seen.ready, want);
  assert.deepEqual(seen.metrics, { ...want, queueDepth: 3, batchSize: 1 });
  held.abort();
  await Promise.all([running, ...waiting]);
  const idle = await waitFor('idle', async () => {
    const load = await reportedLoad(s.url);
    return load.ready.runningRequests + load.ready.waitingRequests === 0 ? load : null;
  });
  assert.deepEqual(idle.ready, { waitingRequests: 0, runningRequests: 0, waitingSequences: 0, runningSequences: 0 });
});
