// Per-position token choice and per-step commit selection of a masked diffusion sampler (docs/design.md §4).
//
// Follows LLaDA's generate() (Nie et al., "Large Language Diffusion Models", 2025; GitHub ML-GSAI/LLaDA generate.py):
// Gumbel-max sampling in float64, the linear commit schedule, low_confidence / random remasking; Dream's
// (HKUNLP/Dream) margin and entropy confidences; Fast-dLLM's (Wu et al., 2025; NVlabs/Fast-dLLM) threshold and factor
// parallel decoding. Every function here is pure (the RNG is passed in), mirrored line for line by
// models/dllm/reference/sampler.py.

import type { RemaskingRule } from './types.js';
import type { HeadSlot } from './head.js';
import type { CounterRng } from './rng.js';

export interface TokenChoice {
  tokenId: number;
  /** Index of the token among the head's K candidates. */
  rank: number;
  /** log p(token) under the full softmax at temperature 1: logit - logsumexp. */
  logprob: number;
}

export interface ChoiceParams {
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** Never chosen (committing it would leave the position masked), unless allowMask. */
  maskTokenId: number;
  /** Dream's sampler before a block's last step: the mask token competes like any token, as in the official code. */
  allowMask?: boolean;
  /** Never chosen either: end-of-text before min_tokens (vLLM's min_tokens, docs/design.md §4). */
  banned?: ReadonlySet<number>;
}

/**
 * How many of the K candidates may be sampled: top_k first, then the smallest prefix whose tempered probability
 * (renormalised over the candidates left) reaches top_p; at least one.
 */
export function candidateCount(slot: HeadSlot, params: ChoiceParams): number {
  const { topkLogits, k } = slot.outputs;
  let count = params.topK > 0 ? Math.min(params.topK, k) : k;
  if (params.topP < 1 && params.temperature > 0) {
    const base = topkLogits[slot.offset];
    const weights = new Float64Array(count);
    let total = 0;
    for (let i = 0; i < count; i++) {
      weights[i] = Math.exp((topkLogits[slot.offset + i] - base) / params.temperature);
      total += weights[i];
    }
    let cumulative = 0;
    for (let i = 0; i < count; i++) {
      cumulative += weights[i] / total;
      if (cumulative >= params.topP) {
        count = i + 1;
        break;
      }
    }
  }
  return count;
}

/**
 * Chooses the token at one masked position. Greedy at temperature 0 (the head's first candidate). Otherwise
 * Gumbel-max in float64 as LLaDA's add_gumbel_noise: argmax exp(l) / (-log u)^T, computed in log space as
 * argmax l - T·log(-log u), which draws from softmax(l / T) restricted to the allowed candidates. Exactly K
 * uniforms are drawn per position whatever the candidate count, so the RNG stream does not depend on top_p.
 * The mask token (unless allowMask) and `banned` tokens are never chosen (the next best candidate is).
 */
export function chooseToken(slot: HeadSlot, params: ChoiceParams, rng: CounterRng | null): TokenChoice {
  const { topkLogits, topkIds, logsumexp, k } = slot.outputs;
  const excluded = (id: number) => (id === params.maskTokenId && params.allowMask !== true) || params.banned?.has(id) === true;
  let rank = 0;
  while (rank < k - 1 && excluded(topkIds[slot.offset + rank])) rank++;
  if (params.temperature > 0) {
    if (rng === null) throw new Error('temperature sampling needs an RNG');
    const count = candidateCount(slot, params);
    let best = -Infinity;
    for (let i = 0; i < k; i++) {
      const u = rng.next();
      if (i >= count || excluded(topkIds[slot.offset + i])) continue;
      const score = topkLogits[slot.offset + i] - params.temperature * Math.log(-Math.log(u));
      if (score > best) {
        best = score;
        rank = i;
      }
    }
  }
  return {
    tokenId: topkIds[slot.offset + rank],
    rank,
    logprob: topkLogits[slot.offset + rank] - logsumexp[slot.index],
  };
}

/**
 * The score by which masked positions compete to be committed (higher first):
 * low_confidence: p(chosen token) (LLaDA); margin: p(top-1) - p(top-2) (Dream); entropy: -H (Dream);
 * random: a fresh uniform (LLaDA), passed in as `uniform`.
 */
export function confidenceScore(rule: RemaskingRule, slot: HeadSlot, choice: TokenChoice, uniform: number): number {
  const { topkLogits, logsumexp, entropy, k } = slot.outputs;
  switch (rule) {
    case 'low_confidence':
      return Math.exp(choice.logprob);
    case 'margin': {
      const lse = logsumexp[slot.index];
      const second = k > 1 ? Math.exp(topkLogits[slot.offset + 1] - lse) : 0;
      return Math.exp(topkLogits[slot.offset] - lse) - second;
    }
    case 'entropy':
      return -entropy[slot.index];
    case 'random':
      return uniform;
  }
}

/**
 * LLaDA's get_num_transfer_tokens: `masked` tokens over `steps` steps, equal shares, the remainder to the first
 * steps. Steps beyond `masked` would commit nothing and are dropped (they change no greedy result).
 */
export function transferSchedule(masked: number, steps: number): number[] {
  const effective = Math.max(1, Math.min(steps, masked));
  const base = Math.floor(masked / effective);
  const remainder = masked % effective;
  return Array.from({ length: effective }, (_, i) => base + (i < remainder ? 1 : 0));
}

/** How a step decides how many positions to commit. */
export type CommitRule =
  | { kind: 'fixed'; count: number }
  | { kind: 'threshold'; threshold: number }
  | { kind: 'factor'; factor: number };

/** Candidate indices ordered by score, highest first; ties go to the lower index (the leftmost position). */
export function rankByScore(scores: readonly number[]): number[] {
  return scores
    .map((_, i) => i)
    .sort((a, b) => (scores[b] - scores[a]) || (a - b));
}

/**
 * Which of the masked positions (given by their scores) to commit this step, as indices into `scores`.
 * fixed: the `count` best (LLaDA). threshold: the best one and every other scoring >= τ (Fast-dLLM
 * get_transfer_index). factor: the longest run of best ones where the i-th best (0-based) scores
 * >= 1 - f / (i + 2), at least one (Fast-dLLM get_transfer_index_dynamic, without its off-by-one at the end).
 */
export function selectCommits(scores: readonly number[], rule: CommitRule): number[] {
  const order = rankByScore(scores);
  if (order.length === 0) return [];
  switch (rule.kind) {
    case 'fixed':
      return order.slice(0, Math.min(rule.count, order.length));
    case 'threshold':
      return [order[0], ...order.slice(1).filter((i) => scores[i] >= rule.threshold)];
    case 'factor': {
      let n = 1;
      while (n < order.length && scores[order[n]] >= 1 - rule.factor / (n + 2)) n++;
      return order.slice(0, n);
    }
  }
}
