// docs/security.md: slow clients cannot hold sockets. A body trickled a byte at a time, headers trickled, and a connection
// that sends nothing are closed within HTTP_REQUEST_TIMEOUT_MS / HTTP_HEADERS_TIMEOUT_MS (set short here), the body
// one with a 408 and the OpenAI error object; meanwhile a stream on another connection that outlives the request
// timeout several times, and a non-streamed request that waits longer than it, are untouched. Timed (npm run
// test:timing): the verdicts are durations against those timeouts. The connection cap is in slow_clients.test.ts.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEmbedded } from '../helpers/embedded.js';
import { addressOf, slowClient } from '../helpers/raw.js';
import { readSse } from '../helpers/sse.js';
import type { Started } from '../../src/main.js';

const REQUEST_TIMEOUT_MS = 1000;
const HEADERS_TIMEOUT_MS = 500;
/** Slack for a loaded machine: Node checks the timeouts every tenth of the headers timeout, the test polls too. */
const SLACK_MS = 5000;

describe('request-receive timeouts', () => {
  let s: Started & { url: string };
  /** A streamed request that lasts several request timeouts on this machine. */
  let stream: { body: Record<string, unknown> };

  before(async () => {
    s = await startEmbedded({
      MAX_BATCH_SIZE: '1',
      HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
      HTTP_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
    });
    // The choices of one request run one after another on a single batch slot. With ignore_eos every choice runs all
    // its steps (none ends early at end-of-text), so the stream's length is n times one choice's, measured warm (the
    // faster of two runs), and n is chosen for at least 6 request timeouts however fast this machine is.
    const one = { model: 'tiny-llada', prompt: 'Once upon a time', max_tokens: 64, steps: 64, ignore_eos: true, seed: 7 };
    let fastest = Infinity;
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      await readSse(`${s.url}/v1/completions`, { ...one, stream: true });
      fastest = Math.min(fastest, performance.now() - t0);
    }
    const n = Math.min(16, Math.max(2, Math.ceil((6 * REQUEST_TIMEOUT_MS) / fastest)));
    stream = { body: { ...one, n, stream: true } };
  });
  after(async () => {
    await s.stop();
  });

  test('trickled body, trickled headers and a silent connection are closed in time; a long stream is untouched', async (t) => {
    let streamEnded = false;
    const t0 = performance.now();
    let firstChunk: () => void;
    const begun = new Promise<void>((r) => (firstChunk = r));
    const running = readSse(`${s.url}/v1/completions`, stream.body, { onEvent: () => void firstChunk() }).then((r) => {
      streamEnded = true;
      return r;
    });
    await begun;
    // A non-streamed request queued behind the stream: it waits longer than the request timeout, silently.
    const queued = fetch(`${s.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny-llada', prompt: 'Hello', max_tokens: 8, steps: 8 }),
    });
    const { host, port } = addressOf(s.url);
    const head = `POST /v1/completions HTTP/1.1\r\nHost: ${host}:${port}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`;
    const [body, headers, silent] = await Promise.all([
      slowClient(s.url, head, '{"model": "tiny-llada", "prompt": "', 200, 20_000).then((r) => ({ ...r, streamEnded })),
      slowClient(s.url, 'POST /v1/completions HTTP/1.1\r\n', 'X-Slow: aaaaaaaaaaaaaa\r\n', 100, 20_000),
      slowClient(s.url, '', '', 0, 20_000),
    ]);
    t.diagnostic(`closed after: body ${body.closedAfterMs.toFixed(0)} ms, headers ${headers.closedAfterMs.toFixed(0)} ms, silent ${silent.closedAfterMs.toFixed(0)} ms`);
    assert.ok(body.closedAfterMs < REQUEST_TIMEOUT_MS + SLACK_MS, `trickled body closed after ${body.closedAfterMs} ms`);
    assert.ok(body.closedAfterMs >= REQUEST_TIMEOUT_MS * 0.9, `closed before its time: ${body.closedAfterMs} ms`);
    assert.equal(body.response?.status, 408, JSON.stringify(body.response));
    assert.equal(body.response?.json?.error?.code, 'request_timeout');
    assert.equal(body.response?.json?.error?.type, 'invalid_request_error');
    assert.equal(body.streamEnded, false, 'the stream was still running when the trickled body was cut');
    for (const [what, r] of [['headers', headers], ['silent', silent]] as const) {
      assert.ok(r.closedAfterMs < HEADERS_TIMEOUT_MS + SLACK_MS, `${what}: closed after ${r.closedAfterMs} ms`);
      if (r.response) assert.equal(r.response.status, 408, `${what}: ${JSON.stringify(r.response)}`);
    }
    const raw = await running;
    const elapsed = performance.now() - t0;
    t.diagnostic(`the stream lasted ${elapsed.toFixed(0)} ms (${(elapsed / REQUEST_TIMEOUT_MS).toFixed(1)} request timeouts)`);
    assert.equal(raw.status, 200);
    assert.equal(raw.data.at(-1), '[DONE]');
    assert.ok(raw.events.every((e) => !e.error), 'no error chunk');
    assert.ok(raw.events.filter((e) => e.choices?.[0]?.finish_reason).length === stream.body.n, 'every choice finished');
    assert.ok(elapsed > 2 * REQUEST_TIMEOUT_MS, `the stream outlived the request timeout (${elapsed} ms)`);
    const done = await queued;
    assert.equal(done.status, 200, await done.clone().text());
  });
});
