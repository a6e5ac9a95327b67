// src/serving/sse.ts over a real HTTP server and socket: a client that takes nothing of a stream is disconnected after
// the send timeout and the chunks stop being pulled. That a client pausing for less than the timeout gets every
// chunk and [DONE] is timed in sse.timing.test.ts (npm run test:timing).

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { waitFor } from '../helpers/net.js';
import { streamingServer } from '../helpers/send_timeout.js';

test('a client that takes nothing is disconnected after the send timeout; the chunks are stopped, not drained', async () => {
  const SEND_TIMEOUT_MS = 300;
  const { server, port, seen } = await streamingServer(SEND_TIMEOUT_MS);
  const client = connect(port, '127.0.0.1');
  try {
    client.write('GET / HTTP/1.1\r\nHost: test\r\n\r\n');
    await new Promise((r) => client.once('data', r));
    client.pause(); // takes nothing more: the kernel's buffers fill, then the server's
    await waitFor('the server closed the stream', async () => seen.ended, 20_000, 20);
    const pulledAtEnd = seen.pulled;
    assert.ok(seen.returned, 'the chunk iterator was closed');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(seen.pulled, pulledAtEnd, 'no chunk pulled after the connection closed');
  } finally {
    client.destroy();
    server.close();
  }
});
