// OpenAI's frequency and presence penalties (API reference, "frequency_penalty" / "presence_penalty"; the formula of
// OpenAI's "Parameter details" guide, as vLLM applies it to output tokens), adapted to a diffusion canvas
// (docs/design.md §4): a candidate token j at a masked position scores
//
//     l_j - c_j · frequency_penalty - [c_j > 0] · presence_penalty
//
// where c_j counts j among the tokens this choice has committed in its generated span before the step (the prompt
// does not count; end-of-text tokens do not either, since what follows the first one is not text). Every position of
// a step sees the same counts: the step's positions are decided in parallel.
//
// The head returns only the K best logits of each position (head.ts), so the penalties apply to those K: the
// penalised candidates are re-sorted, and the full softmax's normaliser and entropy are corrected for them exactly.
// A penalised token outside the K keeps its unpenalised share of the normaliser; a negative penalty cannot lift a
// token outside the K into them.

import type { HeadOutputs } from './head.js';
import type { SamplingParams } from './types.js';

/** Largest |frequency_penalty| and |presence_penalty|: OpenAI's range. */
export const MAX_PENALTY = 2;

export interface Penalties {
  frequency: number;
  presence: number;
}

/** Committed token counts of one choice: token id → times committed in the generated span. */
export type TokenCounts = ReadonlyMap<number, number>;

export function hasPenalties(p: Penalties): boolean {
  return p.frequency !== 0 || p.presence !== 0;
}

/** The SamplingParams fields of these penalties: a penalty of 0 is left out (absent = 0). */
export function penaltyParams(p: Penalties): Pick<SamplingParams, 'frequencyPenalty' | 'presencePenalty'> {
  return { ...(p.frequency !== 0 ? { frequencyPenalty: p.frequency } : {}), ...(p.presence !== 0 ? { presencePenalty: p.presence } : {}) };
}

/** How much a candidate's logit drops (negative: rises) for `count` earlier commits of it. */
export function penaltyOf(count: number, p: Penalties): number {
  return count === 0 ? 0 : count * p.frequency + p.presence;
}

/**
 * One row of the head's outputs with the penalties applied: a one-row HeadOutputs (row 0) with the same positions and
 * K, candidates re-sorted by penalised logit (ties keep the head's order), logsumexp and entropy of the penalised
 * full softmax. With q_j = exp(l_j - lse) and d_j the penalty of token j (0 for the others), the normaliser becomes
 * R = Σ_j q_j·exp(-d_j) of the old one and q'_j = q_j·exp(-d_j) / R, so lse' = lse + log R and
 * H' = -Σ_j q'_j log q'_j = (H - E + E') / R + log R, where E = -Σ q_j log q_j and E' = -Σ q_j·exp(-d_j)·(log q_j - d_j)
 * run over the penalised candidates only.
 */
export function penalizedRow(head: HeadOutputs, row: number, counts: TokenCounts, p: Penalties): HeadOutputs {
  const { positions, k } = head;
  const topkLogits = new Float32Array(positions * k);
  const topkIds = new Int32Array(positions * k);
  const logsumexp = new Float64Array(positions);
  const entropy = new Float64Array(positions);
  const logits = new Float64Array(k);
  const order = Array.from({ length: k }, (_, i) => i);
  for (let pos = 0; pos < positions; pos++) {
    const index = row * positions + pos;
    const offset = index * k;
    const lse = head.logsumexp[index];
    // Sums over the penalised candidates: their probability, their share of the entropy (-p log p), and the same two
    // after the penalty (before renormalising).
    let mass = 0;
    let entropyShare = 0;
    let newMass = 0;
    let newEntropyShare = 0;
    for (let i = 0; i < k; i++) {
      const d = penaltyOf(counts.get(head.topkIds[offset + i]) ?? 0, p);
      logits[i] = head.topkLogits[offset + i] - d;
      if (d === 0) continue;
      const logProb = head.topkLogits[offset + i] - lse;
      const prob = Math.exp(logProb);
      const newProb = Math.exp(logProb - d);
      mass += prob;
      entropyShare -= prob * logProb;
      newMass += newProb;
      newEntropyShare -= newProb * (logProb - d);
    }
    // R: the untouched tokens keep 1 - mass. It can only underflow to 0 when the penalised tokens held all the mass
    // and were pushed below float64's range; the smallest positive R keeps the logarithms finite.
    const ratio = Math.max(1 - mass + newMass, Number.MIN_VALUE);
    const logRatio = Math.log(ratio);
    logsumexp[pos] = lse + logRatio;
    entropy[pos] = (head.entropy[index] - entropyShare + newEntropyShare) / ratio + logRatio;
    order.sort((a, b) => (logits[b] - logits[a]) || (a - b));
    for (let i = 0; i < k; i++) {
      topkLogits[pos * k + i] = logits[order[i]];
      topkIds[pos * k + i] = head.topkIds[offset + order[i]];
    }
    for (let i = 0; i < k; i++) order[i] = i;
  }
  return { rows: 1, positions, k, topkLogits, topkIds, logsumexp, entropy };
}
