import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildBatch, groupByLength } from '../../src/engine/batch.js';
import { Scheduler } from '../../src/engine/scheduler.js';
import { Sequence } from '../../src/engine/sequence.js';
import { params } from './helpers.js';

function seq(prefix: number[], overrides = {}): Sequence {
  return new Sequence({ prefix, suffix: [], params: params(overrides), maskTokenId: 2, eosTokenIds: [1], seed: 0 });
}

test('buildBatch: left padding, attention mask, positions shifted by the padding, guidance partner rows', () => {
  const a = seq([6, 20, 21, 22], { maxTokens: 4, blockLength: 4, steps: 4 });
  const b = seq([6, 20], { maxTokens: 4, blockLength: 4, steps: 4, cfgScale: 2 });
  const { feeds, rowOf } = buildBatch([{ sequence: a, positions: a.wantedPositions() }, { sequence: b, positions: b.wantedPositions().slice(0, 2) }], 0);
  assert.equal(feeds.rows, 3);
  assert.equal(feeds.length, 8);
  assert.deepEqual(rowOf, [0, 1]);
  assert.deepEqual([...feeds.inputIds.slice(8, 16)].map(Number), [0, 0, 6, 20, 2, 2, 2, 2]);
  assert.deepEqual([...feeds.attentionMask.slice(8, 16)].map(Number), [0, 0, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual([...feeds.inputIds.slice(16, 24)].map(Number), [0, 0, 2, 2, 2, 2, 2, 2], 'unconditional row: prompt masked');
  assert.equal(feeds.positionsPerRow, 4);
  assert.deepEqual([...feeds.positions.slice(4, 8)].map(Number), [4, 5, 5, 5], 'short position lists repeat their last one');
  assert.deepEqual([...feeds.cfgScale], [0, 2, 0]);
  assert.deepEqual([...feeds.uncondRow].map(Number), [0, 2, 2]);
});

test('groupByLength keeps similar lengths together and splits very different ones', () => {
  assert.deepEqual(groupByLength([40, 42, 41], [1, 1, 1]), [[0, 2, 1]]);
  assert.deepEqual(groupByLength([10, 200, 12, 190], [1, 1, 1, 1]), [[0, 2], [3, 1]]);
});

interface Item { rowCount: number; done: boolean; name: string }

test('scheduler: admits in arrival order while rows fit, retires finished and cancelled at the boundary', () => {
  const s = new Scheduler<Item>(3);
  const items: Item[] = [
    { rowCount: 1, done: false, name: 'a' },
    { rowCount: 2, done: false, name: 'b' },
    { rowCount: 1, done: false, name: 'c' },
  ];
  items.forEach((i) => s.add(i));
  assert.deepEqual(s.schedule().active.map((i) => i.name), ['a', 'b']);
  assert.equal(s.waitingCount, 1);
  items[0].done = true;
  const next = s.schedule();
  assert.deepEqual(next.retired.map((i) => i.name), ['a']);
  assert.deepEqual(next.active.map((i) => i.name), ['b', 'c']);
  items[2].done = true;
  items[1].done = true;
  assert.deepEqual(s.schedule().active, []);
});

test('scheduler: an item wider than the batch still runs alone; cancelled waiting items leave', () => {
  const s = new Scheduler<Item>(1);
  const wide = { rowCount: 2, done: false, name: 'wide' };
  const small = { rowCount: 1, done: false, name: 'small' };
  s.add(wide);
  s.add(small);
  assert.deepEqual(s.schedule().active.map((i) => i.name), ['wide']);
  small.done = true;
  const r = s.schedule();
  assert.deepEqual(r.retired.map((i) => i.name), ['small']);
  assert.throws(() => new Scheduler(0), RangeError);
});
