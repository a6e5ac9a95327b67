// docs/security.md: slow clients cannot hold sockets. The number of open connections is capped (HTTP_MAX_CONNECTIONS).
// The receive timeouts (a body or headers trickled, a silent connection closed within HTTP_REQUEST_TIMEOUT_MS /
// HTTP_HEADERS_TIMEOUT_MS while a long stream is untouched) are timed in slow_clients.timing.test.ts
// (npm run test:timing).

import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';
import { addressOf } from '../helpers/raw.js';
import { waitFor } from '../helpers/net.js';

describe('connection cap', () => {
  test('beyond HTTP_MAX_CONNECTIONS new connections are closed at once; served again when some close', async () => {
    const s = await startEmbedded({ HTTP_MAX_CONNECTIONS: '3' });
    const { host, port } = addressOf(s.url);
    const open = (): Promise<Socket> =>
      new Promise((resolve, reject) => {
        const c = connect(port, host, () => resolve(c));
        c.on('error', reject);
      });
    const sockets: Socket[] = [];
    try {
      const held = [await open(), await open(), await open()];
      sockets.push(...held);
      let closed = false;
      const extra = await open();
      sockets.push(extra);
      extra.on('close', () => (closed = true));
      extra.on('error', () => undefined);
      await waitFor('the fourth connection closed by the server', async () => closed, 5_000, 10);
      assert.ok(held.every((c) => !c.destroyed), 'the first three are still open');
      held.forEach((c) => c.destroy());
      // A connection made before the server has seen the three close is dropped like the fourth; fetch, when it is
      // the process's first (undici not yet warm), may never report that drop: each try gives up after a second.
      await waitFor('served again', async () => (await fetch(`${s.url}/health`, { signal: AbortSignal.timeout(1_000) })).status === 200, 5_000);
    } finally {
      sockets.forEach((c) => c.destroy());
      await s.stop();
    }
  });
});
