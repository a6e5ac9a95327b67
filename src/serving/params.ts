// OpenAI request fields → SamplingParams: fills what the request leaves out from the model folder's defaults, fitted
// to the room the prompt leaves. Whether the result is valid is engine/validation.ts's rule, run on the whole request
// before it is queued (serving/prepare.ts); the one thing refused here is a request that names both samplers, which
// only this layer can see.

import { randomInt } from 'node:crypto';
import type { CacheMode, DreamAlg, RemaskingRule, SamplingParams } from '../engine/types.js';
import type { GenerationDefaults } from '../engine/model_folder.js';
import { penaltyParams } from '../engine/penalties.js';
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
  ignore_eos?: boolean;
  min_tokens?: number;
  alg?: DreamAlg;
  alg_temp?: number;
  eps?: number;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
}

/**
 * Which sampler a request uses: Dream's with `alg` (the request's, or the folder's default), LLaDA's when the request
 * names one of LLaDA's commit rules (remasking, threshold, factor) or the folder has no default alg. Naming both is
 * refused: neither reading would be what the client meant.
 */
export function dreamAlgOf(f: CommonFields, d: GenerationDefaults): DreamAlg | undefined {
  const llada = (['remasking', 'threshold', 'factor'] as const).find((key) => f[key] != null);
  if (f.alg !== undefined && llada !== undefined) {
    throw ApiError.invalid(`alg chooses Dream's sampler and ${llada} belongs to LLaDA's (remasking, threshold, factor); send one of them`, 'alg');
  }
  const alg = llada !== undefined ? undefined : (f.alg ?? d.alg ?? undefined);
  const dreamOnly = (['alg_temp', 'eps'] as const).find((key) => f[key] != null);
  if (alg === undefined && dreamOnly !== undefined) {
    throw ApiError.invalid(`${dreamOnly} belongs to Dream's sampler, which this request does not use: send alg with it`, dreamOnly);
  }
  return alg;
}

export interface ResolvedParams {
  params: SamplingParams;
  n: number;
}

/**
 * Sampling parameters for a canvas prefix (BOS and prompt) of `prefixLen` tokens and a suffix of `suffixLen` tokens.
 * A default max_tokens that does not fit shrinks to whole blocks that do; what the client set is kept as it is.
 */
export function resolveParams(model: ServingModel, f: CommonFields, prefixLen: number, suffixLen: number, logprobs: number | null): ResolvedParams {
  const d = model.defaults;
  const room = model.maxSequenceLength - prefixLen - suffixLen;
  const alg = dreamAlgOf(f, d);
  let maxTokens: number;
  let blockLength: number;
  if (model.blockSize !== null) {
    // Block diffusion: the model's blocks, counted from position 0; the engine checks the span against the context.
    // A prompt that leaves no room keeps a positive default, so the context check names the prompt.
    maxTokens = f.max_tokens ?? Math.min(d.maxTokens, Math.max(1, room));
    blockLength = f.block_length ?? model.blockSize;
  } else if (f.max_tokens != null) {
    maxTokens = f.max_tokens;
    // No default block length (dream folders): the whole span is one block, as Dream's diffusion_generate decodes it.
    blockLength = f.block_length ?? Math.min(d.blockLength ?? maxTokens, maxTokens);
  } else {
    blockLength = f.block_length ?? Math.min(d.blockLength ?? d.maxTokens, d.maxTokens);
    maxTokens = d.maxTokens;
    if (room >= 1 && Math.ceil(maxTokens / blockLength) * blockLength > room) {
      // The default does not fit: shrink it to what fits (whole blocks), or to one block of the room left.
      maxTokens = Math.floor(room / blockLength) * blockLength;
      if (maxTokens === 0 && f.block_length == null) blockLength = maxTokens = room;
      if (maxTokens === 0) maxTokens = blockLength; // the client's block_length cannot fit: validation says so
    }
  }
  const numBlocks = Math.ceil(maxTokens / blockLength);
  const genLength = numBlocks * blockLength;
  // The folder's default steps per generated position, applied to this length: in whole blocks for LLaDA; a block
  // diffusion model shares steps out by block size itself (engine/sequence.ts).
  const perToken = d.steps / Math.max(1, d.maxTokens);
  const steps =
    f.steps ??
    (model.blockSize !== null
      ? Math.max(1, Math.round(perToken * maxTokens))
      : Math.max(numBlocks, Math.floor(Math.max(1, Math.round(perToken * genLength)) / numBlocks) * numBlocks));
  return {
    n: f.n ?? 1,
    params: {
      maxTokens,
      steps,
      blockLength,
      remasking: f.remasking ?? d.remasking,
      // The folder's default threshold is LLaDA's sampler's; Dream's sampler has its own schedule.
      threshold: f.threshold === undefined && alg === undefined ? d.threshold : (f.threshold ?? null),
      factor: f.factor ?? null,
      temperature: f.temperature ?? d.temperature,
      topP: f.top_p ?? 1,
      topK: f.top_k ?? 0,
      cfgScale: f.cfg_scale ?? 0,
      // A fixed seed makes a request reproducible, also when a worker dies and another one starts it again.
      seed: f.seed ?? randomInt(0, 2 ** 31 - 1),
      stop: f.stop == null ? [] : typeof f.stop === 'string' ? [f.stop] : f.stop,
      logprobs,
      // Absent: the engine's default (KV_CACHE), which depends on its provider.
      ...(f.cache !== undefined ? { cache: f.cache } : {}),
      ...(f.ignore_eos === true ? { ignoreEos: true } : {}),
      ...(f.min_tokens ? { minTokens: f.min_tokens } : {}),
      ...(alg === undefined ? {} : { alg, algTemp: f.alg_temp ?? d.algTemp, eps: f.eps ?? d.eps }),
      // The request's penalties, else the folder's.
      ...penaltyParams({ frequency: f.frequency_penalty ?? d.frequencyPenalty, presence: f.presence_penalty ?? d.presencePenalty }),
    },
  };
}
