// HTTP_SEND_TIMEOUT_MS for non-streamed answers (src/app.ts), timed (npm run test:timing): a client that pauses for
// less than the timeout gets the whole answer, and the timeout never reaches the next request on the connection,
// which may wait silently for its generation longer than it. The verdict rests on wall-clock intervals (a 200 ms
// pause under a 1 s timeout, a 4 s silence over it). A client that takes nothing: send_timeout.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from '../helpers/net.js';
import { answerServer, BIG_TEXT, completionRequest } from '../helpers/send_timeout.js';

test('a client that pauses for less than the send timeout gets the whole answer; the next requests are not cut by it', async () => {
  const { app, open } = await answerServer(1_000);
  const client = await open();
  try {
    let received = '';
    client.on('data', (d: Buffer) => (received += d.toString('latin1')));
    // Three pipelined requests: the big answer, read after a pause; then one that waits 4 s for its generation, so
    // seconds after the big answer went out with nothing sent (a send timeout left on the socket would cut it); then
    // a quick one.
    client.write(completionRequest([6, 100, 100]) + completionRequest([6, 100, 101, 102]) + completionRequest([6]));
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
