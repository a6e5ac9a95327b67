// The last stage of turning an API request into engine requests, shared by both endpoints: the engine's own
// validation (engine/validation.ts, the only place request values are judged), run before anything is queued.

import type { GenerateRequest } from '../engine/types.js';
import { promptPrefix } from '../engine/validation.js';
import { fromEngineError } from './errors.js';
import type { ServingModel } from './model.js';

/** Length of the canvas prefix the engine will build for this prompt (BOS unless token ids were sent). */
export function prefixLength(model: ServingModel, promptTokenIds: number[], verbatim: boolean): number {
  return promptPrefix({ promptTokenIds, verbatimPrompt: verbatim }, model.bosTokenId).length;
}

/** Validates a request as the engine will; its errors become 400s naming the API's field (`promptParam` for the prompt). */
export function validated(model: ServingModel, request: GenerateRequest, promptParam: 'prompt' | 'messages'): GenerateRequest {
  try {
    model.validate(request);
  } catch (e) {
    const api = fromEngineError(e);
    throw api.param === 'prompt' ? api.withParam(promptParam) : api;
  }
  return request;
}
