// OpenAI request fields → SamplingParams: defaults from the model folder, limits of the model, refusals of what we
// do not support. The engine validates again; the API validates first so that bad requests never reach a queue.

import { randomInt } from 'node:crypto';
import type { CacheMode, RemaskingRule, SamplingParams } from '../engine/types.js';
import { ApiError } from './errors.js';
import type { ServingModel } from './model.js';

/** Fields shared by the completion and chat requests (already schema-validated). */
export interface CommonFields {
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  n?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  steps?: number;
  block_length?: number;
  remasking?: RemaskingRule;
  threshold?: number | null;
  factor?: number | null;
  cfg_scale?: number;
  top_k?: number;
  cache?: CacheMode;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
}

/** Refuses OpenAI fields we do not support when they carry a non-default value. */
export function refuseUnsupported(f: CommonFields): void {
  if (f.frequency_penalty != null && f.frequency_penalty !== 0) throw ApiError.unsupported('frequency_penalty', 'is not supported: only 0');
  if (f.presence_penalty != null && f.presence_penalty !== 0) throw ApiError.unsupported('presence_penalty', 'is not supported: only 0');
  if (f.logit_bias != null && Object.keys(f.logit_bias).length > 0) throw ApiError.unsupported('logit_bias', 'is not supported: only {}');
}

export interface ResolvedParams {
  params: SamplingParams;
  n: number;
}

/**
 * Resolves sampling parameters for a prompt of `promptLen` tokens (without BOS) and a suffix of `suffixLen` tokens.
 * `promptParam` names the field a context-length error is about.
 */
export function resolveParams(
  model: ServingModel,
  f: CommonFields,
  promptLen: number,
  suffixLen: number,
  logprobs: number | null,
  promptParam: string,
): ResolvedParams {
  refuseUnsupported(f);
  const d = model.defaults;
  const bos = model.bosTokenId === null ? 0 : 1;
  const room = model.maxSequenceLength - promptLen - bos - suffixLen;
  const ctx = (gen: number, detail: string, param = f.max_tokens != null ? 'max_tokens' : promptParam) =>
    ApiError.contextLength(
      `This model's maximum context length is ${model.maxSequenceLength} tokens. However, you requested ` +
        `${promptLen + bos + suffixLen + gen} tokens (${promptLen + bos} in the prompt${suffixLen ? `, ${suffixLen} in the suffix` : ''}, ` +
        `${gen} to generate${detail}). Please reduce the length of the prompt or max_tokens.`,
      param,
    );
  if (promptLen === 0) throw ApiError.invalid('The prompt is empty', promptParam);
  // No room for even one generated position: the prompt is at fault, whatever max_tokens says.
  if (room < 1) throw ctx(1, '', promptParam);

  let maxTokens: number;
  let blockLength: number;
  if (model.blockSize !== null) {
    // Block diffusion: the model's blocks, counted from position 0; the engine checks the span against the context.
    maxTokens = f.max_tokens ?? Math.min(d.maxTokens, room);
    blockLength = f.block_length ?? model.blockSize;
  } else if (f.max_tokens != null) {
    maxTokens = f.max_tokens;
    blockLength = f.block_length ?? Math.min(d.blockLength, maxTokens);
  } else {
    blockLength = f.block_length ?? Math.min(d.blockLength, d.maxTokens);
    maxTokens = d.maxTokens;
    if (Math.ceil(maxTokens / blockLength) * blockLength > room) {
      // The default does not fit: shrink it to what fits (whole blocks).
      maxTokens = Math.floor(room / blockLength) * blockLength;
      if (maxTokens === 0) {
        if (f.block_length != null) throw ctx(blockLength, ` (one block of ${blockLength})`);
        maxTokens = room;
        blockLength = room;
      }
    }
  }
  const numBlocks = Math.ceil(maxTokens / blockLength);
  const genLength = numBlocks * blockLength;
  if (model.blockSize === null && genLength > room) {
    throw ctx(genLength, genLength !== maxTokens ? ` (max_tokens ${maxTokens} rounded up to whole blocks of ${blockLength})` : '');
  }

  let steps: number;
  if (f.steps != null) {
    steps = f.steps;
    if (model.blockSize === null && steps % numBlocks !== 0) {
      throw ApiError.invalid(
        `steps (${steps}) must be a multiple of the number of blocks (${numBlocks} = ${genLength} generated positions / block_length ${blockLength})`,
        'steps',
      );
    }
  } else {
    // The folder's default steps per generated position, applied to this length, in whole blocks.
    const perToken = d.steps / Math.max(1, d.maxTokens);
    const want = Math.max(1, Math.round(perToken * genLength));
    steps = Math.max(numBlocks, Math.floor(want / numBlocks) * numBlocks);
  }

  const topK = f.top_k ?? 0;
  if (topK > model.topk) throw ApiError.invalid(`top_k must be at most ${model.topk} (the model head's K)`, 'top_k');
  const temperature = f.temperature ?? d.temperature;
  const stop = f.stop == null ? [] : typeof f.stop === 'string' ? [f.stop] : f.stop;
  if (stop.some((s) => s.length === 0)) throw ApiError.invalid('stop strings must not be empty', 'stop');
  const threshold = f.threshold === undefined ? d.threshold : f.threshold;

  return {
    n: f.n ?? 1,
    params: {
      maxTokens,
      steps,
      blockLength,
      remasking: f.remasking ?? d.remasking,
      threshold,
      factor: f.factor ?? null,
      temperature,
      topP: f.top_p ?? 1,
      topK,
      cfgScale: f.cfg_scale ?? 0,
      // A fixed seed makes a request reproducible, also when a worker dies and another one starts it again.
      seed: f.seed ?? randomInt(0, 2 ** 31 - 1),
      stop,
      logprobs,
      // Absent: the engine's default (KV_CACHE), which depends on its provider.
      ...(f.cache !== undefined ? { cache: f.cache } : {}),
    },
  };
}
