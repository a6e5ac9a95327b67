// Dream's sampler rules (Ye et al. 2025, "Dream 7B"; HKUNLP Dream, generation_utils.py `_sample` and `sample_tokens`):
// the timesteps, how many masked positions a step commits, the confidences of its four algorithms, and which positions
// a step commits. Pure (the RNG is passed in); models/dllm/reference/dream.py is the PyTorch reference.
//
// Where a server must differ from the official code, this does (docs/design.md §4): the number to commit is counted
// per sequence (the official code averages the mask count over its batch), and the mask token is never the choice at a
// block's last step (the official code would leave that position masked in its output).

import type { HeadSlot } from './head.js';
import type { CounterRng } from './rng.js';
import { candidateCount, rankByScore, type ChoiceParams, type TokenChoice } from './sampler.js';
import type { DreamAlg } from './types.js';

const f32 = Math.fround;

/** Dream's default eps (generation_utils.py DreamGenerationConfig): the timesteps run from 1 down to it. */
export const DEFAULT_EPS = 1e-3;

/**
 * torch.linspace(1, eps, steps + 1) in float32 as PyTorch's CUDA kernel computes it, where Dream runs: the step
 * (end - start) / steps in float32, the first half counted up from start and the second half down from end, each value
 * start + step·i rounded once (a fused multiply-add; the products are exact in float64). PyTorch's vectorised CPU
 * kernel rounds some values differently in the last bit, which changes a step's count in about 1 schedule in 2,000.
 */
export function dreamTimesteps(steps: number, eps: number): Float32Array {
  const start = 1;
  const end = f32(eps);
  const count = steps + 1;
  const step = f32(f32(end - start) / steps);
  const halfway = Math.floor(count / 2);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = i < halfway ? start + step * i : end - step * (steps - i);
  return out;
}

/** 1 - s / t in float32: the share of the masked positions a step from time t to s commits. */
export function transferShare(t: number, s: number): number {
  return f32(1 - f32(f32(s) / f32(t)));
}

/** int(masked * (1 - s / t)) in float32 arithmetic (truncated), as `_sample` computes it; every remaining position at
 * the last step. */
export function dreamCount(masked: number, t: number, s: number, last: boolean): number {
  return last ? masked : Math.trunc(f32(f32(masked) * transferShare(t, s)));
}

/**
 * The candidates `sample_tokens` keeps and their probabilities: softmax(l / T) (T = temperature, 1 when greedy) over
 * the head's K best, cut by top_k and top_p. Exact when they cut below K; otherwise the distribution is renormalised
 * over the K (the full vocabulary's tail is not in the head's outputs).
 */
function candidateProbabilities(slot: HeadSlot, params: ChoiceParams): Float64Array {
  const scale = params.temperature > 0 ? params.temperature : 1;
  const count = candidateCount(slot, { ...params, temperature: scale });
  const { topkLogits } = slot.outputs;
  const probs = new Float64Array(count);
  let total = 0;
  for (let i = 0; i < count; i++) {
    probs[i] = Math.exp((topkLogits[slot.offset + i] - topkLogits[slot.offset]) / scale);
    total += probs[i];
  }
  for (let i = 0; i < count; i++) probs[i] /= total;
  return probs;
}

/**
 * The confidence of a masked position under `alg` (higher is committed first): maskgit_plus p(chosen token),
 * topk_margin p(top-1) - p(top-2), entropy sum p log(p + 1e-10) (minus the entropy); origin has none (0). Greedy
 * without top_k / top_p these are of the full-vocabulary softmax, from the head's logsumexp and entropy; otherwise of
 * the tempered, cut distribution over the candidates (candidateProbabilities).
 */
export function dreamConfidence(alg: DreamAlg, slot: HeadSlot, choice: TokenChoice, params: ChoiceParams): number {
  if (alg === 'origin') return 0;
  const { topkLogits, logsumexp, entropy, k } = slot.outputs;
  if (params.temperature === 0 && params.topK === 0 && params.topP >= 1) {
    const lse = logsumexp[slot.index];
    if (alg === 'maskgit_plus') return Math.exp(choice.logprob);
    if (alg === 'topk_margin') return Math.exp(topkLogits[slot.offset] - lse) - (k > 1 ? Math.exp(topkLogits[slot.offset + 1] - lse) : 0);
    return -entropy[slot.index];
  }
  const probs = candidateProbabilities(slot, params);
  if (alg === 'maskgit_plus') return choice.rank < probs.length ? probs[choice.rank] : 0;
  if (alg === 'topk_margin') return probs[0] - (probs.length > 1 ? probs[1] : 0);
  let negativeEntropy = 0;
  for (const p of probs) negativeEntropy += p * Math.log(p + 1e-10);
  return negativeEntropy;
}

export interface DreamStep {
  alg: DreamAlg;
  algTemp: number;
  /** This step's timesteps t > s. */
  t: number;
  s: number;
  /** The block's last step: every masked position is committed. */
  last: boolean;
}

/**
 * Which masked positions (given by their confidences, in canvas order) a step commits, as indices into `scores`.
 * origin: each with probability 1 - s/t (one uniform per position). Otherwise dreamCount of them: the most confident
 * (ties to the leftmost) with alg_temp 0, else drawn without replacement from softmax(confidence / alg_temp) by the
 * Gumbel-top-k trick (one uniform per position), which is torch.multinomial's distribution without replacement.
 */
export function dreamCommits(scores: readonly number[], step: DreamStep, rng: CounterRng | null): number[] {
  const draw = () => {
    if (rng === null) throw new Error(`alg ${step.alg} with alg_temp ${step.algTemp} needs an RNG`);
    return rng.next();
  };
  if (step.alg === 'origin') {
    const share = step.last ? 1 : transferShare(step.t, step.s);
    const out: number[] = [];
    for (let i = 0; i < scores.length; i++) if (draw() < share) out.push(i);
    return out;
  }
  const count = dreamCount(scores.length, step.t, step.s, step.last);
  if (count === 0) return [];
  const keys = step.algTemp > 0 ? scores.map((c) => c / step.algTemp - Math.log(-Math.log(draw()))) : scores;
  return rankByScore(keys).slice(0, count);
}
