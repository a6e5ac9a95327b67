// Dream's sampler rules (src/engine/dream.ts) and a Sequence decoded by them, against synthetic heads; the shift of
// the graph positions (batch.ts, kv_cache.ts). The real model is checked against the PyTorch reference in
// golden.test.ts (models/tiny-dream-random).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dreamCommits, dreamConfidence, dreamCount, dreamTimesteps } from '../../src/engine/dream.js';
import { headSlot } from '../../src/engine/head.js';
import { CounterRng } from '../../src/engine/rng.js';
import { buildBatch } from '../../src/engine/batch.js';
import { stepRows, stepSpan } from '../../src/engine/kv_cache.js';
import { Sequence } from '../../src/engine/sequence.js';
import type { DreamAlg, SamplingParams } from '../../src/engine/types.js';
import { headFrom, params } from './helpers.js';

const MASK = 2;

function dreamSequence(overrides: Partial<SamplingParams> = {}, prefix = [20, 21, 22]): Sequence {
  return new Sequence({
    prefix,
    suffix: [],
    params: params({ maxTokens: 8, steps: 8, blockLength: 8, alg: 'entropy', algTemp: 0, eps: 1e-3, ...overrides }),
    maskTokenId: MASK,
    eosTokenIds: [1],
    seed: 0,
    logitsShift: 1,
  });
}

test('timesteps are float32 linspace(1, eps, steps + 1), each value rounded once', () => {
  // torch.linspace(1, 1e-3, 9) (its scalar path, the same arithmetic as its CUDA kernel).
  assert.deepEqual(
    [...dreamTimesteps(8, 1e-3)],
    [1.0, 0.875124990940094, 0.750249981880188, 0.625374972820282, 0.5005000233650208, 0.37562501430511475, 0.25075000524520874, 0.12587499618530273, 0.0010000000474974513],
  );
  // Both halves of a longer schedule: up from 1, down from eps.
  assert.deepEqual([...dreamTimesteps(40, 1e-3).slice(18, 23)], [0.5504500269889832, 0.525475025177002, 0.5005000233650208, 0.47552499175071716, 0.45054998993873596]);
  assert.deepEqual([...dreamTimesteps(1, 1e-3)], [1, Math.fround(1e-3)]);
});

test("the number committed per step: int(masked * (1 - s / t)) in float32, all that remain at the last step", () => {
  const trajectory = (length: number, steps: number, eps: number) => {
    const ts = dreamTimesteps(steps, eps);
    let masked = length;
    const out: number[] = [];
    for (let i = 0; i < steps; i++) {
      const count = dreamCount(masked, ts[i], ts[i + 1], i === steps - 1);
      out.push(count);
      masked -= count;
    }
    return out;
  };
  // Computed with NumPy float32 from the same timesteps (Dream's `_sample` arithmetic).
  assert.deepEqual(trajectory(32, 32, 1e-3), [0, ...Array(30).fill(1), 2]);
  assert.deepEqual(trajectory(32, 16, 1e-3), [1, ...Array(14).fill(2), 3]);
  assert.deepEqual(trajectory(64, 8, 0.05), [7, 7, 7, 7, 8, 8, 8, 12]);
});

test('confidences: maskgit_plus p(chosen), topk_margin p1 - p2, entropy -H; greedy from the full softmax', () => {
  const head = headFrom([[[[40, Math.log(0.6)], [41, Math.log(0.3)], [42, Math.log(0.05)]]]], 0.05);
  const slot = headSlot(head, 0, 0);
  const choice = { tokenId: 40, rank: 0, logprob: Math.log(0.6) };
  const greedy = { temperature: 0, topK: 0, topP: 1, maskTokenId: MASK };
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-6, `${a} vs ${b}`);
  close(dreamConfidence('maskgit_plus', slot, choice, greedy), 0.6);
  close(dreamConfidence('topk_margin', slot, choice, greedy), 0.3);
  close(dreamConfidence('entropy', slot, choice, greedy), -head.entropy[0]);
  assert.equal(dreamConfidence('origin', slot, choice, greedy), 0);
  // top_k 2 renormalises over the two kept candidates, as sample_tokens' filtered softmax does.
  const topK2 = { ...greedy, topK: 2 };
  close(dreamConfidence('maskgit_plus', slot, choice, topK2), 0.6 / 0.9);
  close(dreamConfidence('topk_margin', slot, choice, topK2), 0.3 / 0.9);
  const p = [2 / 3, 1 / 3];
  close(dreamConfidence('entropy', slot, choice, topK2), p.reduce((s, x) => s + x * Math.log(x + 1e-10), 0));
});

test('commits: the most confident (ties leftmost) with alg_temp 0; sampled without replacement above it; origin all at the end', () => {
  const ts = dreamTimesteps(4, 1e-3);
  const step = (i: number, alg: DreamAlg = 'maskgit_plus', algTemp = 0) => ({ alg, algTemp, t: ts[i], s: ts[i + 1], last: i === 3 });
  const scores = [0.2, 0.9, 0.5, 0.9, 0.1, 0.3, 0.7, 0.4];
  const count = dreamCount(8, ts[1], ts[2], false);
  assert.deepEqual(dreamCommits(scores, step(1), null), [1, 3, 6, 2].slice(0, count));
  assert.deepEqual(dreamCommits(scores, step(3), null).sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
  const sampled = dreamCommits(scores, step(1, 'maskgit_plus', 0.5), new CounterRng(3));
  assert.equal(sampled.length, count);
  assert.equal(new Set(sampled).size, count);
  // A tiny alg_temp makes the draw the top choice.
  assert.deepEqual(dreamCommits([0.2, 0.9, 0.5], { ...step(1), algTemp: 1e-6 }, new CounterRng(3)), dreamCommits([0.2, 0.9, 0.5], step(1), null));
  assert.deepEqual(dreamCommits(scores, step(3, 'origin'), new CounterRng(1)), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.throws(() => dreamCommits(scores, step(1, 'origin'), null), /needs an RNG/);
});

test('a Dream sequence runs every step, also those that commit nothing, and is full after its last', () => {
  const seq = dreamSequence({ maxTokens: 8, steps: 16, blockLength: 8 });
  assert.equal(seq.genLength, 8); // the whole span, exactly max_tokens
  const perStep: number[] = [];
  while (seq.end === null) {
    const positions = seq.wantedPositions();
    const head = headFrom([positions.map((c) => [[40 + c, -0.1 * c], [MASK, -5], [30, -6]])]);
    perStep.push(seq.applyStep(head, 0, positions).length);
  }
  assert.equal(perStep.length, 16);
  assert.ok(perStep.some((n) => n === 0), 'some steps commit nothing');
  assert.equal(perStep.reduce((a, b) => a + b, 0), 8);
  assert.deepEqual(seq.generated(), [43, 44, 45, 46, 47, 48, 49, 50]);
});

test('the mask token may be chosen (the position stays masked) except at the last step', () => {
  const seq = dreamSequence({ maxTokens: 8, steps: 2, blockLength: 8 });
  const ts = dreamTimesteps(2, 1e-3);
  assert.equal(dreamCount(8, ts[0], ts[1], false), 3);
  const maskFirst = (positions: number[]) => headFrom([positions.map(() => [[MASK, 0], [40, -1], [41, -2]])]);
  let positions = seq.wantedPositions();
  // Step 0 commits 3 positions, each of which chose the mask token: nothing changes.
  assert.deepEqual(seq.applyStep(maskFirst(positions), 0, positions), []);
  assert.deepEqual(seq.generated(), Array(8).fill(MASK));
  assert.deepEqual([...seq.provisional.values()], Array(8).fill(MASK));
  positions = seq.wantedPositions();
  const last = seq.applyStep(maskFirst(positions), 0, positions);
  assert.deepEqual(last.map((c) => c.tokenId), Array(8).fill(40));
  assert.deepEqual(seq.end, { reason: 'length', length: 8 });
});

test('shifted logits: the graph is asked for the position before each wanted one, in full passes and cached steps', () => {
  const seq = dreamSequence({ maxTokens: 4, steps: 4, blockLength: 4, cache: 'dual' });
  const wanted = seq.wantedPositions();
  assert.deepEqual(wanted, [3, 4, 5, 6]);
  const { feeds } = buildBatch([{ sequence: seq, positions: wanted }], 0);
  assert.deepEqual([...feeds.positions].map(Number), [2, 3, 4, 5]);
  // A cached step queries from the prompt's last token, whose cached entry is hidden (its output is computed).
  assert.deepEqual(stepSpan(seq, seq.canvas.length), { queryStart: 2, queryEnd: 7, take: 7, hideFrom: 2, hideTo: 7 });
  const [row] = stepRows(seq, wanted, [seq.canvas.length], 0);
  assert.deepEqual(row.query, [22, MASK, MASK, MASK, MASK]);
  assert.deepEqual(row.positions, [0, 1, 2, 3]);
  const prefix = dreamSequence({ maxTokens: 4, steps: 4, blockLength: 4, cache: 'prefix' });
  assert.deepEqual(stepSpan(prefix, 3), { queryStart: 2, queryEnd: 7, take: 2, hideFrom: 2, hideTo: 3 });
  // A first position of the row reads its own output.
  assert.equal(dreamSequence({}, [20]).readFrom(0), 0);
});
