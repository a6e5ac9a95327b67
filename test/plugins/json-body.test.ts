// src/plugins/json-body.ts: large JSON bodies are parsed one per turn of the event loop, by Fastify's own parser (the
// same answers as for small bodies: invalid JSON, an empty body and prototype poisoning are 400s).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { INLINE_JSON_CHARS, LoopTurns } from '../../src/plugins/json-body.js';
import { done, events, finish, step, syntheticApp } from '../helpers/synthetic.js';

const MODEL = 'tiny-llada';
const HELLO = events(step(0, 0, 'Hel'), step(0, 1, 'lo'), finish(0, 'Hello'), done(2, 2));

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

test('a large body is parsed as a small one: valid, invalid, empty, prototype poisoning', async () => {
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
