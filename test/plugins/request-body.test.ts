// src/plugins/request-body.ts: a body over the limit still gets its 413 (read to its end first, within bounds), and
// large JSON bodies are parsed one per turn of the event loop by Fastify's own parser (the same answers as for small
// bodies: invalid JSON, an empty body and prototype poisoning are 400s).

import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { INLINE_JSON_CHARS, LoopTurns, MAX_DRAIN_FACTOR } from '../../src/plugins/request-body.js';
import { addressOf } from '../helpers/raw.js';
import { done, events, finish, step, syntheticApp } from '../helpers/synthetic.js';

const MODEL = 'tiny-llada';
const HELLO = events(step(0, 0, 'Hel'), step(0, 1, 'lo'), finish(0, 'Hello'), done(2, 2));
const LIMIT = 64 * 1024;

/** A keep-alive connection that reads responses with a Content-Length one after another. */
class Connection {
  private readonly socket: Socket;
  private buffered = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  closed = false;
  /** performance.now() of the first byte of each response. */
  firstByteAt: number[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      if (this.buffered.length === 0) this.firstByteAt.push(performance.now());
      this.buffered = Buffer.concat([this.buffered, d]);
      this.wake?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on('error', () => undefined);
  }

  static open(url: string): Promise<Connection> {
    const { host, port } = addressOf(url);
    return new Promise((resolve, reject) => {
      const socket = connect(port, host, () => resolve(new Connection(socket)));
      socket.once('error', reject);
    });
  }

  /** Writes `data`, resolving once it is handed to the kernel. */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  async response(): Promise<{ status: number; headers: Record<string, string>; json: any }> {
    for (;;) {
      const end = this.buffered.indexOf('\r\n\r\n');
      if (end >= 0) {
        const [statusLine, ...lines] = this.buffered.subarray(0, end).toString().split('\r\n');
        const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
        const length = Number(headers['content-length']);
        if (this.buffered.length >= end + 4 + length) {
          const body = this.buffered.subarray(end + 4, end + 4 + length).toString();
          this.buffered = this.buffered.subarray(end + 4 + length);
          return { status: Number(statusLine.split(' ')[1]), headers, json: JSON.parse(body) };
        }
      }
      if (this.closed) throw new Error(`connection closed; received ${JSON.stringify(this.buffered.toString().slice(0, 200))}`);
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  close() {
    this.socket.destroy();
  }
}

const head = (length: number) => `POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;

test('a body over the limit is read to its end, then answered 413; the connection serves the next request', async () => {
  const { app } = await syntheticApp(HELLO, { BODY_LIMIT_BYTES: String(LIMIT) });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const c = await Connection.open(url);
  try {
    const body = Buffer.from(JSON.stringify({ model: MODEL, prompt: 'x'.repeat(4 * LIMIT) }));
    await c.write(head(body.length));
    // In pieces, with pauses: a server that answered at once would do so long before the last one was written. The
    // time is taken before that last write: the server cannot have seen it earlier.
    let lastWrite = 0;
    for (let off = 0; off < body.length; off += 16 * 1024) {
      if (off + 16 * 1024 >= body.length) lastWrite = performance.now();
      await c.write(body.subarray(off, off + 16 * 1024));
      await new Promise((r) => setTimeout(r, 5));
    }
    const refused = await c.response();
    assert.equal(refused.status, 413);
    assert.equal(refused.json.error.code, 'request_too_large');
    assert.equal(refused.json.error.type, 'invalid_request_error');
    assert.ok(c.firstByteAt[0] >= lastWrite, 'the answer came after the whole body was sent');
    assert.notEqual(refused.headers.connection, 'close');
    const small = JSON.stringify({ model: MODEL, prompt: 'Hello', max_tokens: 16 });
    await c.write(head(Buffer.byteLength(small)) + small);
    const served = await c.response();
    assert.equal(served.status, 200);
    assert.equal(served.json.choices[0].text, 'Hello');
  } finally {
    c.close();
    await app.close();
  }
});

test('a chunked body is served within the limit; past it, read to its end, then answered 413', async () => {
  const { app } = await syntheticApp(HELLO, { BODY_LIMIT_BYTES: String(LIMIT) });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const chunked = 'POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
  const chunk = (data: Buffer) => Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n')]);
  const c = await Connection.open(url);
  try {
    const small = Buffer.from(JSON.stringify({ model: MODEL, prompt: 'Hello', max_tokens: 16 }));
    await c.write(Buffer.concat([Buffer.from(chunked), chunk(small.subarray(0, 10)), chunk(small.subarray(10)), Buffer.from('0\r\n\r\n')]));
    const served = await c.response();
    assert.equal(served.status, 200);
    assert.equal(served.json.choices[0].text, 'Hello');

    const body = Buffer.from(JSON.stringify({ model: MODEL, prompt: 'x'.repeat(4 * LIMIT) }));
    await c.write(chunked);
    for (let off = 0; off < body.length; off += 16 * 1024) {
      await c.write(chunk(body.subarray(off, off + 16 * 1024)));
      await new Promise((r) => setTimeout(r, 5));
    }
    const lastWrite = performance.now(); // before the body's end is written: the server cannot have seen it earlier
    await c.write('0\r\n\r\n');
    const refused = await c.response();
    assert.equal(refused.status, 413);
    assert.equal(refused.json.error.code, 'request_too_large');
    assert.ok(c.firstByteAt[1] >= lastWrite, 'the answer came after the whole body was sent');
  } finally {
    c.close();
    await app.close();
  }
});

test(`a body declared over ${MAX_DRAIN_FACTOR}x the limit is answered 413 at once and the connection closed, nothing read`, async () => {
  const { app } = await syntheticApp(HELLO, { BODY_LIMIT_BYTES: String(LIMIT) });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const c = await Connection.open(url);
  try {
    await c.write(head(MAX_DRAIN_FACTOR * LIMIT + 1));
    const refused = await c.response();
    assert.equal(refused.status, 413);
    assert.equal(refused.json.error.code, 'request_too_large');
    assert.equal(refused.headers.connection, 'close');
    await new Promise<void>((resolve) => {
      const check = () => (c.closed ? resolve() : setTimeout(check, 10));
      check();
    });
  } finally {
    c.close();
    await app.close();
  }
});

test('LoopTurns: each waiter runs in a turn of its own; a timer that fell due during one runs before the next', async () => {
  const turns = new LoopTurns();
  const order: string[] = [];
  const busy = (ms: number) => {
    const until = performance.now() + ms;
    while (performance.now() < until);
  };
  const waiters = [1, 2, 3].map((i) =>
    turns.next().then(() => {
      order.push(`waiter ${i}`);
      setTimeout(() => order.push(`timer after ${i}`), 0);
      busy(5); // the timer is due before the loop turns again
    }),
  );
  await Promise.all(waiters);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, ['waiter 1', 'timer after 1', 'waiter 2', 'timer after 2', 'waiter 3', 'timer after 3']);
});

test('a large JSON body is parsed as a small one: valid, invalid, empty, prototype poisoning', async () => {
  const { app } = await syntheticApp(HELLO);
  try {
    const big = 'word '.repeat(Math.ceil(INLINE_JSON_CHARS / 5));
    const post = (payload: string) =>
      app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload });
    for (const filler of ['', big]) {
      const size = filler ? 'large' : 'small';
      // Whitespace is JSON too: a large body that parses to a small request, served.
      const ok = await post(JSON.stringify({ model: MODEL, prompt: 'Hello', max_tokens: 16 }) + ' '.repeat(filler.length));
      assert.equal(ok.statusCode, 200, `${size}: ${ok.body}`);
      assert.equal(ok.json().choices[0].text, 'Hello');
      // Parsed and judged: a prompt that cannot fit the context is refused by its length, not as malformed JSON.
      if (filler) {
        const long = await post(JSON.stringify({ model: MODEL, prompt: filler, max_tokens: 16 }));
        assert.equal(long.statusCode, 400);
        assert.equal(long.json().error.code, 'context_length_exceeded');
      }
      const invalid = await post(`{"model": "${MODEL}", "prompt": "${filler}`);
      assert.equal(invalid.statusCode, 400, `${size} invalid JSON`);
      assert.equal(invalid.json().error.type, 'invalid_request_error');
      const poisoned = await post(`{"model": "${MODEL}", "prompt": "${filler}", "__proto__": {"max_tokens": 1}}`);
      assert.equal(poisoned.statusCode, 400, `${size} __proto__`);
      assert.equal(poisoned.json().error.type, 'invalid_request_error');
      const constructed = await post(`{"model": "${MODEL}", "prompt": "${filler}", "constructor": {"prototype": {"a": 1}}}`);
      assert.equal(constructed.statusCode, 400, `${size} constructor.prototype`);
    }
    const empty = await post('');
    assert.equal(empty.statusCode, 400);
    assert.equal(empty.json().error.type, 'invalid_request_error');
  } finally {
    await app.close();
  }
});
