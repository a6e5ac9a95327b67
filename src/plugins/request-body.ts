// Request bodies. Fastify reads and parses them; this plugin changes two things.
//
// 1. A body declared larger than the limit is read to its end and thrown away before the 413 is sent, so the client
//    gets the answer. Fastify answers at once with `Connection: close` and the socket closes while the client is still
//    sending: its next write fails (EPIPE, then a reset), and a client such as undici's fetch, the official SDK's
//    transport, often reports "fetch failed" instead of the 413 (docs/security.md). This is nginx's lingering close,
//    bounded: only bodies declared up to MAX_DRAIN_FACTOR times the limit are read (a larger one is answered at once
//    and the connection closed, as before), at the client's speed within HTTP_REQUEST_TIMEOUT_MS (Node's request
//    timeout still runs), and nothing is kept. The connection then stays open for the next request. A body sent
//    without a length (chunked) is passed on up to the limit and read on past it the same way; its 413 comes once the
//    client has sent it all (Fastify closes that connection after the answer).
// 2. JSON bodies are parsed by Fastify's own parser (secure-json-parse: `__proto__` and `constructor` keys refused), a
//    large one in a turn of the event loop of its own (docs/security.md, bounded work on the event loop). Parsing,
//    validating and preparing a body of about 1 MiB costs the main thread tens of milliseconds (most for 30 000 chat
//    messages: parse, schema, hand-off to a tokenizer thread), and Node runs the 'end' callbacks of every body that completes in one
//    poll phase back to back: eight such bodies held a running stream and /health up for their sum (110-140 ms of CPU
//    in one turn on a 2-core AMD EPYC, test/api/big_prompts.timing.test.ts). Taking turns, others wait for one body at most.

import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import { pipeline, Transform, type Readable } from 'node:stream';
import { ApiError } from '../serving/errors.js';

/** Bodies declared up to this many times the limit are read and discarded before the 413; larger ones are not. */
export const MAX_DRAIN_FACTOR = 16;

/** JSON bodies up to this many characters parse at once: under a millisecond, less than a turn of the loop costs. */
export const INLINE_JSON_CHARS = 64 * 1024;

/**
 * One waiter released per turn of the event loop. Each release is a setImmediate queued from the previous one's
 * callback, which Node runs only in the next loop iteration, after timers and I/O (Node's event loop guide,
 * "setImmediate() vs setTimeout()"); the released work runs to its first real wait in the microtasks right after it.
 */
export class LoopTurns {
  private readonly waiting: Array<() => void> = [];
  private pumping = false;

  next(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      if (!this.pumping) {
        this.pumping = true;
        setImmediate(this.release);
      }
    });
  }

  private readonly release = (): void => {
    this.waiting.shift()?.();
    if (this.waiting.length > 0) setImmediate(this.release);
    else this.pumping = false;
  };
}

/** Reads `body` to its end (or until the connection goes), keeping nothing. */
function discard(body: Readable): Promise<void> {
  return new Promise((resolve) => {
    const finished = () => {
      body.off('data', ignore);
      resolve();
    };
    const ignore = () => undefined;
    body.on('data', ignore);
    body.once('end', finished);
    body.once('close', finished);
    body.once('error', finished);
    body.resume();
  });
}

/**
 * A body of unknown length: passed on while within `limit`; past it, read on and dropped (up to MAX_DRAIN_FACTOR times
 * the limit, where it fails at once), and the 413 raised when it ends. pipeline() ends the stream with an error if the
 * connection goes first, so the parser never waits for an end that cannot come.
 */
function capped(body: Readable, limit: number): Readable {
  let received = 0;
  const tooLarge = () => ApiError.bodyTooLarge(`Request body is too large: over ${limit} bytes, the limit`);
  const cap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      if (received <= limit) callback(null, chunk);
      else callback(received > MAX_DRAIN_FACTOR * limit ? tooLarge() : null);
    },
    flush(callback) {
      callback(received > limit ? tooLarge() : null);
    },
  });
  return pipeline(body, cap, () => undefined);
}

export default fp(
  async function requestBodyPlugin(app: FastifyInstance) {
    app.addHook('preParsing', async (req, reply, payload) => {
      const limit = req.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit!;
      if (req.headers['content-length'] === undefined) {
        return req.headers['transfer-encoding'] === undefined ? payload : capped(payload, limit);
      }
      const declared = Number(req.headers['content-length']);
      if (!(declared > limit)) return payload;
      if (declared <= MAX_DRAIN_FACTOR * limit) await discard(payload);
      else reply.header('connection', 'close'); // Node would otherwise read all of it for keep-alive
      throw ApiError.bodyTooLarge(`Request body is too large: ${declared} bytes, the limit is ${limit}`);
    });

    const parse = app.getDefaultJsonParser('error', 'error');
    const turns = new LoopTurns();
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
      const text = body as string;
      if (text.length <= INLINE_JSON_CHARS) return parse(req, text, done);
      void turns.next().then(() => parse(req, text, done));
    });
  },
  { name: 'request-body' },
);
