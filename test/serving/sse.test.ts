// src/serving/sse.ts over a real HTTP server and socket: a client that takes nothing of a stream is disconnected after
// the send timeout and the chunks stop being pulled; a client that reads gets every chunk and [DONE].

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { test } from 'node:test';
import { pipeSse } from '../../src/serving/sse.js';
import { waitFor } from '../helpers/net.js';

const PAD = 'x'.repeat(64 * 1024);

/** A server whose one route streams `count` chunks of 64 KiB (endless by default), recording what pipeSse did. */
async function streamingServer(sendTimeoutMs: number, count = Infinity) {
  const seen = { pulled: 0, returned: false, ended: false };
  async function* chunks() {
    try {
      for (let i = 0; i < count; i++) {
        seen.pulled++;
        yield { i, pad: PAD };
      }
    } finally {
      seen.returned = true;
    }
  }
  const server: Server = createServer((req, res) => {
    void pipeSse(res, { first: true }, chunks(), { keepAliveMs: 60_000, sendTimeoutMs, headers: {} }).then(() => (seen.ended = true));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { server, port, seen };
}

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
