// Request validation against a model (pure: no ONNX, no tokenizer), shared by the API (before it enqueues) and the
// engine (before it admits). Every failure is an EngineError naming the request field (OpenAI's `param`).

import { CACHE_MODES, DREAM_ALGS, EngineError, type GenerateRequest, type SamplingParams } from './types.js';
import type { ModelSpec } from './model_folder.js';
import { REMASKING_RULES } from './model_folder.js';
import { MAX_PENALTY } from './penalties.js';
import { MAX_SEED } from './rng.js';
import { generatedLength, spanLength } from './sequence.js';

/** Most alternatives per token that logprobs returns (OpenAI's completions limit). */
export const MAX_LOGPROBS = 5;
/** Most choices per request. */
export const MAX_CHOICES = 16;
/** Most stop strings per request (OpenAI's limit). */
export const MAX_STOP_STRINGS = 4;
/** Highest sampling temperature (the API schema states the same limits: src/schemas/common.ts). */
export const MAX_TEMPERATURE = 100;
/** Highest classifier-free guidance scale. */
export const MAX_CFG_SCALE = 100;

/** The canvas's prefix: the prompt, after the model's BOS unless the prompt was given as token ids (verbatimPrompt). */
export function promptPrefix(request: Pick<GenerateRequest, 'promptTokenIds' | 'verbatimPrompt'>, bosTokenId: number | null): number[] {
  return bosTokenId === null || request.verbatimPrompt === true ? request.promptTokenIds : [bosTokenId, ...request.promptTokenIds];
}

function invalid(param: string, message: string): never {
  throw new EngineError('invalid_request', message, param);
}

function checkInt(value: number, param: string, min: number, max = Infinity): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    invalid(param, `${param} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

function checkNumber(value: number, param: string, min: number, max: number, minExclusive = false): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (minExclusive && value === min)) {
    invalid(param, `${param} must be a number in ${minExclusive ? '(' : '['}${min}, ${max}], got ${value}`);
  }
}

function checkTokens(ids: readonly number[], param: string, spec: ModelSpec): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) {
      invalid(param, `${param} holds token id ${id}, outside the vocabulary [0, ${spec.vocabSize})`);
    }
  }
}

/** Sampling parameters alone (field names in errors are the API's snake_case names). */
export function validateSamplingParams(spec: ModelSpec, p: SamplingParams): void {
  checkInt(p.maxTokens, 'max_tokens', 1, spec.maxSequenceLength);
  checkInt(p.blockLength, 'block_length', 1, spec.maxSequenceLength);
  checkInt(p.steps, 'steps', 1, spec.maxSequenceLength);
  // A block diffusion span's blocks depend on where the prompt ends, so its steps are shared out by block size
  // (engine/sequence.ts) rather than required to divide into blocks.
  if (spec.blockSize !== null) validateBlockDiffusion(spec.blockSize, p);
  else {
    const genLength = generatedLength(p.maxTokens, p.blockLength);
    const blocks = genLength / p.blockLength;
    if (p.steps % blocks !== 0) {
      invalid(
        'steps',
        `steps (${p.steps}) must be a multiple of the number of blocks (${blocks}: max_tokens ${p.maxTokens} rounded up to ` +
          `whole blocks of block_length ${p.blockLength} is ${genLength}); choose a block_length that divides the span accordingly`,
      );
    }
  }
  if (!REMASKING_RULES.includes(p.remasking)) {
    invalid('remasking', `remasking must be one of ${REMASKING_RULES.join(', ')}, got ${JSON.stringify(p.remasking)}`);
  }
  if (p.threshold !== null) checkNumber(p.threshold, 'threshold', 0, 1, true);
  if (p.factor !== null) checkNumber(p.factor, 'factor', 0, Number.MAX_VALUE, true);
  checkNumber(p.temperature, 'temperature', 0, MAX_TEMPERATURE);
  checkNumber(p.topP, 'top_p', 0, 1, true);
  checkInt(p.topK, 'top_k', 0, spec.topk);
  checkNumber(p.cfgScale, 'cfg_scale', 0, MAX_CFG_SCALE);
  if (p.seed !== null) checkInt(p.seed, 'seed', 0, MAX_SEED);
  if (!Array.isArray(p.stop) || p.stop.length > MAX_STOP_STRINGS || !p.stop.every((s) => typeof s === 'string' && s.length > 0)) {
    invalid('stop', `stop must be at most ${MAX_STOP_STRINGS} non-empty strings`);
  }
  if (p.logprobs !== null) checkInt(p.logprobs, 'logprobs', 0, Math.min(MAX_LOGPROBS, spec.topk));
  if (p.ignoreEos !== undefined && typeof p.ignoreEos !== 'boolean') invalid('ignore_eos', 'ignore_eos must be a boolean');
  if (p.minTokens !== undefined) checkInt(p.minTokens, 'min_tokens', 0, p.maxTokens);
  if (p.frequencyPenalty !== undefined) checkNumber(p.frequencyPenalty, 'frequency_penalty', -MAX_PENALTY, MAX_PENALTY);
  if (p.presencePenalty !== undefined) checkNumber(p.presencePenalty, 'presence_penalty', -MAX_PENALTY, MAX_PENALTY);
  if (p.alg !== undefined) validateDream(spec, p);
  else if (p.algTemp !== undefined || p.eps !== undefined) invalid(p.algTemp !== undefined ? 'alg_temp' : 'eps', "alg_temp and eps belong to Dream's sampler: send alg with them");
  if (p.cache !== undefined) {
    if (!CACHE_MODES.includes(p.cache)) invalid('cache', `cache must be one of ${CACHE_MODES.join(', ')}, got ${JSON.stringify(p.cache)}`);
    if (p.cache !== 'none' && spec.cached === null) {
      invalid('cache', `cache "${p.cache}" needs a model folder with a cached graph (format dllm-onnx/2); ${spec.name} has none`);
    }
  }
}

/** Dream's sampler: its own commit schedule (so none of LLaDA's commit rules), on a bidirectional model. */
function validateDream(spec: ModelSpec, p: SamplingParams): void {
  if (!DREAM_ALGS.includes(p.alg!)) invalid('alg', `alg must be one of ${DREAM_ALGS.join(', ')}, got ${JSON.stringify(p.alg)}`);
  if (spec.blockSize !== null) invalid('alg', "alg (Dream's sampler) is for bidirectional models; a block diffusion model decodes with remasking");
  if (p.threshold !== null) invalid('threshold', "threshold belongs to LLaDA's sampler; with alg (Dream's sampler) the timesteps decide how many positions a step commits");
  if (p.factor !== null) invalid('factor', "factor belongs to LLaDA's sampler; with alg (Dream's sampler) the timesteps decide how many positions a step commits");
  if (p.algTemp !== undefined) checkNumber(p.algTemp, 'alg_temp', 0, MAX_TEMPERATURE);
  if (p.eps !== undefined) {
    checkNumber(p.eps, 'eps', 0, 1, true);
    if (p.eps === 1) invalid('eps', 'eps must be a number in (0, 1), got 1');
  }
}

/** What a block diffusion model cannot do: it decodes its own blocks, left to right, from the prompt alone. */
function validateBlockDiffusion(blockSize: number, p: SamplingParams): void {
  if (p.blockLength !== blockSize) {
    invalid('block_length', `block_length must be ${blockSize} for this block diffusion model (its block size), got ${p.blockLength}`);
  }
  if (p.cfgScale !== 0) invalid('cfg_scale', 'classifier-free guidance (cfg_scale) is not supported by block diffusion models');
  if (p.cache === 'dual') {
    invalid('cache', 'cache "dual" is for bidirectional models; a block diffusion model\'s exact block cache is "prefix"');
  }
}

/** A whole request: prompt, suffix, n, the canvas against the model's length (checked first), parameters. */
export function validateRequest(spec: ModelSpec, request: GenerateRequest): void {
  if (!Array.isArray(request.promptTokenIds) || request.promptTokenIds.length === 0) {
    invalid('prompt', 'prompt must not be empty');
  }
  checkTokens(request.promptTokenIds, 'prompt', spec);
  checkTokens(request.suffixTokenIds, 'suffix', spec);
  checkInt(request.n, 'n', 1, MAX_CHOICES);
  checkInt(request.params.maxTokens, 'max_tokens', 1);
  checkInt(request.params.blockLength, 'block_length', 1);
  const p = request.params;
  if (spec.blockSize !== null && request.suffixTokenIds.length > 0) {
    invalid('suffix', 'suffix (infilling) is not supported by block diffusion models: they decode left to right');
  }
  const prompt = promptPrefix(request, spec.bosTokenId).length;
  const genLength = spanLength(p.maxTokens, p.blockLength, spec.blockSize);
  const total = prompt + genLength + request.suffixTokenIds.length;
  if (total > spec.maxSequenceLength) {
    throw new EngineError(
      'context_length_exceeded',
      `This model's maximum context length is ${spec.maxSequenceLength} tokens, however you requested ${total} tokens ` +
        `(${prompt} in the prompt, ${genLength} for the completion` +
        `${spec.blockSize === null ? `: max_tokens ${p.maxTokens} rounded up to whole blocks of ${p.blockLength}` : ''}` +
        `${request.suffixTokenIds.length ? `, ${request.suffixTokenIds.length} in the suffix` : ''}). Please reduce the prompt or max_tokens.`,
      // A prompt that leaves no room for even one generated position is at fault whatever max_tokens says.
      prompt + request.suffixTokenIds.length + 1 > spec.maxSequenceLength ? 'prompt' : 'max_tokens',
    );
  }
  validateSamplingParams(spec, request.params);
}
