// src/serving/runs.ts: the registry graceful shutdown waits on.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Runs } from '../../src/serving/runs.js';

class FakeRun {
  cancelled: string | null = null;
  cancel(reason: string) {
    this.cancelled = reason;
  }
}

test('drained: at once when empty; when the last run ends, not before; false at the deadline', async () => {
  const runs = new Runs<FakeRun>();
  assert.equal(await runs.drained(10_000), true);
  const [a, b] = [new FakeRun(), new FakeRun()];
  runs.add(a);
  runs.add(b);
  let settled: boolean | null = null;
  const t0 = performance.now();
  const waiting = runs.drained(10_000).then((v) => (settled = v));
  runs.delete(a);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(settled, null, 'one run is still going');
  runs.delete(b);
  assert.equal(await waiting, true);
  assert.ok(performance.now() - t0 < 5_000, 'woken by the last run, not by the deadline');

  runs.add(a);
  assert.equal(await runs.drained(30), false);
  runs.cancelAll('shutdown');
  assert.equal(a.cancelled, 'shutdown');
  runs.delete(a);
  assert.equal(runs.size, 0);
});
