// TRUST_PROXY: behind a gateway, the client address (logs, the keyless rate limit) comes from X-Forwarded-For,
// but only when the peer is a trusted proxy.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';

async function statusesFor(trustProxy: string): Promise<number[]> {
  const s = await startEmbedded({ RATE_LIMIT_PER_MINUTE: '1', TRUST_PROXY: trustProxy });
  try {
    const get = (client: string) => fetch(`${s.url}/v1/models`, { headers: { 'x-forwarded-for': client } }).then((r) => r.status);
    return [await get('203.0.113.1'), await get('203.0.113.1'), await get('203.0.113.2')];
  } finally {
    await s.stop();
  }
}

test('a trusted proxy: each forwarded client has its own rate-limit budget', async () => {
  assert.deepEqual(await statusesFor('loopback'), [200, 429, 200]);
});

test('no trusted proxy: X-Forwarded-For is ignored, every request counts against the peer', async () => {
  assert.deepEqual(await statusesFor(''), [200, 429, 429]);
});
