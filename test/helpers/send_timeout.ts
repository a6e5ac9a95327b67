// Servers for the send-timeout tests (HTTP_SEND_TIMEOUT_MS): a client that takes nothing is cut
// (test/api/send_timeout.test.ts, test/serving/sse.test.ts), one that pauses for less than the timeout is not
// (the *.timing.test.ts beside them).

import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { pipeSse } from '../../src/serving/sse.js';
import { addressOf } from './raw.js';
import { done, finish, syntheticApp, type Script } from './synthetic.js';

const MODEL = 'tiny-llada';
/** 20 MB of answer: more than the loopback socket buffers hold. */
export const BIG_TEXT = 'word '.repeat(4 * 1024 * 1024);

/** Answers "big" prompts with BIG_TEXT, "slow" ones after 4 s, others at once. */
const script: Script = async function* (request) {
  const prompt = request.promptTokenIds.length;
  if (prompt > 3) await new Promise((r) => setTimeout(r, 4_000));
  yield finish(0, prompt === 3 ? BIG_TEXT : 'Hello');
  yield done(prompt, 2);
};

/**
 * A raw completion request for `ids`. Prompt lengths with BOS: [6, 100] → 3 tokens → the big answer;
 * [6, 100, 101, 102] → answered after 4 s; [6] → "Hello" at once.
 */
export const completionRequest = (ids: number[]) => {
  const body = JSON.stringify({ model: MODEL, prompt: ids, max_tokens: 16 });
  return `POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
};

/** The app over the script above (non-streamed answers), listening, and a way to open connections to it. */
export async function answerServer(sendTimeoutMs: number) {
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

const PAD = 'x'.repeat(64 * 1024);

/** A server whose one route streams `count` chunks of 64 KiB (endless by default) with pipeSse, recording what it did. */
export async function streamingServer(sendTimeoutMs: number, count = Infinity) {
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
