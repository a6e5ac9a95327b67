// One choice of one request as a masked diffusion canvas, advanced one denoising step at a time (docs/design.md §4).
//
// Canvas = [BOS] prompt, gen_length mask tokens, infill suffix. The generated span is cut into blocks decoded left
// to right (LLaDA's semi-autoregressive remasking); a step commits some masked positions of the current block only.
// A block diffusion model (BD3-LM) fixes the blocks itself: its blocks are counted from position 0 (blockStarts).
// With `alg` the steps follow Dream's sampler (dream.ts): its timesteps decide how many positions each step commits.
// The state changes only through applyStep(head outputs), so every rule is testable without ONNX.

import type { CacheMode, FinishReason, SamplingParams } from './types.js';
import { headSlot, type HeadOutputs } from './head.js';
import { CounterRng } from './rng.js';
import { chooseToken, confidenceScore, selectCommits, transferSchedule, type CommitRule, type TokenChoice } from './sampler.js';
import { DEFAULT_EPS, dreamCommits, dreamConfidence, dreamTimesteps } from './dream.js';
import { hasPenalties, penalizedRow, type Penalties } from './penalties.js';

export interface SequenceInit {
  /** BOS (when the model has one) + prompt token ids. */
  prefix: readonly number[];
  suffix: readonly number[];
  params: SamplingParams;
  maskTokenId: number;
  eosTokenIds: readonly number[];
  /** The resolved seed of this choice (request seed + choice index, or a fresh one). */
  seed: number;
  /** Key/value cache mode when params.cache is absent (the engine's default); 'none' when not given. */
  defaultCache?: CacheMode;
  /** A block diffusion model's block size (ModelSpec.blockSize); null or absent for LLaDA. */
  blockSize?: number | null;
  /** ModelSpec.logitsShift: 1 when position i's prediction is the graph's output at i - 1 (Dream); absent = 0. */
  logitsShift?: number;
}

export interface Commit {
  /** Index within the generated span. */
  position: number;
  tokenId: number;
  /** p(token) under the step's softmax at temperature 1. */
  confidence: number;
}

export interface TokenLogprob {
  logprob: number;
  /** The head's best alternatives: [token id, logprob], at most params.logprobs of them. */
  top: [number, number][];
}

export interface SequenceEnd {
  reason: FinishReason;
  /** Generated tokens kept: everything before the first end-of-text, at most max_tokens. */
  length: number;
}

/** gen_length: max_tokens rounded up to a whole number of blocks. */
export function generatedLength(maxTokens: number, blockLength: number): number {
  return Math.ceil(maxTokens / blockLength) * blockLength;
}

/** Length of the generated span: max_tokens in whole blocks of block_length (LLaDA); max_tokens (block diffusion). */
export function spanLength(maxTokens: number, blockLength: number, blockSize: number | null): number {
  return blockSize === null ? generatedLength(maxTokens, blockLength) : maxTokens;
}

/**
 * Canvas indices where the generated span's blocks start, then its end. LLaDA: blocks of block_length from the
 * prompt's end. Block diffusion: the model's blocks are counted from position 0 as in training, so the first
 * generated block completes the prompt's last block (as SDAR and Fast-dLLM v2 continue a prompt), and the span ends
 * after exactly maxTokens: under the block-causal rule nothing after it could change what comes before, so a last
 * block cut short decodes only the positions that are returned.
 */
export function blockStarts(genStart: number, maxTokens: number, blockLength: number, blockSize: number | null): number[] {
  const out: number[] = [];
  const end = genStart + spanLength(maxTokens, blockLength, blockSize);
  if (blockSize === null) {
    for (let i = genStart; i <= end; i += blockLength) out.push(i);
    return out;
  }
  out.push(genStart);
  for (let i = (Math.floor(genStart / blockSize) + 1) * blockSize; i < end; i += blockSize) out.push(i);
  out.push(end);
  return out;
}

export class Sequence {
  readonly canvas: number[];
  readonly genStart: number;
  readonly genLength: number;
  readonly numBlocks: number;
  /** Block diffusion: the model's block size; null for LLaDA. */
  readonly blockSize: number | null;
  /** 1 when the prediction for position i is read from the graph's output at i - 1 (readFrom). */
  readonly logitsShift: number;
  readonly params: SamplingParams;
  /** params.cache, or the engine's default. */
  readonly cacheMode: CacheMode;
  block = 0;
  stepInBlock = 0;
  steps = 0;
  end: SequenceEnd | null = null;
  /**
   * The last step's choice at each position of the current block it left masked (generated-span index → token id):
   * the provisional draft of docs/design.md §5 (empty when the step finished its block).
   */
  provisional: Map<number, number> = new Map();
  /** Per generated position, the logprobs recorded when it was committed (when params.logprobs is set). */
  readonly logprobs: (TokenLogprob | null)[];
  private readonly maskTokenId: number;
  private readonly eos: Set<number>;
  private readonly rng: CounterRng;
  private readonly blockStarts: number[];
  private schedule: number[];
  /** Dream's sampler: the timesteps of a block's steps (dream.ts dreamTimesteps); null for LLaDA's. */
  private readonly timesteps: Float32Array | null;
  /** Frequency / presence penalties (penalties.ts); null when both are 0. */
  private readonly penalties: Penalties | null;
  /** With penalties: how often each token has been committed in the generated span (end-of-text not counted). */
  private readonly committedCounts = new Map<number, number>();

  constructor(init: SequenceInit) {
    const { params } = init;
    this.params = params;
    this.cacheMode = params.cache ?? init.defaultCache ?? 'none';
    this.maskTokenId = init.maskTokenId;
    this.eos = new Set(init.eosTokenIds);
    this.rng = new CounterRng(init.seed);
    this.genStart = init.prefix.length;
    this.blockSize = init.blockSize ?? null;
    this.logitsShift = init.logitsShift ?? 0;
    this.blockStarts = blockStarts(this.genStart, params.maxTokens, params.blockLength, this.blockSize);
    this.genLength = this.blockStarts[this.blockStarts.length - 1] - this.genStart;
    this.numBlocks = this.blockStarts.length - 1;
    this.canvas = [...init.prefix, ...new Array<number>(this.genLength).fill(init.maskTokenId), ...init.suffix];
    this.logprobs = new Array<TokenLogprob | null>(this.genLength).fill(null);
    this.schedule = this.blockSchedule();
    this.timesteps = params.alg === undefined ? null : dreamTimesteps(this.stepsPerBlock, params.eps ?? DEFAULT_EPS);
    const penalties = { frequency: params.frequencyPenalty ?? 0, presence: params.presencePenalty ?? 0 };
    this.penalties = hasPenalties(penalties) ? penalties : null;
  }

  /** Dream's sampler: every block runs steps / blocks steps, also those that commit nothing. */
  private get stepsPerBlock(): number {
    return Math.max(1, Math.floor(this.params.steps / this.numBlocks));
  }

  /** The canvas index whose graph output predicts canvas position `position`: itself, or the one before with shifted
   * logits (the row's first position reads its own, as Dream's `torch.cat([logits[:, :1], logits[:, :-1]])`). */
  readFrom(position: number): number {
    return Math.max(0, position - this.logitsShift);
  }

  /**
   * The linear schedule of the current block: its (all masked) positions over the block's steps. LLaDA: steps shared
   * equally by the blocks. Block diffusion, whose first block may be short: a block of n positions gets
   * ceil(n * steps / max_tokens) steps, so steps = max_tokens commits one token per step in every block.
   */
  private blockSchedule(): number[] {
    const [start, end] = this.blockRange();
    const { steps, maxTokens } = this.params;
    const blockSteps = this.blockSize === null ? Math.floor(steps / this.numBlocks) : Math.ceil(((end - start) * steps) / maxTokens);
    return transferSchedule(end - start, Math.max(1, blockSteps));
  }

  /**
   * Block diffusion: canvas positions before the model block that holds the current block are final (all committed,
   * and nothing later changes their keys/values under the block-causal rule), so their cache is exact.
   */
  cacheFrontier(): number {
    if (this.blockSize === null) throw new Error('cacheFrontier of a LLaDA sequence');
    return Math.floor(this.blockRange()[0] / this.blockSize) * this.blockSize;
  }

  /** Graph rows this sequence needs per step: two with classifier-free guidance (conditional, unconditional). */
  get rowCount(): number {
    return this.params.cfgScale > 0 ? 2 : 1;
  }

  /** Where the span's blocks start, then its end, as indices in the generated span. */
  spanBlockStarts(): number[] {
    return this.blockStarts.map((start) => start - this.genStart);
  }

  /** Canvas indices [start, end) of the current block. */
  blockRange(): [number, number] {
    return [this.blockStarts[this.block], this.blockStarts[this.block + 1]];
  }

  /** Canvas indices of the masked positions of the current block, ascending: the positions the head must score. */
  wantedPositions(): number[] {
    const [start, end] = this.blockRange();
    const out: number[] = [];
    for (let i = start; i < end; i++) if (this.canvas[i] === this.maskTokenId) out.push(i);
    return out;
  }

  /** LLaDA's unconditional input for guidance: the canvas with every given token (prompt, suffix) masked. */
  unconditionalCanvas(): number[] {
    const genEnd = this.genStart + this.genLength;
    return this.canvas.map((t, i) => (i < this.genStart || i >= genEnd ? this.maskTokenId : t));
  }

  /** Generated token ids at the moment (mask id where not committed yet). */
  generated(): number[] {
    return this.canvas.slice(this.genStart, this.genStart + this.genLength);
  }

  /** The generated tokens that can no longer change the text: before the first mask, end-of-text or max_tokens. */
  stablePrefix(): number[] {
    const out: number[] = [];
    const limit = Math.min(this.params.maxTokens, this.genLength);
    for (let i = 0; i < limit; i++) {
      const token = this.canvas[this.genStart + i];
      if (token === this.maskTokenId || (this.eos.has(token) && this.params.ignoreEos !== true)) break;
      out.push(token);
    }
    return out;
  }

  private commitRule(): CommitRule {
    if (this.params.factor !== null) return { kind: 'factor', factor: this.params.factor };
    if (this.params.threshold !== null) return { kind: 'threshold', threshold: this.params.threshold };
    return { kind: 'fixed', count: this.schedule[Math.min(this.stepInBlock, this.schedule.length - 1)] };
  }

  /**
   * One denoising step from the head's outputs for this sequence's conditional row. `positions` must be
   * wantedPositions() of this step; the head's position p scores positions[p]. Returns what was committed.
   */
  applyStep(graphHead: HeadOutputs, graphRow: number, positions: readonly number[]): Commit[] {
    if (this.end !== null) throw new Error('applyStep on a finished sequence');
    const { params } = this;
    // With penalties every rule below (choice, confidence, logprobs) reads the penalised distribution.
    const [head, row] = this.penalties === null ? [graphHead, graphRow] : [penalizedRow(graphHead, graphRow, this.committedCounts, this.penalties), 0];
    const dream = this.timesteps === null ? null : { alg: params.alg!, last: this.stepInBlock >= this.stepsPerBlock - 1 };
    // Dream's sampler lets the mask token be chosen (the position stays masked) except at a block's last step.
    const choiceParams = { ...params, maskTokenId: this.maskTokenId, allowMask: dream !== null && !dream.last };
    // min_tokens: no end-of-text before that position of the generated span.
    const noEos = { ...choiceParams, banned: this.eos };
    const minTokens = params.minTokens ?? 0;
    const choices: TokenChoice[] = positions.map((at, p) =>
      chooseToken(headSlot(head, row, p), at - this.genStart < minTokens ? noEos : choiceParams, this.rng),
    );
    const scores = positions.map((_, p) =>
      dream !== null
        ? dreamConfidence(dream.alg, headSlot(head, row, p), choices[p], choiceParams)
        : confidenceScore(params.remasking, headSlot(head, row, p), choices[p], params.remasking === 'random' ? this.rng.next() : 0),
    );
    const picked =
      dream === null
        ? selectCommits(scores, this.commitRule())
        : dreamCommits(
            scores,
            { ...dream, algTemp: params.algTemp ?? 0, t: this.timesteps![this.stepInBlock], s: this.timesteps![this.stepInBlock + 1] },
            this.rng,
          );
    const commits: Commit[] = [];
    for (const p of picked) {
      const choice = choices[p];
      if (choice.tokenId === this.maskTokenId) continue; // Dream: the mask token was chosen; the position stays masked
      this.canvas[positions[p]] = choice.tokenId;
      const position = positions[p] - this.genStart;
      commits.push({ position, tokenId: choice.tokenId, confidence: Math.exp(choice.logprob) });
      if (params.logprobs !== null) this.logprobs[position] = this.recordLogprobs(head, row, p, choice);
    }
    if (this.penalties !== null) {
      for (const c of commits) if (!this.eos.has(c.tokenId)) this.committedCounts.set(c.tokenId, (this.committedCounts.get(c.tokenId) ?? 0) + 1);
    }
    commits.sort((a, b) => a.position - b.position);
    this.provisional = new Map();
    positions.forEach((at, p) => {
      if (this.canvas[at] === this.maskTokenId) this.provisional.set(at - this.genStart, choices[p].tokenId);
    });
    this.steps++;
    this.stepInBlock++;
    if (this.wantedPositions().length === 0) {
      this.block++;
      this.stepInBlock = 0;
      if (this.block < this.numBlocks) this.schedule = this.blockSchedule();
    }
    this.end = this.checkEnd();
    return commits;
  }

  private recordLogprobs(head: HeadOutputs, row: number, p: number, choice: TokenChoice): TokenLogprob {
    const slot = headSlot(head, row, p);
    const lse = head.logsumexp[slot.index];
    const top: [number, number][] = [];
    for (let i = 0; i < Math.min(this.params.logprobs ?? 0, head.k); i++) {
      top.push([head.topkIds[slot.offset + i], head.topkLogits[slot.offset + i] - lse]);
    }
    return { logprob: choice.logprob, top };
  }

  /**
   * Ends (docs/design.md §4): an end-of-text token committed with every position before it committed ends the sequence
   * (`stop`; what follows counts as end-of-text); the first max_tokens positions all committed without one ends it
   * (`length`). Both equal running every block and truncating, since committed tokens never change.
   */
  private checkEnd(): SequenceEnd | null {
    const limit = Math.min(this.params.maxTokens, this.genLength);
    for (let i = 0; i < limit; i++) {
      const token = this.canvas[this.genStart + i];
      if (token === this.maskTokenId) return null;
      if (this.eos.has(token) && this.params.ignoreEos !== true) return { reason: 'stop', length: i };
    }
    return { reason: 'length', length: limit };
  }
}
