// Closing the engine while a graph run is in flight: close() waits for the step boundary, then ends the session.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EngineError } from '../../src/engine/types.js';
import { params } from './helpers.js';
import { openTestEngine, request } from './model_fixture.js';

test('close() during a generation cancels it and resolves once the graph run in flight is over', async () => {
  const { engine } = await openTestEngine();
  // Temperature 2 with random order runs many steps on the tiny model (greedy often ends at once).
  const long = params({ maxTokens: 128, steps: 128, blockLength: 32, temperature: 2, remasking: 'random', seed: 7 });
  const events = engine.generate(request('closing', [20, 21, 22], long))[Symbol.asyncIterator]();
  const first = await events.next();
  assert.equal(first.done, false);
  assert.equal((first.value as { type: string }).type, 'step');
  await engine.close();
  await assert.rejects(
    (async () => {
      for (let r = await events.next(); !r.done; r = await events.next());
    })(),
    (err: unknown) => err instanceof EngineError && err.code === 'cancelled',
  );
  assert.equal((await engine.health()).ok, false, 'the session is closed');
});
