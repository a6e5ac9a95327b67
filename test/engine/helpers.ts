// Test doubles for the engine: a synthetic graph (batch-invariant, deterministic), a one-character-per-token
// tokenizer, a model spec and sampling parameters.

import type { GraphFeeds } from '../../src/engine/batch.js';
import type { GraphRun, GraphRunner } from '../../src/engine/graph_runner.js';
import type { HeadOutputs } from '../../src/engine/head.js';
import type { ModelSpec, TextTokenizer } from '../../src/engine/model_folder.js';
import type { SamplingParams } from '../../src/engine/types.js';

export const SPEC: ModelSpec = {
  format: 'dllm-onnx/1',
  architecture: 'llada',
  logitsShift: 0,
  blockSize: null,
  name: 'synthetic',
  vocabSize: 64,
  maskTokenId: 2,
  eosTokenIds: [1, 5],
  padTokenId: 0,
  bosTokenId: 6,
  maxSequenceLength: 128,
  topk: 4,
  chatTemplate: null,
  generationDefaults: { maxTokens: 16, steps: 16, blockLength: 8, remasking: 'low_confidence', threshold: null, temperature: 0, alg: null, algTemp: 0, eps: 1e-3, frequencyPenalty: 0, presencePenalty: 0 },
  onnx: { fp32: 'model.onnx', fp16: null },
  cached: null,
  device: null,
};

/** A valid dllm.json (format 1, a LLaDA folder) as the exporter writes it, in snake_case: tests of parseModelSpec
 * change one field of it at a time. */
export const DLLM_JSON = {
  format: 'dllm-onnx/1',
  architecture: 'llada',
  name: 'x',
  vocab_size: 4096,
  mask_token_id: 2,
  eos_token_ids: [1, 5],
  pad_token_id: 0,
  bos_token_id: 6,
  max_sequence_length: 256,
  topk: 64,
  chat_template: null,
  generation_defaults: { max_tokens: 64, steps: 64, block_length: 32, remasking: 'low_confidence', threshold: null, temperature: 0 },
  onnx: { fp32: 'model.onnx', fp16: null },
};

/** Token id t >= 10 is the letter 'a' + (t - 10) % 26; specials render as <t>. */
export const TOKENIZER: TextTokenizer = {
  encode: (text) => [...text].map((c) => 10 + c.charCodeAt(0) - 97),
  decode: (ids) => ids.map((t) => (t >= 10 ? String.fromCharCode(97 + ((t - 10) % 26)) : `<${t}>`)).join(''),
};

export function params(overrides: Partial<SamplingParams> = {}): SamplingParams {
  return {
    maxTokens: 16,
    steps: 16,
    blockLength: 8,
    remasking: 'low_confidence',
    threshold: null,
    factor: null,
    temperature: 0,
    topP: 1,
    topK: 0,
    cfgScale: 0,
    seed: null,
    stop: [],
    logprobs: null,
    ...overrides,
  };
}

/** Builds a head from per-slot candidate lists [id, logit][] (descending), with logsumexp/entropy derived. */
export function headFrom(slots: [number, number][][][], extraMass = 0): HeadOutputs {
  const rows = slots.length;
  const positions = slots[0].length;
  const k = slots[0][0].length;
  const head: HeadOutputs = {
    rows,
    positions,
    k,
    topkLogits: new Float32Array(rows * positions * k),
    topkIds: new Int32Array(rows * positions * k),
    logsumexp: new Float64Array(rows * positions),
    entropy: new Float64Array(rows * positions),
  };
  slots.forEach((row, r) =>
    row.forEach((cands, p) => {
      const index = r * positions + p;
      let z = extraMass;
      cands.forEach(([id, logit], i) => {
        head.topkIds[index * k + i] = id;
        head.topkLogits[index * k + i] = logit;
        z += Math.exp(logit);
      });
      const lse = Math.log(z);
      head.logsumexp[index] = lse;
      head.entropy[index] = -cands.reduce((s, [, l]) => s + Math.exp(l - lse) * (l - lse), 0);
    }),
  );
  return head;
}

export interface SyntheticOptions {
  /** Canvas positions (counted from the row's first real token) from this one on predict end-of-text (id 1). */
  eosAt?: number;
  /** Reject every run (to test failures). */
  fail?: boolean;
}

/**
 * A fake mask predictor: the prediction at a position depends only on the row's real tokens before it and on the
 * position counted from the row's first real token, so left padding and batch composition change nothing.
 * Predictions favour leftmost positions (confidence falls with the position).
 */
export class SyntheticRunner implements GraphRunner {
  readonly provider = 'synthetic';
  readonly ok = true;
  runs = 0;
  rowsSeen: number[] = [];
  lastFeeds: GraphFeeds | null = null;
  constructor(readonly options: SyntheticOptions = {}, private readonly k = SPEC.topk) {}

  async run(f: GraphFeeds): Promise<GraphRun> {
    this.runs++;
    this.rowsSeen.push(f.rows);
    this.lastFeeds = f;
    await new Promise((resolve) => setImmediate(resolve));
    if (this.options.fail) throw new Error('synthetic failure');
    const slots: [number, number][][][] = [];
    for (let r = 0; r < f.rows; r++) {
      let pad = 0;
      while (f.attentionMask[r * f.length + pad] === 0n) pad++;
      const row: [number, number][][] = [];
      for (let p = 0; p < f.positionsPerRow; p++) {
        const q = Number(f.positions[r * f.positionsPerRow + p]) - pad;
        let prev = 0;
        for (let i = pad; i < pad + q; i++) prev = (prev * 31 + Number(f.inputIds[r * f.length + i])) % 1000003;
        const eos = this.options.eosAt !== undefined && q >= this.options.eosAt;
        const top = eos ? 1 : 10 + ((q * 7 + (prev % 5)) % 26);
        const base = 4 - q * 0.05;
        const cands: [number, number][] = [[top, base]];
        for (let i = 1; i < this.k; i++) cands.push([10 + ((top + i * 3) % 26), base - 1 - i]);
        row.push(cands);
      }
      slots.push(row);
    }
    return { head: headFrom(slots, 0.5), runMs: 0 };
  }

  release(): void {}

  async close(): Promise<void> {}
}
