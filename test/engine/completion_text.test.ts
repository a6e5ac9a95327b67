import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CompletionText, findStop } from '../../src/engine/completion_text.js';
import { MASK_PLACEHOLDER } from '../../src/engine/types.js';
import { TOKENIZER } from './helpers.js';

const ids = (text: string) => TOKENIZER.encode(text);

test('stable text grows with the mask-free prefix; deltas concatenate to the final text', () => {
  const t = new CompletionText(TOKENIZER, []);
  assert.equal(t.update(ids('ab')).delta, 'ab');
  assert.equal(t.update(ids('ab')).delta, '');
  assert.equal(t.update(ids('abcd')).delta, 'cd');
  const end = t.finalize(ids('abcdef'));
  assert.deepEqual(end, { delta: 'ef', stoppedText: null });
  assert.equal(t.sent, 'abcdef');
});

test('a stop string cuts the text; a possible stop prefix is held back until resolved', () => {
  const t = new CompletionText(TOKENIZER, ['xyz']);
  assert.equal(t.update(ids('abx')).delta, 'ab', '"x" may start the stop string');
  assert.equal(t.update(ids('abxa')).delta, 'xa');
  const stop = t.update(ids('abxaxyzq'));
  assert.deepEqual(stop, { delta: '', stoppedText: 'abxa' });
  assert.equal(findStop('hello world', ['wor', 'lo']), 3);
});

test('kept tokens after a stop cut and text offsets', () => {
  const t = new CompletionText(TOKENIZER, []);
  assert.deepEqual(t.offsets(ids('abc')), [0, 1, 2]);
  assert.equal(t.keptCount(ids('abcd'), 'ab'), 2);
  assert.equal(t.keptCount(ids('abcd'), 'abcd'), 4);
  assert.equal(t.keptCount(ids('abcd'), ''), 0);
});

test('draft shows masked positions as the placeholder', () => {
  const t = new CompletionText(TOKENIZER, []);
  assert.equal(t.draft([10, 2, 11, 2], 2), `a${MASK_PLACEHOLDER}b${MASK_PLACEHOLDER}`);
});

test('logprobs: tokens, logprobs, top alternatives by text, offsets', () => {
  const t = new CompletionText(TOKENIZER, []);
  const lp = t.logprobs([10, 11], [0, 1], [{ logprob: -0.1, top: [[10, -0.1], [12, -2]] }, { logprob: -0.5, top: [] }]);
  assert.deepEqual(lp, { tokens: ['a', 'b'], tokenLogprobs: [-0.1, -0.5], topLogprobs: [{ a: -0.1, c: -2 }, {}], textOffset: [0, 1] });
});

/** The held-back length by its definition: the longest suffix of `text` that is a proper prefix of a stop string. */
function pendingByDefinition(text: string, stops: string[]): number {
  let longest = 0;
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, text.length); n > longest; n--) {
      if (text.endsWith(stop.slice(0, n))) longest = n;
    }
  }
  return longest;
}

test('held-back text near stop strings matches its definition (random texts and stops over a small alphabet)', () => {
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const word = (len: number) => Array.from({ length: len }, () => 'ab'[rand(2)]).join('');
  for (let i = 0; i < 2000; i++) {
    const stops = Array.from({ length: 1 + rand(3) }, () => word(1 + rand(8)));
    const text = word(rand(20));
    const t = new CompletionText(TOKENIZER, stops);
    const u = t.update(ids(text));
    if (u.stoppedText !== null) continue; // a whole stop string: cut, nothing held back
    assert.equal(u.delta.length, text.length - pendingByDefinition(text, stops), `${JSON.stringify(stops)} ${text}`);
  }
});
