// src/serving/sse.ts over a real HTTP server and socket, timed (npm run test:timing): a client that stops reading for
// less than the send timeout (a 500 ms pause under 3 s), then reads, gets every chunk and [DONE]. A client that
// takes nothing: sse.test.ts.

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { streamingServer } from '../helpers/send_timeout.js';

test('a client that stops reading for less than the send timeout, then reads, gets every chunk and [DONE]', async () => {
  const { server, port, seen } = await streamingServer(3_000, 200);
  const client = connect(port, '127.0.0.1');
  try {
    let received = '';
    const finished = new Promise<void>((resolve) =>
      client.on('data', (d: Buffer) => {
        received += d.toString('latin1');
        if (received.endsWith('\r\n0\r\n\r\n')) resolve(); // the last chunk of the chunked encoding
      }),
    );
    client.write('GET / HTTP/1.1\r\nHost: test\r\n\r\n');
    await new Promise((r) => client.once('data', r));
    client.pause();
    await new Promise((r) => setTimeout(r, 500)); // the buffers fill and the server waits, under its timeout
    client.resume();
    await finished;
    assert.equal(received.split('data: ').length - 1, 1 + 200 + 1);
    assert.ok(received.includes('data: [DONE]'));
    assert.equal(seen.pulled, 200);
    assert.ok(seen.ended);
  } finally {
    client.destroy();
    server.close();
  }
});
