// A model folder (docs/design.md §2): dllm.json validated field by field, the Hugging Face tokenizer, the chat template.
// Loads no ONNX Runtime, so an API process that only tokenizes and validates (Redis mode) can use it alone.

import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { maxBytesPerToken } from './token_bound.js';
import { DREAM_ALGS, type DreamAlg, type RemaskingRule, type SamplingParams } from './types.js';
import { DEFAULT_EPS } from './dream.js';
import { MAX_PENALTY, penaltyParams } from './penalties.js';

/** Format 1: model.onnx alone. Format 2 adds the cached graph (`cached`) and one shared weights file (docs/models.md). */
export const MODEL_FORMAT = 'dllm-onnx/2';
export const MODEL_FORMATS: readonly string[] = ['dllm-onnx/1', 'dllm-onnx/2'];
export const REMASKING_RULES: readonly RemaskingRule[] = ['low_confidence', 'random', 'margin', 'entropy'];
export const ARCHITECTURES = ['llada', 'block_diffusion', 'dream'] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

export interface GenerationDefaults {
  maxTokens: number;
  steps: number;
  /** null: the whole generated span is one block (Dream's sampler; only in dream folders). */
  blockLength: number | null;
  remasking: RemaskingRule;
  threshold: number | null;
  temperature: number;
  /** Dream's sampler by default, with this confidence; null: LLaDA's. */
  alg: DreamAlg | null;
  algTemp: number;
  eps: number;
  /** OpenAI's frequency and presence penalties (penalties.ts); 0 = off. */
  frequencyPenalty: number;
  presencePenalty: number;
}


/** dllm.json, validated, in camelCase. */
export interface ModelSpec {
  format: string;
  /** llada: bidirectional attention. block_diffusion (BD3-LM): bidirectional inside blocks of blockSize, causal across.
   * dream: bidirectional with shifted logits (Dream 7B; models adapted from autoregressive ones). */
  architecture: Architecture;
  /** 1 when the prediction for canvas position i is the graph's output at i - 1 (dream; a row's first position reads
   * its own); 0 otherwise. */
  logitsShift: 0 | 1;
  /** block_diffusion: the block size it was trained with (blocks counted from position 0); null for llada. */
  blockSize: number | null;
  name: string;
  vocabSize: number;
  maskTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
  bosTokenId: number | null;
  maxSequenceLength: number;
  /** K of the graph's sampling head. */
  topk: number;
  chatTemplate: string | null;
  generationDefaults: GenerationDefaults;
  onnx: { fp32: string; fp16: string | null };
  /** Format 2: the cached graph per precision and its key/value geometry; null in format 1. */
  cached: CachedGraphSpec | null;
  /** Format 2, optional: the device graph per precision (the cached graph whose cache stays on a GPU, docs/models.md);
   * null when the folder has none (exported before it existed: `python3 -m dllm.convert --from-folder` adds it). */
  device: { fp32: string; fp16: string | null } | null;
  /** Weight-only quantization of the graphs' linear layers (com.microsoft MatMulNBits; docs/models.md); null: float
   * weights throughout (parseModelSpec always sets it; optional for specs built by hand). */
  quantization?: QuantizationSpec | null;
}

/** dllm.json `quantization`: which weights are quantized and how. */
export interface QuantizationSpec {
  /** Bits per weight code: 4 or 8. */
  bits: 4 | 8;
  /** Weights per scale, along the input features. */
  blockSize: number;
  /** MatMulNBits accuracy_level: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute. */
  accuracyLevel: number;
  /** Which layers: "linear" (every transformer block's projections; embeddings and the output head stay float). */
  layers: 'linear';
}

/** What MatMulNBits and onnxruntime's kernels take (models/dllm/quantize.py refuses the rest at conversion). */
export const QUANTIZATION_BITS: readonly number[] = [4, 8];
export const QUANTIZATION_BLOCK_SIZES: readonly number[] = [16, 32, 64, 128, 256];

/** The cached graph of a format-2 folder: past_kv / present_kv are [layers, 2, N, kvHeads, length, headDim]. */
export interface CachedGraphSpec {
  fp32: string;
  fp16: string | null;
  layers: number;
  kvHeads: number;
  headDim: number;
}

export class ModelFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelFolderError';
  }
}

export interface TextTokenizer {
  /** Token ids of `text`, without special tokens added (no BOS: the engine adds it). */
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
}

export interface ModelFolder {
  dir: string;
  spec: ModelSpec;
  tokenizer: TextTokenizer;
  /** The most bytes of text one token stands for, when tokenizer.json allows a sound bound (token_bound.ts). */
  maxBytesPerToken: number | null;
  /** Absolute path of the ONNX file of a precision; throws when the folder has none. */
  onnxPath(precision: 'fp32' | 'fp16'): string;
  /** Absolute path of the cached graph of a precision (format 2); null when the folder has none. */
  cachedPath(precision: 'fp32' | 'fp16'): string | null;
  /** Absolute path of the device graph of a precision; null when the folder has none. */
  devicePath(precision: 'fp32' | 'fp16'): string | null;
}

type Json = Record<string, unknown>;

/** Field readers that name the file and the field in every error. */
class Fields {
  constructor(private readonly file: string, private readonly obj: Json, private readonly prefix = '') {}

  private fail(key: string, expected: string): never {
    const value = JSON.stringify(this.obj[key]);
    throw new ModelFolderError(`${this.file}: field "${this.prefix}${key}" must be ${expected}, got ${value ?? 'nothing'}`);
  }

  int(key: string, min = 0): number {
    const v = this.obj[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(key, `an integer >= ${min}`);
    return v;
  }

  intOrNull(key: string, min = 0): number | null {
    return this.obj[key] === null ? null : this.int(key, min);
  }

  num(key: string, min: number, max = Infinity): number {
    const v = this.obj[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) this.fail(key, `a number in [${min}, ${max}]`);
    return v;
  }

  numOrNull(key: string, min: number, max = Infinity): number | null {
    return this.obj[key] === null || this.obj[key] === undefined ? null : this.num(key, min, max);
  }

  str(key: string): string {
    const v = this.obj[key];
    if (typeof v !== 'string' || v.length === 0) this.fail(key, 'a non-empty string');
    return v;
  }

  strOrNull(key: string): string | null {
    return this.obj[key] === null || this.obj[key] === undefined ? null : this.str(key);
  }

  intOf(key: string, allowed: readonly number[]): number {
    const v = this.obj[key];
    if (typeof v !== 'number' || !allowed.includes(v)) this.fail(key, `one of ${allowed.join(', ')}`);
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[]): T {
    const v = this.obj[key];
    if (!allowed.includes(v as T)) this.fail(key, `one of ${allowed.join(', ')}`);
    return v as T;
  }

  intList(key: string): number[] {
    const v = this.obj[key];
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => Number.isInteger(x) && x >= 0)) {
      this.fail(key, 'a non-empty list of token ids');
    }
    return v as number[];
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  object(key: string): Fields {
    const v = this.obj[key];
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(key, 'an object');
    return new Fields(this.file, v as Json, `${this.prefix}${key}.`);
  }
}

/** Validates a parsed dllm.json; `file` names it in errors. */
export function parseModelSpec(raw: unknown, file = 'dllm.json'): ModelSpec {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ModelFolderError(`${file}: must be a JSON object`);
  const f = new Fields(file, raw as Json);
  const format = f.str('format');
  if (!MODEL_FORMATS.includes(format)) {
    throw new ModelFolderError(`${file}: field "format" is "${format}", this server reads ${MODEL_FORMATS.map((x) => `"${x}"`).join(' and ')}`);
  }
  const vocabSize = f.int('vocab_size', 2);
  const token = (key: string): number => {
    const id = f.int(key);
    if (id >= vocabSize) throw new ModelFolderError(`${file}: field "${key}" (${id}) is not below vocab_size (${vocabSize})`);
    return id;
  };
  const maxSequenceLength = f.int('max_sequence_length', 2);
  const topk = f.int('topk', 2);
  if (topk > vocabSize) throw new ModelFolderError(`${file}: field "topk" (${topk}) exceeds vocab_size (${vocabSize})`);
  const eosTokenIds = f.intList('eos_token_ids');
  for (const id of eosTokenIds) {
    if (id >= vocabSize) throw new ModelFolderError(`${file}: field "eos_token_ids" holds ${id}, not below vocab_size (${vocabSize})`);
  }
  const architecture = f.oneOf('architecture', ARCHITECTURES);
  const blockSize = architecture === 'block_diffusion' ? f.int('block_size', 1) : null;
  const g = f.object('generation_defaults');
  const dream = architecture === 'dream';
  // Only a dream folder decodes the whole span as one block by default (Dream's diffusion_generate has no blocks).
  const blockLength = dream ? g.intOrNull('block_length', 1) : g.int('block_length', 1);
  if (blockSize !== null && blockLength !== blockSize) {
    throw new ModelFolderError(`${file}: generation_defaults.block_length must equal block_size (${blockSize}) for a block_diffusion model`);
  }
  const onnx = f.object('onnx');
  const bos = f.intOrNull('bos_token_id');
  if (bos !== null && bos >= vocabSize) throw new ModelFolderError(`${file}: field "bos_token_id" (${bos}) is not below vocab_size (${vocabSize})`);
  return {
    format,
    architecture,
    logitsShift: dream ? 1 : 0,
    blockSize,
    name: f.str('name'),
    vocabSize,
    maskTokenId: token('mask_token_id'),
    eosTokenIds,
    padTokenId: token('pad_token_id'),
    bosTokenId: bos,
    maxSequenceLength,
    topk,
    chatTemplate: f.strOrNull('chat_template'),
    generationDefaults: {
      maxTokens: g.int('max_tokens', 1),
      steps: g.int('steps', 1),
      blockLength,
      remasking: g.oneOf('remasking', REMASKING_RULES),
      threshold: g.numOrNull('threshold', 0, 1),
      temperature: g.num('temperature', 0),
      alg: g.has('alg') ? g.oneOf('alg', DREAM_ALGS) : null,
      algTemp: g.numOrNull('alg_temp', 0) ?? 0,
      eps: dreamEps(g.numOrNull('eps', Number.MIN_VALUE, 1), file),
      frequencyPenalty: g.numOrNull('frequency_penalty', -MAX_PENALTY, MAX_PENALTY) ?? 0,
      presencePenalty: g.numOrNull('presence_penalty', -MAX_PENALTY, MAX_PENALTY) ?? 0,
    },
    onnx: { fp32: onnx.str('fp32'), fp16: onnx.strOrNull('fp16') },
    cached: format === 'dllm-onnx/1' ? null : cachedGraphSpec(f.object('cached')),
    device: format === 'dllm-onnx/1' || !f.has('device') ? null : { fp32: f.object('device').str('fp32'), fp16: f.object('device').strOrNull('fp16') },
    quantization: f.has('quantization') ? quantizationSpec(f.object('quantization')) : null,
  };
}

/** dllm.json `quantization` (absent or null: float weights), refused at start when the op cannot take it. */
function quantizationSpec(q: Fields): QuantizationSpec {
  return {
    bits: q.intOf('bits', QUANTIZATION_BITS) as 4 | 8,
    blockSize: q.intOf('block_size', QUANTIZATION_BLOCK_SIZES),
    accuracyLevel: q.intOf('accuracy_level', [0, 1, 2, 3, 4]),
    layers: q.oneOf('layers', ['linear'] as const),
  };
}

/** Dream's eps, in (0, 1): the timesteps run from 1 down to it. */
function dreamEps(eps: number | null, file: string): number {
  if (eps === 1) throw new ModelFolderError(`${file}: field "generation_defaults.eps" must be below 1, got 1`);
  return eps ?? DEFAULT_EPS;
}

function cachedGraphSpec(c: Fields): CachedGraphSpec {
  return { fp32: c.str('fp32'), fp16: c.strOrNull('fp16'), layers: c.int('layers', 1), kvHeads: c.int('kv_heads', 1), headDim: c.int('head_dim', 1) };
}

/** Complete sampling parameters from the model's generation defaults (the API overrides what a request sets). */
export function defaultSamplingParams(spec: ModelSpec): SamplingParams {
  const g = spec.generationDefaults;
  return {
    maxTokens: g.maxTokens,
    steps: g.steps,
    blockLength: g.blockLength ?? g.maxTokens,
    remasking: g.remasking,
    threshold: g.threshold,
    factor: null,
    temperature: g.temperature,
    topP: 1,
    topK: 0,
    cfgScale: 0,
    seed: null,
    stop: [],
    logprobs: null,
    ...(g.alg === null ? {} : { alg: g.alg, algTemp: g.algTemp, eps: g.eps }),
    ...penaltyParams({ frequency: g.frequencyPenalty, presence: g.presencePenalty }),
  };
}

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ModelFolderError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ModelFolderError(`${file}: not valid JSON (${(err as Error).message})`);
  }
}

/** The tokenizer of tokenizer.json; encode adds no special tokens, decode keeps them. */
export function textTokenizer(tokenizerJson: unknown, file = 'tokenizer.json'): TextTokenizer {
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(tokenizerJson as object, {});
  } catch (err) {
    throw new ModelFolderError(`${file}: not a Hugging Face tokenizer (${(err as Error).message})`);
  }
  return {
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => (ids.length === 0 ? '' : tokenizer.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false })),
  };
}

export async function loadModelFolder(dir: string): Promise<ModelFolder> {
  const absolute = path.resolve(dir);
  const specFile = path.join(absolute, 'dllm.json');
  const spec = parseModelSpec(await readJson(specFile), specFile);
  const tokenizerFile = path.join(absolute, 'tokenizer.json');
  const tokenizerJson = await readJson(tokenizerFile);
  const tokenizer = textTokenizer(tokenizerJson, tokenizerFile);
  const fp32 = path.join(absolute, spec.onnx.fp32);
  try {
    await stat(fp32);
  } catch {
    throw new ModelFolderError(`${fp32}: missing (named by ${specFile} field "onnx.fp32")`);
  }
  for (const [field, name] of [['cached', spec.cached?.fp32], ['device', spec.device?.fp32]] as const) {
    if (name === undefined) continue;
    const file = path.join(absolute, name);
    try {
      await stat(file);
    } catch {
      throw new ModelFolderError(`${file}: missing (named by ${specFile} field "${field}.fp32")`);
    }
  }
  return {
    dir: absolute,
    spec,
    tokenizer,
    maxBytesPerToken: maxBytesPerToken(tokenizerJson),
    onnxPath(precision) {
      const name = spec.onnx[precision];
      if (name === null) throw new ModelFolderError(`${specFile}: field "onnx.${precision}" is null; this model has no ${precision} graph`);
      return path.join(absolute, name);
    },
    cachedPath(precision) {
      const name = spec.cached?.[precision] ?? null;
      return name === null ? null : path.join(absolute, name);
    },
    devicePath(precision) {
      const name = spec.device?.[precision] ?? null;
      return name === null ? null : path.join(absolute, name);
    },
  };
}
