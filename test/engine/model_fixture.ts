// The real model folder for tests that need ONNX Runtime; they skip when it is absent.

import { existsSync } from 'node:fs';
import path from 'node:path';
import { openEngine, type DiffusionEngine, type OpenEngineOptions } from '../../src/engine/engine.js';
import type { ModelFolder } from '../../src/engine/model_folder.js';
import type { EngineEvent, FinishEvent, GenerateRequest } from '../../src/engine/types.js';
import { ROOT } from '../helpers/paths.js';

export { ROOT };
export const MODEL_DIR = process.env.DLLM_TEST_MODEL ?? path.join(ROOT, 'models', 'tiny-llada');
export const HAVE_MODEL = existsSync(path.join(MODEL_DIR, 'model.onnx'));
export const SKIP_NO_MODEL = HAVE_MODEL ? false : `no model at ${MODEL_DIR}`;
/** The block diffusion model (BD3-LM) of the golden and benchmark runs. */
export const BD3_MODEL_DIR = path.join(ROOT, 'models', 'tiny-bd3');
/** A Dream-architecture folder (shifted logits, grouped-query attention, q/k/v biases, untied head) with random
 * weights, converted from a Dream-layout checkpoint (models/build_tiny_dream_random.sh). */
export const DREAM_MODEL_DIR = path.join(ROOT, 'models', 'tiny-dream-random');

/** The engine on the test model; requests without `cache` run without one, whatever the provider's default. */
export async function openTestEngine(maxBatchSize = 16, options: Partial<OpenEngineOptions> = {}): Promise<{ engine: DiffusionEngine; model: ModelFolder }> {
  return openEngine({ modelDir: MODEL_DIR, provider: 'cpu', threads: 2, maxBatchSize, cache: 'none', ...options });
}

export async function collect(events: AsyncIterable<EngineEvent>): Promise<EngineEvent[]> {
  const out: EngineEvent[] = [];
  for await (const event of events) out.push(event);
  return out;
}

export function finishes(events: EngineEvent[]): FinishEvent[] {
  return events.filter((e): e is FinishEvent => e.type === 'finish').sort((a, b) => a.index - b.index);
}

export function request(id: string, promptTokenIds: number[], params: GenerateRequest['params'], extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return { id, promptTokenIds, suffixTokenIds: [], params, n: 1, includeCanvas: false, ...extra };
}
