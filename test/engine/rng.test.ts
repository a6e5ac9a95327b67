import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CounterRng, mix32 } from '../../src/engine/rng.js';

test('CounterRng reproduces the values of the Python reference (dllm.reference.CounterRng)', () => {
  // Printed by: CounterRng(12345).draw(5) and CounterRng(2**40 + 7).draw(2) in models/dllm/reference/sampler.py
  const r = new CounterRng(12345);
  const got = Array.from({ length: 5 }, () => r.next());
  assert.deepEqual(got, [0.38943238043641737, 0.4576326490778496, 0.3338784749893068, 0.6815598506514412, 0.5461809082081363]);
  const big = new CounterRng(2 ** 40 + 7);
  assert.deepEqual([big.next(), big.next()], [0.25966469112474055, 0.26206631445689943]);
});

test('CounterRng draws lie in the open interval (0, 1) and look uniform', () => {
  const r = new CounterRng(1);
  let sum = 0;
  const n = 20000;
  for (let i = 0; i < n; i++) {
    const u = r.next();
    assert.ok(u > 0 && u < 1);
    sum += u;
  }
  assert.ok(Math.abs(sum / n - 0.5) < 0.01);
  assert.equal(r.position, n);
});

test('different seeds give different streams; bad seeds are refused', () => {
  assert.notEqual(new CounterRng(1).next(), new CounterRng(2).next());
  assert.throws(() => new CounterRng(-1), RangeError);
  assert.throws(() => new CounterRng(1.5), RangeError);
  assert.equal(mix32(0), 0);
});
