// The request fields of docs/design.md §4 and §5 against a synthetic graph: min_tokens, ignore_eos, token-id prompts
// used verbatim, and the provisional tokens of a step.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DiffusionEngine } from '../../src/engine/engine.js';
import type { EngineEvent, GenerateRequest, StepEvent } from '../../src/engine/types.js';
import { collect, finishes } from './model_fixture.js';
import { params, SPEC, SyntheticRunner, TOKENIZER } from './helpers.js';

/** From canvas index 10 on (span position 6 after BOS and three prompt tokens) the graph predicts end-of-text. */
const EOS_AT = 10;

function run(p: Partial<GenerateRequest['params']>, extra: Partial<GenerateRequest> = {}, runner = new SyntheticRunner({ eosAt: EOS_AT })) {
  const e = new DiffusionEngine(SPEC, TOKENIZER, runner, { maxBatchSize: 8 });
  const request: GenerateRequest = { id: 'r', promptTokenIds: [20, 21, 22], suffixTokenIds: [], params: params({ maxTokens: 32, steps: 32, ...p }), n: 1, includeCanvas: false, ...extra };
  return collect(e.generate(request));
}

const stepsOf = (events: EngineEvent[]) => events.filter((e): e is StepEvent => e.type === 'step');

test('min_tokens: no end-of-text below it; the choice ends at the first one after it', async () => {
  const [plain] = finishes(await run({}));
  assert.deepEqual([plain.finishReason, plain.tokenIds.length], ['stop', 6], 'without min_tokens the graph ends it at 6');
  const [min] = finishes(await run({ minTokens: 12 }));
  assert.deepEqual([min.finishReason, min.tokenIds.length], ['stop', 12]);
  assert.ok(!min.tokenIds.some((t) => SPEC.eosTokenIds.includes(t)));
  const [all] = finishes(await run({ maxTokens: 16, steps: 16, minTokens: 16 }));
  assert.deepEqual([all.finishReason, all.tokenIds.length], ['length', 16]);
});

test('ignore_eos: every position is decoded; the streamed text adds up to the whole span', async () => {
  const events = await run({ maxTokens: 16, steps: 16, ignoreEos: true });
  const [f] = finishes(events);
  assert.deepEqual([f.finishReason, f.tokenIds.length], ['length', 16]);
  assert.ok(f.tokenIds.slice(6).every((t) => t === 1), 'the end-of-text tokens are part of it');
  assert.equal(f.text, TOKENIZER.decode(f.tokenIds));
  assert.equal(stepsOf(events).map((s) => s.stableText).join(''), f.text);
  const done = events.at(-1)!;
  assert.equal(done.type === 'done' && done.usage.completionTokens, 16);
});

test('a prompt of token ids is used verbatim: no BOS in the canvas nor in the usage', async () => {
  const runner = new SyntheticRunner();
  const events = await run({ maxTokens: 8, steps: 8 }, { promptTokenIds: [6, 20, 21], verbatimPrompt: true }, runner);
  const ids = [...runner.lastFeeds!.inputIds].slice(0, 3).map(Number);
  assert.deepEqual(ids, [6, 20, 21]);
  const done = events.at(-1)!;
  assert.equal(done.type === 'done' && done.usage.promptTokens, 3);
  const withBos = await run({ maxTokens: 8, steps: 8 }, { promptTokenIds: [6, 20, 21] }, new SyntheticRunner());
  const d2 = withBos.at(-1)!;
  assert.equal(d2.type === 'done' && d2.usage.promptTokens, 4, 'a text prompt (not verbatim) gets the BOS');
});

test('provisional tokens: the step\'s guess at every position of the block it left masked, and only with include_canvas', async () => {
  const events = stepsOf(await run({ maxTokens: 16, steps: 8, blockLength: 8 }, { includeCanvas: true }, new SyntheticRunner()));
  let before = new Set([...Array(8).keys()]);
  for (const s of events) {
    const masked = new Set(s.canvas!.flatMap((t, i) => (t === null ? [i] : [])));
    const provisional = s.provisional!.map((t) => t.position);
    const blockEnd = (Math.floor(s.committed[0].position / 8) + 1) * 8;
    assert.deepEqual(provisional, [...before].filter((p) => masked.has(p) && p < blockEnd), `step ${s.step}`);
    for (const t of s.provisional!) assert.equal(t.text, TOKENIZER.decode([t.tokenId]));
    assert.ok(s.committed.every((c) => before.has(c.position)), 'committed positions were masked before');
    before = new Set(provisional.length > 0 ? provisional : [...masked].filter((p) => p < blockEnd + 8));
  }
  assert.deepEqual(events.at(-1)!.provisional, [], 'nothing left to guess at the end');
  const plain = stepsOf(await run({ maxTokens: 16, steps: 8 }, {}, new SyntheticRunner()));
  assert.ok(plain.every((s) => s.provisional === undefined && s.canvas === undefined));
});
