// JSON request bodies: Fastify's own parser (secure-json-parse, `__proto__` and `constructor` keys refused), with one
// change for bounded work on the event loop (docs/security.md): a large body is parsed in a turn of the event loop of
// its own. Parsing, validating and preparing a body of about 1 MiB costs the main thread up to ~50 ms (30 000 chat
// messages: parse, schema, hand-off to a tokenizer thread), and Node runs the 'end' callbacks of every body that
// completes in one poll phase back to back: eight such bodies held a running stream and /health up for their sum
// (130-180 ms on a 2-core AMD EPYC, test/api/big_prompts.test.ts). Taking turns, the others wait for one body at most.

import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';

/** Bodies up to this many characters parse at once: under a millisecond, less than a turn of the loop costs. */
export const INLINE_JSON_CHARS = 64 * 1024;

/**
 * One waiter released per turn of the event loop. Each release is a setImmediate queued from the previous one's
 * callback, which Node runs only in the next loop iteration, after timers and I/O (Node's event loop guide, "setImmediate()
 * vs setTimeout()"); the released work runs to its first real wait in the microtasks right after the release.
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

export default fp(
  async function jsonBodyPlugin(app: FastifyInstance) {
    const parse = app.getDefaultJsonParser('error', 'error');
    const turns = new LoopTurns();
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
      const text = body as string;
      if (text.length <= INLINE_JSON_CHARS) return parse(req, text, done);
      void turns.next().then(() => parse(req, text, done));
    });
  },
  { name: 'json-body' },
);
