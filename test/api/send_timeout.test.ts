// HTTP_SEND_TIMEOUT_MS for non-streamed answers (src/app.ts; streams: test/serving/sse.test.ts): a client that takes
// none of a large answer is disconnected. That a client pausing for less than the timeout gets all of it, and that
// the timeout never reaches the next request on the connection, is timed in send_timeout.timing.test.ts
// (npm run test:timing).

import { test } from 'node:test';
import { waitFor } from '../helpers/net.js';
import { answerServer, completionRequest } from '../helpers/send_timeout.js';

test('a client that takes none of a large answer is disconnected after the send timeout', async () => {
  const { app, open } = await answerServer(300);
  const client = await open();
  try {
    let closed = false;
    client.on('close', () => (closed = true));
    client.on('error', () => undefined);
    client.write(completionRequest([6, 100, 100]));
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
