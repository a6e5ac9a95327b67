// The token bound (engine/token_bound.ts) and the prompt encoder (serving/prompts.ts) on the real tiny model's
// tokenizer: the bound is sound (no text tokenizes to fewer tokens than it claims), refuses only what cannot fit, is
// derived from the model folder (context length, tokenizer.json), and large texts are tokenized off the event loop.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadModelFolder } from '../../src/engine/model_folder.js';
import { maxBytesPerToken, minTokens } from '../../src/engine/token_bound.js';
import { ApiError } from '../../src/serving/errors.js';
import { renderChat, servingModel, type ServingModel } from '../../src/serving/model.js';
import { INLINE_BYTES, PromptEncoder } from '../../src/serving/prompts.js';
import { MODEL_DIR } from '../helpers/procs.js';
import { watchLoopCpu } from '../helpers/loop_cpu.js';

const tokenizerJson = JSON.parse(readFileSync(path.join(MODEL_DIR, 'tokenizer.json'), 'utf8'));

describe('the token bound', () => {
  let model: ServingModel;
  before(async () => {
    model = servingModel(await loadModelFolder(MODEL_DIR));
  });

  test('read from tokenizer.json: the longest vocabulary piece (one character per byte) or added token', () => {
    const L = maxBytesPerToken(tokenizerJson);
    const pieces = Object.keys(tokenizerJson.model.vocab).map((p) => [...p].length);
    const added = tokenizerJson.added_tokens.map((a: { content: string }) => Buffer.byteLength(a.content));
    assert.equal(L, Math.max(...pieces, ...added));
    assert.equal(model.maxBytesPerToken, L);
  });

  test('sound: no text tokenizes to fewer tokens than ceil(bytes / L), for texts built to pack bytes into tokens', () => {
    const L = model.maxBytesPerToken!;
    const vocab = Object.keys(tokenizerJson.model.vocab);
    // GPT-2's byte-level alphabet back to bytes, to rebuild the text of the longest pieces.
    const byteOf = new Map<string, number>();
    const printable = [...range(33, 126), ...range(161, 172), ...range(174, 255)];
    let extra = 0;
    for (let b = 0; b < 256; b++) byteOf.set(String.fromCodePoint(printable.includes(b) ? b : 256 + extra++), b);
    const textOf = (piece: string) => Buffer.from([...piece].map((c) => byteOf.get(c) ?? 63)).toString('latin1');
    const longest = vocab.sort((a, b) => [...b].length - [...a].length).slice(0, 50).map(textOf);
    const specials = tokenizerJson.added_tokens.map((a: { content: string }) => a.content);
    const samples: string[] = [
      longest.join(''),
      longest.map((p) => p.repeat(20)).join(''),
      specials.join('').repeat(30),
      'word '.repeat(500),
      'né 🐈 ',
      '\uD800'.repeat(100) + '\uDFFF'.repeat(100), // lone surrogates: 3 bytes each in UTF-8, as the tokenizer sees them
      ' '.repeat(3000),
      '\n'.repeat(500),
      String.fromCodePoint(...range(0, 0x2ff)),
      '𝔘𝔫𝔦𝔠𝔬𝔡𝔢'.repeat(100),
    ];
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 300; i++) {
      let s = '';
      const n = 1 + Math.floor(rand() * 60);
      for (let j = 0; j < n; j++) {
        const r = rand();
        s += r < 0.5 ? longest[Math.floor(rand() * longest.length)] : r < 0.6 ? specials[Math.floor(rand() * specials.length)] : r < 0.8 ? ' ' : String.fromCodePoint(Math.floor(rand() * 0x1ffff));
      }
      samples.push(s);
    }
    for (const text of samples) {
      const tokens = model.encode(text).length;
      assert.ok(tokens >= minTokens(text, L), `${tokens} tokens < bound ${minTokens(text, L)} for ${JSON.stringify(text.slice(0, 80))}`);
    }
  });

  test('unknown (null) whenever tokenizer.json could make a text shorter than its bytes', () => {
    const variant = (change: (t: any) => void) => {
      const t = structuredClone(tokenizerJson);
      change(t);
      return maxBytesPerToken(t);
    };
    assert.equal(variant((t) => (t.normalizer = { type: 'NFC' })), null);
    assert.equal(variant((t) => (t.normalizer = { type: 'Lowercase' })), null);
    assert.equal(variant((t) => (t.truncation = { max_length: 8 })), null);
    assert.equal(variant((t) => (t.pre_tokenizer = { type: 'Whitespace' })), null);
    assert.equal(variant((t) => (t.pre_tokenizer = { type: 'Metaspace', replacement: '▁' })), null);
    assert.equal(variant((t) => (t.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '\\s+' }, behavior: 'Removed' }, { type: 'ByteLevel' }] })), null);
    assert.equal(variant((t) => (t.model.type = 'WordPiece')), null);
    assert.equal(variant((t) => Object.assign(t.model, { unk_token: '<unk>', fuse_unk: true })), null);
    assert.equal(variant((t) => (t.added_tokens[0].lstrip = true)), null);
    // Cutting without removing keeps the bound.
    assert.equal(
      variant((t) => (t.pre_tokenizer = { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: '\\d' }, behavior: 'Isolated' }, { type: 'ByteLevel' }] })),
      maxBytesPerToken(tokenizerJson),
    );
  });
});

describe('the prompt encoder', () => {
  let model: ServingModel;
  let prompts: PromptEncoder;
  before(async () => {
    model = servingModel(await loadModelFolder(MODEL_DIR));
    prompts = new PromptEncoder(model, { threads: 1, maxWaiting: 2 });
  });
  after(async () => {
    await prompts.close();
  });

  test('refuses exactly what cannot fit: the bound follows the model folder (context length, tokenizer)', () => {
    const L = model.maxBytesPerToken!;
    const room = model.maxSequenceLength - 1 - (model.bosTokenId === null ? 0 : 1); // BOS, one generated position
    const fits = 'a'.repeat(room * L);
    prompts.assertCanFit([fits], 'prompt', 'the prompt');
    assert.throws(
      () => prompts.assertCanFit([`${fits}a`], 'prompt', 'the prompt'),
      (e: ApiError) => e.status === 400 && e.code === 'context_length_exceeded' && e.param === 'prompt',
    );
    assert.throws(() => prompts.assertCanFit([fits, 'a'], 'prompt', 'the prompt'), /at least/, 'prompt and suffix together');
    // A model folder with a longer context accepts more: nothing is hard-coded.
    const longer = new PromptEncoder({ ...model, maxSequenceLength: model.maxSequenceLength * 2 }, { threads: 1, maxWaiting: 1 });
    longer.assertCanFit([`${fits}a`], 'prompt', 'the prompt');
  });

  test('a large text is tokenized off the event loop, with the same ids as inline', async () => {
    const text = 'The cat sat on the mat. '.repeat(10_000); // 240 KB: about half a second of tokenizing
    assert.ok(Buffer.byteLength(text) > INLINE_BYTES);
    const cpu = watchLoopCpu();
    const ids = await prompts.encode(text);
    const offThread = cpu.stop();
    const inline = watchLoopCpu();
    const same = model.encode(text);
    const onThread = inline.stop();
    assert.deepEqual(ids, same);
    // Main-thread CPU in one turn of the event loop (other jobs on the machine do not count): inline, the whole
    // tokenization is one turn; through the pool, the turns stay short.
    assert.ok(offThread < 50, `a turn took ${offThread} ms of the main thread's CPU (inline: ${onThread} ms)`);
    assert.ok(onThread > offThread, `inline ${onThread} ms, pool ${offThread} ms`);
  });

  test('large chats are rendered off the event loop with the same text; template errors are 400s', async () => {
    const messages = Array.from({ length: 500 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `message ${i}` }));
    assert.equal(await prompts.render(messages), renderChat(model, messages));
    const broken = new PromptEncoder({ ...model, chatTemplate: '{{ messages[0].content | no_such_filter }}' }, { threads: 1, maxWaiting: 1 });
    try {
      for (const n of [1, 500]) {
        await assert.rejects(
          broken.render(messages.slice(0, n)),
          (e: ApiError) => e.status === 400 && e.param === 'messages' && /chat template/.test(e.message),
        );
      }
    } finally {
      await broken.close();
    }
  });

  test('a bounded number of large texts wait for the thread; more get 429', async () => {
    const big = 'word '.repeat(10_000);
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map(() => prompts.encode(big)));
    const refused = results.filter((r) => r.status === 'rejected');
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3, 'one running, two waiting');
    for (const r of refused) {
      const e = (r as PromiseRejectedResult).reason as ApiError;
      assert.equal(e.status, 429);
      assert.equal(e.code, 'queue_full');
    }
  });
});

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}
