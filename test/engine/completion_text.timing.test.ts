// src/engine/completion_text.ts, timed (npm run test:timing): the stop-string check costs linear time per step. The
// verdict is a duration (one step under a second), so it runs apart from completion_text.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CompletionText } from '../../src/engine/completion_text.js';
import { TOKENIZER } from './helpers.js';

const ids = (text: string) => TOKENIZER.encode(text);

test('long stop strings cost linear time per step, not quadratic', () => {
  // A text of 64k repeated letters and a stop string that matches long prefixes at every offset: comparing every
  // candidate length took seconds per step; one KMP pass takes about a millisecond.
  const m = 64_000;
  const text = 'a'.repeat(m);
  const t = new CompletionText(TOKENIZER, ['a'.repeat(m / 2) + 'b' + 'a'.repeat(m)]);
  const t0 = performance.now();
  const u = t.update(ids(text));
  const ms = performance.now() - t0;
  assert.equal(u.delta.length, m / 2, 'the last m/2 letters may still start the stop string: held back');
  assert.ok(ms < 1000, `one step took ${ms} ms`);
});
