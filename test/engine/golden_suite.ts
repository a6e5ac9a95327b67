// Golden vectors: the engine (ONNX Runtime) must give the Python reference's tokens (PyTorch), token for token, in
// every cache mode (none, and Fast-dLLM's prefix and dual cache through the cached graph of format-2 folders; for the
// block diffusion model, none and its exact block cache), each case alone and all cases of a mode in one batch, on
// the CPU provider (golden.test.ts) and on WebGPU with the caches on the device (golden_webgpu.test.ts).
// Regenerate a fixture after its model changes:
//   cd models && python3 -m dllm.reference --golden ../test/fixtures/golden/tiny-llada.json
//   cd models && python3 -m dllm.reference --model tiny-bd3 --golden ../test/fixtures/golden/tiny-bd3.json
//   cd models && python3 -m dllm.reference --model tiny-dream-random --golden ../test/fixtures/golden/tiny-dream-random.json

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DiffusionEngine } from '../../src/engine/engine.js';
import type { Provider } from '../../src/engine/onnx_session.js';
import type { ModelFolder } from '../../src/engine/model_folder.js';
import type { EngineEvent, SamplingParams } from '../../src/engine/types.js';
import { BD3_MODEL_DIR, collect, DREAM_MODEL_DIR, finishes, MODEL_DIR, openTestEngine, request, ROOT } from './model_fixture.js';

interface GoldenCase {
  name: string;
  prompt: string;
  prompt_token_ids: number[];
  suffix_token_ids: number[];
  n: number;
  params: SamplingParams;
  /** The reference saw a decision closer than float32 rounding can be trusted with (see models/dllm/reference/sampler.py, choose_token). */
  near_tie: boolean;
  min_margin: number | null;
  expected: { token_ids: number[]; finish_reason: string; steps: number; canvas: (number | null)[] }[];
}

/** What a golden case compares: per choice its tokens, end, steps and whole final span. */
function outcome(events: EngineEvent[]) {
  // The last step event of each choice carries its whole span, also what was committed after an end-of-text.
  const canvas = new Map<number, (number | null)[]>();
  for (const e of events) if (e.type === 'step') canvas.set(e.index, e.canvas!);
  return finishes(events).map((f) => ({ token_ids: f.tokenIds, finish_reason: f.finishReason, steps: f.steps, canvas: canvas.get(f.index) }));
}

const cacheOf = (c: GoldenCase) => c.params.cache ?? 'none';

export const LLADA_GOLDEN = process.env.DLLM_GOLDEN ?? path.join(ROOT, 'test/fixtures/golden/tiny-llada.json');
export const BD3_GOLDEN = path.join(ROOT, 'test/fixtures/golden/tiny-bd3.json');
/** Dream's sampler and shifted logits, from the PyTorch reference of Dream's `_sample` (models/dllm/reference/dream.py)
 * and, for the cache modes, the reference mirror. */
export const DREAM_GOLDEN = path.join(ROOT, 'test/fixtures/golden/tiny-dream-random.json');
export { BD3_MODEL_DIR, DREAM_MODEL_DIR, MODEL_DIR };

/** One model folder against its fixture on one provider: every case alone, then every exact case of a cache mode in
 * one batch. */
export function goldenSuite(modelDir: string, fixture: string, provider: Provider = 'cpu', options: { alonePerMode?: number; batchedPerMode?: number } = {}): void {
  const golden = JSON.parse(readFileSync(fixture, 'utf8')) as { model: string; onnx_sha256: string; cases: GoldenCase[] };
  const spec = JSON.parse(readFileSync(path.join(modelDir, 'dllm.json'), 'utf8')) as { format: string; weights?: { fp32: string } };
  const skipModel = existsSync(path.join(modelDir, 'model.onnx')) ? false : `no model at ${modelDir}`;
  const noCachedGraph = spec.format === 'dllm-onnx/1' ? `${modelDir} has no cached graph (format 1)` : false;
  const models = path.join(ROOT, 'models');
  const regenerate = `cd models && python3 -m dllm.reference --model ${path.relative(models, modelDir)} --golden ${path.relative(models, fixture)}`;

  describe(`golden vectors of ${golden.model} (${provider})`, () => {
    let engine: DiffusionEngine;
    let model: ModelFolder;
    before(async () => {
      if (skipModel) return;
      ({ engine, model } = await openTestEngine(16, { modelDir, provider }));
      assert.equal((await engine.health()).provider, provider, `the engine runs on ${provider}`);
    });
    after(async () => engine?.close());

    test('the golden vectors were made from this model.onnx', { skip: skipModel }, () => {
      // Format 2 keeps the weights outside the graph: the hash covers model.onnx, then its weights file.
      const hash = createHash('sha256').update(readFileSync(path.join(modelDir, 'model.onnx')));
      const weights = spec.weights ? path.join(modelDir, spec.weights.fp32) : null;
      if (weights !== null && existsSync(weights)) hash.update(readFileSync(weights));
      assert.equal(hash.digest('hex'), golden.onnx_sha256, `model.onnx changed: regenerate with ${regenerate}`);
    });

    test('at least 10 prompt x settings combinations checked exactly', () => {
      assert.ok(golden.cases.filter((c) => !c.near_tie).length >= 10, 'add cases to models/dllm/reference/golden.py');
    });

    const generateCase = (c: GoldenCase, id: string) =>
      collect(engine.generate(request(id, c.prompt_token_ids, { ...c.params, cache: cacheOf(c) }, { n: c.n, suffixTokenIds: c.suffix_token_ids, includeCanvas: true })));

    // On a slow provider: alonePerMode, the first cases of each cache mode alone; batchedPerMode, the first exact ones
    // of each mode in its batch.
    const alone = golden.cases.filter((c, i) => {
      const earlier = golden.cases.slice(0, i).filter((e) => cacheOf(e) === cacheOf(c)).length;
      return options.alonePerMode === undefined || earlier < options.alonePerMode;
    });
    for (const c of alone) {
      // A near-tie decision may flip between PyTorch and ONNX Runtime float32 results: such a case runs, but as a todo.
      const todo = c.near_tie ? `near-tie decision in the reference (margin ${c.min_margin})` : undefined;
      const skip = skipModel || (cacheOf(c) !== 'none' && noCachedGraph);
      test(`golden: ${c.name}`, { skip, todo }, async () => {
        assert.deepEqual(model.tokenizer.encode(c.prompt), c.prompt_token_ids, 'TypeScript and Python tokenizers agree');
        assert.deepEqual(outcome(await generateCase(c, `golden-${c.name}`)), c.expected);
      });
    }

    // Batched: every exact case of a mode at once (continuous batching puts them in the same graph runs, left-padded,
    // full passes and cached steps side by side); each must still give the reference's tokens.
    for (const mode of ['none', 'prefix', 'dual'] as const) {
      const cases = golden.cases.filter((c) => cacheOf(c) === mode && !c.near_tie).slice(0, options.batchedPerMode);
      if (cases.length === 0) continue;
      const skip = skipModel || (mode !== 'none' && noCachedGraph) || (cases.length < 2 ? 'fewer than two cases' : false);
      test(`golden, batched: all ${cases.length} ${mode} cases at once`, { skip }, async () => {
        const runs = await Promise.all(cases.map((c) => generateCase(c, `golden-batched-${c.name}`)));
        cases.forEach((c, i) => assert.deepEqual(outcome(runs[i]), c.expected, c.name));
      });
    }
  });
}
