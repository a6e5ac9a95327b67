// Golden vectors: the engine (ONNX Runtime) must give the Python reference's tokens (PyTorch), token for token, in
// every cache mode (none, and Fast-dLLM's prefix and dual cache through the cached graph of format-2 folders), each
// case alone and all cases of a mode in one batch. Regenerate the fixture after the model changes:
//   python3 models/dllm/reference_generate.py --golden test/fixtures/golden/tiny-llada.json

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { DiffusionEngine } from '../../src/engine/engine.js';
import type { ModelFolder } from '../../src/engine/model_folder.js';
import type { EngineEvent, SamplingParams } from '../../src/engine/types.js';
import { collect, finishes, MODEL_DIR, openTestEngine, request, ROOT, SKIP_NO_MODEL } from './model_fixture.js';

interface GoldenCase {
  name: string;
  prompt: string;
  prompt_token_ids: number[];
  suffix_token_ids: number[];
  n: number;
  params: SamplingParams;
  /** The reference saw a decision closer than float32 rounding can be trusted with (see reference_generate.py). */
  near_tie: boolean;
  min_margin: number | null;
  expected: { token_ids: number[]; finish_reason: string; steps: number; canvas: (number | null)[] }[];
}

const GOLDEN = process.env.DLLM_GOLDEN ?? path.join(ROOT, 'test/fixtures/golden/tiny-llada.json');
const golden = JSON.parse(readFileSync(GOLDEN, 'utf8')) as {
  onnx_sha256: string;
  cases: GoldenCase[];
};

let engine: DiffusionEngine;
let model: ModelFolder;

const spec = JSON.parse(readFileSync(path.join(MODEL_DIR, 'dllm.json'), 'utf8')) as { format: string; weights?: { fp32: string } };
const NO_CACHED_GRAPH = spec.format === 'dllm-onnx/1' ? `${MODEL_DIR} has no cached graph (format 1)` : false;
const cacheOf = (c: GoldenCase) => c.params.cache ?? 'none';

before(async () => {
  if (SKIP_NO_MODEL) return;
  ({ engine, model } = await openTestEngine());
});
after(async () => engine?.close());

test('the golden vectors were made from this model.onnx', { skip: SKIP_NO_MODEL }, () => {
  // Format 2 keeps the weights outside the graph: the hash covers model.onnx, then its weights file.
  const hash = createHash('sha256').update(readFileSync(path.join(MODEL_DIR, 'model.onnx')));
  const weights = spec.weights ? path.join(MODEL_DIR, spec.weights.fp32) : null;
  if (weights !== null && existsSync(weights)) hash.update(readFileSync(weights));
  const sha = hash.digest('hex');
  assert.equal(sha, golden.onnx_sha256, 'model.onnx changed: regenerate with python3 models/dllm/reference_generate.py --golden test/fixtures/golden/tiny-llada.json');
});

test('golden cases: at least 10 prompt x settings combinations checked exactly', () => {
  assert.ok(golden.cases.filter((c) => !c.near_tie).length >= 10, 'add cases to GOLDEN_CASES in reference_generate.py');
});

/** What a golden case compares: per choice its tokens, end, steps and whole final span. */
function outcome(events: EngineEvent[]) {
  // The last step event of each choice carries its whole span, also what was committed after an end-of-text.
  const canvas = new Map<number, (number | null)[]>();
  for (const e of events) if (e.type === 'step') canvas.set(e.index, e.canvas!);
  return finishes(events).map((f) => ({ token_ids: f.tokenIds, finish_reason: f.finishReason, steps: f.steps, canvas: canvas.get(f.index) }));
}

const generateCase = (c: GoldenCase, id: string) =>
  collect(engine.generate(request(id, c.prompt_token_ids, { ...c.params, cache: cacheOf(c) }, { n: c.n, suffixTokenIds: c.suffix_token_ids, includeCanvas: true })));

for (const c of golden.cases) {
  // A near-tie decision may flip between PyTorch and ONNX Runtime float32 results: such a case runs, but as a todo.
  const todo = c.near_tie ? `near-tie decision in the reference (margin ${c.min_margin})` : undefined;
  const skip = SKIP_NO_MODEL || (cacheOf(c) !== 'none' && NO_CACHED_GRAPH);
  test(`golden: ${c.name}`, { skip, todo }, async () => {
    assert.deepEqual(model.tokenizer.encode(c.prompt), c.prompt_token_ids, 'TypeScript and Python tokenizers agree');
    assert.deepEqual(outcome(await generateCase(c, `golden-${c.name}`)), c.expected);
  });
}

// Batched: every exact case of a mode at once (continuous batching puts them in the same graph runs, left-padded,
// full passes and cached steps side by side); each must still give the reference's tokens.
for (const mode of ['none', 'prefix', 'dual'] as const) {
  const cases = golden.cases.filter((c) => cacheOf(c) === mode && !c.near_tie);
  const skip = SKIP_NO_MODEL || (mode !== 'none' && NO_CACHED_GRAPH) || (cases.length < 2 ? 'fewer than two cases' : false);
  test(`golden, batched: all ${cases.length} ${mode} cases at once`, { skip }, async () => {
    const runs = await Promise.all(cases.map((c) => generateCase(c, `golden-batched-${c.name}`)));
    cases.forEach((c, i) => assert.deepEqual(outcome(runs[i]), c.expected, c.name));
  });
}
