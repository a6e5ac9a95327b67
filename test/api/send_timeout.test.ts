// HTTP_SEND_TIMEOUT_MS for non-streamed answers (src/app.ts; streams: test/serving/sse.test.ts): a client that takes
// none of a large answer is disconnected; one that pauses for less than the timeout gets all of it; and the timeout
// never reaches the next request on the connection, which may wait silently for its generation longer than it.

import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { addressOf } from '../helpers/raw.js';
import { waitFor } from '../helpers/net.js';
import { done, finish, syntheticApp, type Script } from '../helpers/synthetic.js';

const MODEL = 'tiny-llada';
const BIG_TEXT = 'word '.repeat(4 * 1024 * 1024); // 20 MB of answer: more than the loopback socket buffers hold

/** Answers "big" prompts with BIG_TEXT, "slow" ones after 4 s, others at once. */
const script: Script = async function* (request) {
  const prompt = request.promptTokenIds.length;
  if (prompt > 3) await new Promise((r) => setTimeout(r, 4_000));
  yield finish(0, prompt === 3 ? BIG_TEXT : 'Hello');
  yield done(prompt, 2);
};
// Prompt lengths with BOS: [6, 100] → 3 tokens → big; [6, 100, 101, 102] → slow; [6] → hello.
const request = (ids: number[]) => {
  const body = JSON.stringify({ model: MODEL, prompt: ids, max_tokens: 16 });
  return `POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

async function server(sendTimeoutMs: number) {
  const { app } = await syntheticApp(script, { HTTP_SEND_TIMEOUT_MS: String(sendTimeoutMs) });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  const { host, port } = addressOf(url);
  const open = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = connect(port, host, () => resolve(s));
      s.once('error', reject);
    });
  return { app, open };
}

test('a client that takes none of a large answer is disconnected after the send timeout', async () => {
  const { app, open } = await server(300);
  const client = await open();
  try {
    let closed = false;
    client.on('close', () => (closed = true));
    client.on('error', () => undefined);
    client.write(request([6, 100, 100]));
    await new Promise((r) => client.once('data', r));
    client.pause();
    const connections = () => new Promise<number>((r) => app.server.getConnections((_e, n) => r(n)));
    await waitFor('the server closed the connection', async () => (await connections()) === 0, 20_000, 20);
    client.resume(); // the client sees the end once it reads again
    await waitFor('the client saw the close', async () => closed, 5_000, 20);
  } finally {
    client.destroy();
    await app.close();
  }
});

test('a client that pauses for less than the send timeout gets the whole answer; the next requests are not cut by it', async () => {
  const { app, open } = await server(1_000);
  const client = await open();
  try {
    let received = '';
    client.on('data', (d: Buffer) => (received += d.toString('latin1')));
    // Three pipelined requests: the big answer, read after a pause; then one that waits 4 s for its generation, so
    // seconds after the big answer went out with nothing sent (a send timeout left on the socket would cut it); then
    // a quick one.
    client.write(request([6, 100, 100]) + request([6, 100, 101, 102]) + request([6]));
    await new Promise((r) => client.once('data', r));
    client.pause();
    await new Promise((r) => setTimeout(r, 200));
    client.resume();
    const responses = () => received.split('HTTP/1.1 ').slice(1);
    await waitFor('three responses', async () => responses().length === 3 && responses()[2].includes('"Hello"'), 30_000, 100);
    const [big, slow, quick] = responses();
    for (const r of [big, slow, quick]) assert.match(r, /^200 OK/);
    assert.ok(big.includes(`"text":"${BIG_TEXT.slice(0, 100)}`) && big.length > BIG_TEXT.length, 'the whole big answer');
    assert.match(slow, /"text":"Hello"/);
    assert.match(quick, /"text":"Hello"/);
  } finally {
    client.destroy();
    await app.close();
  }
});
