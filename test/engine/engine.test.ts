// The engine loop against a synthetic graph: events, ends, stop strings, infill, choices, cancellation, failures.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DiffusionEngine } from '../../src/engine/engine.js';
import { EngineError, type EngineEvent, type GenerateRequest, type StepEvent } from '../../src/engine/types.js';
import { collect, finishes } from './model_fixture.js';
import { params, SPEC, SyntheticRunner, TOKENIZER } from './helpers.js';

function engine(runner = new SyntheticRunner(), maxBatchSize = 8): DiffusionEngine {
  return new DiffusionEngine(SPEC, TOKENIZER, runner, { maxBatchSize });
}

function req(id: string, overrides: Partial<GenerateRequest> = {}, p = {}): GenerateRequest {
  return { id, promptTokenIds: [20, 21, 22], suffixTokenIds: [], params: params(p), n: 1, includeCanvas: false, ...overrides };
}

const steps = (events: EngineEvent[]) => events.filter((e): e is StepEvent => e.type === 'step');

test('a generation yields a step event per step, one finish per choice, then done; stable texts add up to the text', async () => {
  const e = engine();
  const events = await collect(e.generate(req('a', { includeCanvas: true })));
  const [finish] = finishes(events);
  assert.equal(events.at(-1)!.type, 'done');
  assert.equal(finish.finishReason, 'length');
  assert.equal(finish.tokenIds.length, 16);
  assert.equal(finish.steps, 16);
  const s = steps(events);
  assert.equal(s.length, 16);
  assert.deepEqual(s.map((x) => x.step), [...Array(16).keys()]);
  assert.deepEqual(s.map((x) => x.block), [...Array(8).fill(0), ...Array(8).fill(1)]);
  assert.equal(s.map((x) => x.stableText).join(''), finish.text);
  assert.equal(finish.text, TOKENIZER.decode(finish.tokenIds));
  assert.equal(s[0].canvas!.filter((t) => t === null).length, 15);
  assert.ok(s[0].committed[0].confidence > 0 && s[0].committed[0].text.length === 1);
  const done = events.at(-1)!;
  assert.deepEqual(done.type === 'done' && done.usage, { promptTokens: 4, completionTokens: 16, totalTokens: 20 });
});

test('end-of-text ends a choice early with finish_reason stop and a shorter text', async () => {
  const e = engine(new SyntheticRunner({ eosAt: 10 }));
  const [finish] = finishes(await collect(e.generate(req('eos', {}, { maxTokens: 32, steps: 32 }))));
  assert.equal(finish.finishReason, 'stop');
  assert.equal(finish.tokenIds.length, 6, 'canvas index 10 is span position 6 (BOS + 3 prompt tokens)');
  assert.equal(finish.steps, 7);
});

test('a stop string cuts the text and finishes with stop', async () => {
  const e = engine();
  const [plain] = finishes(await collect(e.generate(req('plain'))));
  const stop = plain.text.slice(5, 7);
  const events = await collect(e.generate(req('stop', {}, { stop: [stop] })));
  const [cut] = finishes(events);
  assert.equal(cut.finishReason, 'stop');
  assert.equal(cut.text, plain.text.slice(0, plain.text.indexOf(stop)));
  assert.equal(steps(events).map((x) => x.stableText).join(''), cut.text);
  assert.equal(TOKENIZER.decode(cut.tokenIds), cut.text);
});

test('infill: the suffix stays after the masked span in every graph run', async () => {
  const runner = new SyntheticRunner();
  const e = engine(runner);
  const suffix = [40, 41, 42];
  const [finish] = finishes(await collect(e.generate(req('infill', { suffixTokenIds: suffix }))));
  assert.equal(finish.tokenIds.length, 16);
  const f = runner.lastFeeds!;
  assert.deepEqual([...f.inputIds.slice(f.length - 3, f.length)].map(Number), suffix);
});

test('n choices use seed + i: reproducible, different from each other, the same alone and batched', async () => {
  const e = engine();
  const p = { temperature: 1, seed: 11 };
  const a = finishes(await collect(e.generate(req('n1', { n: 3 }, p))));
  assert.equal(a.length, 3);
  assert.notDeepEqual(a[0].tokenIds, a[1].tokenIds);
  const [single] = finishes(await collect(e.generate(req('n2', {}, { ...p, seed: 12 }))));
  assert.deepEqual(single.tokenIds, a[1].tokenIds, 'choice 1 of seed 11 is seed 12');
  const [batched] = await Promise.all([
    collect(e.generate(req('n3', { n: 3 }, p))),
    collect(e.generate(req('other', { promptTokenIds: [30, 31] }, { maxTokens: 8, blockLength: 8, steps: 8 }))),
  ]);
  assert.deepEqual(finishes(batched).map((f) => f.tokenIds), a.map((f) => f.tokenIds));
});

test('greedy results do not depend on batching (mixed lengths and settings, admitted at different steps)', async () => {
  const requests = [
    req('r0', { promptTokenIds: [20] }),
    req('r1', { promptTokenIds: [20, 21, 22, 23, 24, 25, 26, 27] }, { maxTokens: 8, blockLength: 4, steps: 4 }),
    req('r2', { promptTokenIds: [25, 26] }, { threshold: 0.5 }),
    req('r3', { promptTokenIds: [21, 22, 23] }, { cfgScale: 1 }),
  ];
  const alone = [];
  for (const r of requests) alone.push(finishes(await collect(engine().generate(r)))[0].tokenIds);
  const runner = new SyntheticRunner();
  const e = engine(runner, 3);
  const together = await Promise.all(requests.map((r) => collect(e.generate({ ...r, id: `${r.id}-b` }))));
  assert.deepEqual(together.map((ev) => finishes(ev)[0].tokenIds), alone);
  assert.ok(Math.max(...runner.rowsSeen) <= 3 && Math.max(...runner.rowsSeen) > 1);
});

test('bad input: typed errors naming the field; the engine keeps serving', async () => {
  const e = engine();
  const running = collect(e.generate(req('long', {}, { maxTokens: 32, steps: 32 })));
  const cases: [Partial<GenerateRequest>, object, string, string][] = [
    [{ promptTokenIds: [] }, {}, 'invalid_request', 'prompt'],
    [{}, { maxTokens: 125, steps: 128 }, 'context_length_exceeded', 'max_tokens'],
    [{}, { blockLength: 5, maxTokens: 16, steps: 18 }, 'invalid_request', 'steps'],
    [{}, { blockLength: 0 }, 'invalid_request', 'block_length'],
    [{}, { remasking: 'sideways' }, 'invalid_request', 'remasking'],
    [{}, { temperature: Number.NaN }, 'invalid_request', 'temperature'],
    [{}, { topK: 99 }, 'invalid_request', 'top_k'],
    [{ promptTokenIds: [9999] }, {}, 'invalid_request', 'prompt'],
    [{ n: 0 }, {}, 'invalid_request', 'n'],
    [{}, { logprobs: 9 }, 'invalid_request', 'logprobs'],
  ];
  for (const [overrides, p, code, param] of cases) {
    await assert.rejects(collect(e.generate(req(`bad-${param}`, overrides, p))), (err: unknown) => {
      assert.ok(err instanceof EngineError);
      assert.equal(err.code, code);
      assert.equal(err.param, param);
      assert.ok(err.message.length > 10);
      return true;
    });
  }
  const [finish] = finishes(await running);
  assert.equal(finish.tokenIds.length, 32);
  assert.equal(finishes(await collect(e.generate(req('after')))).length, 1);
});

test('abort takes effect at the next step boundary; other requests go on; a broken-off consumer aborts', async () => {
  const e = engine();
  const other = collect(e.generate(req('other', {}, { maxTokens: 32, steps: 32 })));
  const seen: EngineEvent[] = [];
  await assert.rejects(
    (async () => {
      for await (const event of e.generate(req('victim', {}, { maxTokens: 32, steps: 32 }))) {
        seen.push(event);
        if (seen.length === 2) e.abort('victim');
      }
    })(),
    (err: unknown) => err instanceof EngineError && err.code === 'cancelled',
  );
  assert.ok(seen.length >= 2 && seen.length < 32);
  for await (const event of e.generate(req('quitter', {}, { maxTokens: 32, steps: 32 }))) if (event.type === 'step') break;
  assert.equal(finishes(await other)[0].tokenIds.length, 32);
  const health = await e.health();
  assert.equal(health.activeSequences + health.waitingSequences, 0);
  e.abort('unknown-id');
});

test('a failing graph run fails its requests with an internal error; the engine recovers', async () => {
  const runner = new SyntheticRunner({ fail: true });
  const e = engine(runner);
  await assert.rejects(collect(e.generate(req('f'))), (err: unknown) => err instanceof EngineError && err.code === 'internal');
  runner.options.fail = false;
  assert.equal(finishes(await collect(e.generate(req('g')))).length, 1);
});

test('duplicate running ids are refused; logprobs come with the finish event; health reports the engine', async () => {
  const e = engine();
  const first = collect(e.generate(req('dup', {}, { logprobs: 2 })));
  await new Promise((resolve) => setImmediate(resolve));
  await assert.rejects(collect(e.generate(req('dup'))), (err: unknown) => err instanceof EngineError && err.param === 'id');
  const [finish] = finishes(await first);
  assert.equal(finish.logprobs!.tokens.length, 16);
  assert.equal(finish.logprobs!.tokens.join(''), finish.text);
  assert.ok(finish.logprobs!.tokenLogprobs.every((lp) => lp < 0));
  assert.equal(Object.keys(finish.logprobs!.topLogprobs[0]).length, 2);
  assert.deepEqual(finish.logprobs!.textOffset.slice(0, 3), [0, 1, 2]);
  const health = await e.health();
  assert.equal(health.provider, 'synthetic');
  assert.equal(health.maxBatchSize, 8);
});
