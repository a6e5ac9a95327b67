import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Sequence, blockStarts, generatedLength } from '../../src/engine/sequence.js';
import type { HeadOutputs } from '../../src/engine/head.js';
import { headFrom, params } from './helpers.js';

const MASK = 2;

function sequence(overrides = {}, prefix = [6, 20, 21], suffix: number[] = []): Sequence {
  return new Sequence({ prefix, suffix, params: params(overrides), maskTokenId: MASK, eosTokenIds: [1, 5], seed: 0 });
}

/** A head for one row: position p predicts token(p) with probability decreasing left to right. */
function headFor(positions: number[], token: (canvasIndex: number) => number, confidence = (i: number) => 0.9 - 0.01 * i): HeadOutputs {
  // A third candidate takes the remaining mass, so p(token) is exactly confidence(c).
  return headFrom([positions.map((c) => [[token(c), Math.log(confidence(c))], [30, Math.log(0.01)], [31, Math.log(0.99 - confidence(c))]])], 0);
}

function run(seq: Sequence, token: (canvasIndex: number) => number, confidence?: (i: number) => number): number[][] {
  const committedPerStep: number[][] = [];
  while (seq.end === null) {
    const positions = seq.wantedPositions();
    const commits = seq.applyStep(headFor(positions, token, confidence), 0, positions);
    committedPerStep.push(commits.map((c) => c.position));
  }
  return committedPerStep;
}

test('canvas: prefix, gen_length masks (max_tokens rounded up to blocks), suffix', () => {
  assert.equal(generatedLength(10, 8), 16);
  const seq = sequence({ maxTokens: 10, blockLength: 8, steps: 4 }, [6, 20], [40, 41]);
  assert.deepEqual(seq.canvas, [6, 20, ...Array(16).fill(MASK), 40, 41]);
  assert.deepEqual(seq.wantedPositions(), [2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(seq.unconditionalCanvas(), [MASK, MASK, ...Array(16).fill(MASK), MASK, MASK]);
});

test('fixed schedule: blocks left to right, equal shares per step, most confident first', () => {
  const seq = sequence({ maxTokens: 16, blockLength: 8, steps: 8 });
  const steps = run(seq, () => 40);
  assert.equal(steps.length, 8);
  assert.ok(steps.every((s) => s.length === 2));
  assert.deepEqual(steps[0], [0, 1]);
  assert.deepEqual(steps[4], [8, 9], 'the second block starts after the first is full');
  assert.deepEqual(seq.end, { reason: 'length', length: 16 });
  assert.equal(seq.steps, 8);
});

test('positions after the current block are never committed in it', () => {
  const seq = sequence({ maxTokens: 16, blockLength: 8, steps: 16 });
  const positions = seq.wantedPositions();
  assert.ok(positions.every((p) => p < 3 + 8));
});

test('end-of-text committed with everything before it committed ends the sequence (stop)', () => {
  const seq = sequence({ maxTokens: 32, blockLength: 8, steps: 32 });
  // Position 5 of the span (canvas 8) predicts EOS; left to right commits reach it at step 6.
  run(seq, (c) => (c === 8 ? 1 : 40));
  assert.deepEqual(seq.end, { reason: 'stop', length: 5 });
  assert.equal(seq.steps, 6);
});

test('an EOS committed early does not end the sequence until the positions before it are committed', () => {
  const seq = sequence({ maxTokens: 8, blockLength: 8, steps: 8 });
  // EOS at span position 4 is the most confident: committed first, the sequence goes on until 0..3 are filled.
  const steps = run(seq, (c) => (c === 7 ? 5 : 40), (c) => (c === 7 ? 0.99 : 0.9 - 0.01 * c));
  assert.deepEqual(steps[0], [4]);
  assert.deepEqual(seq.end, { reason: 'stop', length: 4 });
  assert.equal(seq.steps, 5);
});

test('max_tokens below gen_length: ends once the first max_tokens positions are committed', () => {
  const seq = sequence({ maxTokens: 5, blockLength: 8, steps: 8 });
  run(seq, () => 40);
  assert.deepEqual(seq.end, { reason: 'length', length: 5 });
  assert.equal(seq.generated().slice(0, 5).every((t) => t === 40), true);
});

test('threshold decoding commits every position above the threshold, at least one', () => {
  const seq = sequence({ maxTokens: 8, blockLength: 8, steps: 8, threshold: 0.9 });
  const steps = run(seq, () => 40, (c) => (c < 6 ? 0.95 : 0.5));
  assert.deepEqual(steps[0], [0, 1, 2]);
  assert.deepEqual(steps.slice(1), [[3], [4], [5], [6], [7]]);
});

test('the suffix of an infill canvas is never touched', () => {
  const seq = sequence({ maxTokens: 8, blockLength: 8, steps: 4 }, [6, 20], [40, 41, 42]);
  run(seq, () => 50);
  assert.deepEqual(seq.canvas.slice(-3), [40, 41, 42]);
});

test('logprobs are recorded at commit: logprob of the token and the top alternatives', () => {
  const seq = sequence({ maxTokens: 8, blockLength: 8, steps: 8, logprobs: 2 });
  run(seq, () => 40);
  const record = seq.logprobs[0]!;
  assert.ok(Math.abs(record.logprob - Math.log(0.87)) < 1e-6, 'span position 0 is canvas index 3: p = 0.9 - 0.03');
  assert.equal(record.top.length, 2);
  assert.equal(record.top[0][0], 40);
});

test('a predicted mask token is never committed', () => {
  const seq = sequence({ maxTokens: 8, blockLength: 8, steps: 8 });
  run(seq, () => MASK);
  assert.ok(seq.generated().every((t) => t === 30));
});

test('block diffusion: blocks are counted from position 0, so the first one completes the prompt\'s last block', () => {
  assert.deepEqual(blockStarts(8, 8, 4, 4), [8, 12, 16]);
  assert.deepEqual(blockStarts(6, 8, 4, 4), [6, 8, 12, 14], 'the last block is cut at max_tokens');
  assert.deepEqual(blockStarts(5, 3, 4, 4), [5, 8]);
  assert.deepEqual(blockStarts(5, 1, 4, 4), [5, 6]);
  assert.deepEqual(blockStarts(3, 10, 8, null), [3, 11, 19], 'LLaDA: blocks of block_length from the prompt end');
  const seq = new Sequence({ prefix: [6, 20, 21], suffix: [], params: params({ maxTokens: 6, blockLength: 4, steps: 6 }), maskTokenId: MASK, eosTokenIds: [1, 5], seed: 0, blockSize: 4 });
  assert.equal(seq.genLength, 6, 'the span is max_tokens long');
  assert.deepEqual(seq.blockRange(), [3, 4]);
  assert.equal(seq.cacheFrontier(), 0, 'the prompt\'s last block is not final until the first generated block is');
  const steps = run(seq, () => 40);
  // steps = max_tokens: one token per step in every block, the short first one included; it stops at max_tokens.
  assert.deepEqual(steps, [[0], [1], [2], [3], [4], [5]]);
  assert.deepEqual(seq.end, { reason: 'length', length: 6 });
  assert.equal(seq.cacheFrontier(), 8);
});

test('block diffusion: a block of n positions gets ceil(n * steps / max_tokens) steps', () => {
  const seq = new Sequence({ prefix: [6, 20, 21], suffix: [], params: params({ maxTokens: 8, blockLength: 4, steps: 4 }), maskTokenId: MASK, eosTokenIds: [1, 5], seed: 0, blockSize: 4 });
  // Blocks [3, 4) [4, 8) [8, 11): 1 position in ceil(1 * 4 / 8) = 1 step, 4 in 2 steps, 3 in ceil(3 * 4 / 8) = 2.
  assert.deepEqual(run(seq, () => 40), [[0], [1, 2], [3, 4], [5, 6], [7]]);
});
