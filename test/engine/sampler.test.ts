import assert from 'node:assert/strict';
import { test } from 'node:test';
import { headSlot } from '../../src/engine/head.js';
import { CounterRng } from '../../src/engine/rng.js';
import { candidateCount, chooseToken, confidenceScore, rankByScore, selectCommits, transferSchedule } from '../../src/engine/sampler.js';
import { headFrom } from './helpers.js';

const greedy = { temperature: 0, topK: 0, topP: 1, maskTokenId: 2 };

test('transferSchedule: equal shares, remainder to the first steps (LLaDA get_num_transfer_tokens)', () => {
  assert.deepEqual(transferSchedule(32, 32), Array(32).fill(1));
  assert.deepEqual(transferSchedule(32, 16), Array(16).fill(2));
  assert.deepEqual(transferSchedule(10, 4), [3, 3, 2, 2]);
  assert.deepEqual(transferSchedule(4, 8), [1, 1, 1, 1]);
});

test('greedy picks the first candidate, skipping the mask token; logprob = logit - logsumexp', () => {
  const head = headFrom([[[[7, 3], [8, 1]], [[2, 5], [9, 4]]]]);
  const a = chooseToken(headSlot(head, 0, 0), greedy, null);
  assert.equal(a.tokenId, 7);
  assert.ok(Math.abs(a.logprob - (3 - head.logsumexp[0])) < 1e-12);
  assert.equal(chooseToken(headSlot(head, 0, 1), greedy, null).tokenId, 9);
});

test('Gumbel-max sampling follows softmax(l / T) over the allowed candidates', () => {
  const head = headFrom([[[[10, Math.log(0.6)], [11, Math.log(0.3)], [12, Math.log(0.1)]]]]);
  const slot = headSlot(head, 0, 0);
  const rng = new CounterRng(5);
  const counts = new Map<number, number>();
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const id = chooseToken(slot, { ...greedy, temperature: 1 }, rng).tokenId;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  assert.ok(Math.abs(counts.get(10)! / n - 0.6) < 0.02);
  assert.ok(Math.abs(counts.get(12)! / n - 0.1) < 0.02);
  assert.equal(rng.position, 3 * n, 'K uniforms per position');
  const topK = new CounterRng(5);
  for (let i = 0; i < 200; i++) assert.notEqual(chooseToken(slot, { ...greedy, temperature: 1, topK: 2 }, topK).tokenId, 12);
});

test('top_p keeps the smallest prefix reaching the mass', () => {
  const head = headFrom([[[[10, Math.log(0.6)], [11, Math.log(0.3)], [12, Math.log(0.1)]]]]);
  const slot = headSlot(head, 0, 0);
  assert.equal(candidateCount(slot, { ...greedy, temperature: 1, topP: 0.5 }), 1);
  assert.equal(candidateCount(slot, { ...greedy, temperature: 1, topP: 0.85 }), 2);
  assert.equal(candidateCount(slot, { ...greedy, temperature: 1, topP: 1 }), 3);
  assert.equal(candidateCount(slot, { ...greedy, temperature: 1, topK: 2, topP: 1 }), 2);
});

test('confidence scores: low_confidence, margin, entropy, random', () => {
  const head = headFrom([[[[10, Math.log(0.5)], [11, Math.log(0.2)]]]], 0.3);
  const slot = headSlot(head, 0, 0);
  const choice = chooseToken(slot, greedy, null);
  assert.ok(Math.abs(confidenceScore('low_confidence', slot, choice, 0) - 0.5) < 1e-6);
  assert.ok(Math.abs(confidenceScore('margin', slot, choice, 0) - 0.3) < 1e-6);
  assert.equal(confidenceScore('entropy', slot, choice, 0), -head.entropy[0]);
  assert.equal(confidenceScore('random', slot, choice, 0.25), 0.25);
});

test('selectCommits: fixed count, threshold (at least one), factor rule; ties to the leftmost', () => {
  assert.deepEqual(rankByScore([0.5, 0.9, 0.5, 0.1]), [1, 0, 2, 3]);
  assert.deepEqual(selectCommits([0.5, 0.9, 0.5, 0.1], { kind: 'fixed', count: 2 }), [1, 0]);
  assert.deepEqual(selectCommits([0.5, 0.95, 0.92, 0.1], { kind: 'threshold', threshold: 0.9 }), [1, 2]);
  assert.deepEqual(selectCommits([0.5, 0.3], { kind: 'threshold', threshold: 0.9 }), [0]);
  // factor f = 1: the i-th best (0-based) needs >= 1 - 1/(i+2): 0.5, 0.667, 0.75 ...
  assert.deepEqual(selectCommits([0.9, 0.7, 0.8, 0.1], { kind: 'factor', factor: 1 }), [0, 2]);
  assert.deepEqual(selectCommits([0.9, 0.76, 0.8, 0.1], { kind: 'factor', factor: 1 }), [0, 2, 1]);
  assert.deepEqual(selectCommits([0.9, 0.6, 0.1], { kind: 'factor', factor: 1 }), [0]);
  assert.deepEqual(selectCommits([], { kind: 'fixed', count: 3 }), []);
});
