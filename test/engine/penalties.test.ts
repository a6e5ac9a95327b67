import assert from 'node:assert/strict';
import { test } from 'node:test';
import { penalizedRow, penaltyOf } from '../../src/engine/penalties.js';
import { Sequence } from '../../src/engine/sequence.js';
import { headFrom, params } from './helpers.js';

/** logsumexp and entropy of a full softmax over `logits`, computed directly. */
function softmaxStats(logits: number[]): { lse: number; entropy: number } {
  const max = Math.max(...logits);
  const lse = max + Math.log(logits.reduce((s, l) => s + Math.exp(l - max), 0));
  return { lse, entropy: -logits.reduce((s, l) => s + Math.exp(l - lse) * (l - lse), 0) };
}

test('penaltyOf: count × frequency + presence, nothing for a token never committed', () => {
  const p = { frequency: 0.5, presence: 0.25 };
  assert.equal(penaltyOf(0, p), 0);
  assert.equal(penaltyOf(1, p), 0.75);
  assert.equal(penaltyOf(3, p), 1.75);
  assert.equal(penaltyOf(2, { frequency: -0.5, presence: 0 }), -1);
});

test('penalizedRow: when the head holds the whole vocabulary, the re-sorted logits, logsumexp and entropy are the penalised softmax exactly', () => {
  // Two rows, two positions, the whole vocabulary of 5 tokens (ids 10..14) as the K candidates; logits exact in
  // float32, so the head's logsumexp is of the logits it returns.
  const slots: [number, number][][][] = [
    [[[10, 2], [11, 1.5], [12, 1], [13, 0], [14, -1]], [[12, 3], [10, 2.875], [14, 0.5], [11, 0.25], [13, -2]]],
    [[[13, 1], [14, 0.875], [10, 0.75], [11, 0.625], [12, 0.5]], [[11, 0], [12, -0.125], [13, -0.25], [10, -0.375], [14, -0.5]]],
  ];
  const head = headFrom(slots);
  const counts = new Map([[10, 2], [12, 1], [99, 4]]);
  for (const p of [{ frequency: 0.5, presence: 0.25 }, { frequency: 0, presence: 1.5 }, { frequency: -0.5, presence: 0 }]) {
    for (const row of [0, 1]) {
      const out = penalizedRow(head, row, counts, p);
      assert.equal(out.rows, 1);
      for (let pos = 0; pos < 2; pos++) {
        const expected = slots[row][pos]
          .map(([id, l], i) => ({ id, l: l - penaltyOf(counts.get(id) ?? 0, p), i }))
          .sort((a, b) => b.l - a.l || a.i - b.i);
        assert.deepEqual([...out.topkIds.slice(pos * 5, pos * 5 + 5)], expected.map((e) => e.id), `row ${row} position ${pos}`);
        expected.forEach((e, i) => assert.equal(out.topkLogits[pos * 5 + i], Math.fround(e.l)));
        const stats = softmaxStats(expected.map((e) => e.l));
        assert.ok(Math.abs(out.logsumexp[pos] - stats.lse) < 1e-12, `logsumexp ${out.logsumexp[pos]} vs ${stats.lse}`);
        assert.ok(Math.abs(out.entropy[pos] - stats.entropy) < 1e-12, `entropy ${out.entropy[pos]} vs ${stats.entropy}`);
      }
    }
  }
});

test('penalizedRow: a penalty that brings two candidates level keeps the head order between them', () => {
  const head = headFrom([[[[20, 2], [21, 1], [22, 0]]]]);
  const out = penalizedRow(head, 0, new Map([[20, 1]]), { frequency: 0, presence: 1 });
  assert.deepEqual([...out.topkIds], [20, 21, 22], 'token 20 (now 1, level with 21) stays first');
  const more = penalizedRow(head, 0, new Map([[20, 1]]), { frequency: 0, presence: 1.5 });
  assert.deepEqual([...more.topkIds], [21, 20, 22]);
});

test('penalizedRow: with mass outside the K, only the penalised candidates change the normaliser', () => {
  // Candidates hold e^2 + e^1; the vocabulary's tail another 3 (headFrom's extraMass).
  const head = headFrom([[[[30, 2], [31, 1]]]], 3);
  const out = penalizedRow(head, 0, new Map([[30, 1]]), { frequency: 0, presence: 1 });
  assert.ok(Math.abs(out.logsumexp[0] - Math.log(Math.exp(1) + Math.exp(1) + 3)) < 1e-12);
});

test('a sequence with a presence penalty stops choosing the token it already committed', () => {
  // Every masked position prefers token 40 (logit 1) over 41 (0.6) and 42 (0): one position per step.
  const step = (positions: number) => headFrom([Array.from({ length: positions }, () => [[40, 1], [41, 0.6], [42, 0]] as [number, number][])]);
  const run = (presencePenalty: number, frequencyPenalty = 0) => {
    const seq = new Sequence({
      prefix: [6, 50],
      suffix: [],
      params: params({ maxTokens: 4, steps: 4, blockLength: 4, presencePenalty, frequencyPenalty }),
      maskTokenId: 2,
      eosTokenIds: [1],
      seed: 0,
    });
    while (seq.end === null) seq.applyStep(step(seq.wantedPositions().length), 0, seq.wantedPositions());
    return seq.generated();
  };
  assert.deepEqual(run(0), [40, 40, 40, 40]);
  // Presence: once committed, a token drops by the penalty once. 0.3: 40 still leads (0.7 against 0.6). 0.5: 40 (0.5)
  // yields to 41 (0.6), which then drops below it (0.1). 1.5: each of the three in turn, then the least penalised.
  assert.deepEqual(run(0.3), [40, 40, 40, 40]);
  assert.deepEqual(run(0.5), [40, 41, 40, 40]);
  assert.deepEqual(run(1.5), [40, 41, 42, 40]);
  // A frequency penalty grows with each commit: 40 (1 - 0.3 c) and 41 (0.6 - 0.3 c) take turns.
  assert.deepEqual(run(0, 0.3), [40, 40, 41, 40]);
});
