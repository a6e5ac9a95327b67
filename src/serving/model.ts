// What the serving layer needs to know about the model: its name and limits, the tokenizer, the chat template.
// The API tokenizes and validates before it enqueues (docs/design.md §6), so it loads the model folder without ONNX.

import { Template } from '@huggingface/jinja';
import type { GenerateRequest } from '../engine/types.js';
import type { Architecture, GenerationDefaults, ModelFolder, QuantizationSpec } from '../engine/model_folder.js';
import { validateRequest } from '../engine/validation.js';

export interface ServingModel {
  name: string;
  /** The model folder (the tokenizer pool's threads load it again). */
  dir: string;
  vocabSize: number;
  maxSequenceLength: number;
  architecture: Architecture;
  bosTokenId: number | null;
  /** K of the sampling head: the largest top_k accepted. */
  topk: number;
  /** A block diffusion model's block size (its only block_length); null for LLaDA. */
  blockSize: number | null;
  /** Weight-only quantization of the linear layers (dllm.json), null for float weights. */
  quantization: QuantizationSpec | null;
  defaults: GenerationDefaults;
  chatTemplate: string | null;
  /** Text of the special tokens a chat template may need (bos_token, eos_token). */
  bosToken: string;
  eosToken: string;
  /** The most bytes of text one token stands for, when the tokenizer allows a sound bound (engine/token_bound.ts). */
  maxBytesPerToken: number | null;
  encode(text: string): number[];
  decode(ids: number[]): string;
  /** The engine's own request validation (throws EngineError), run before a request is queued. */
  validate(request: GenerateRequest): void;
}

/** The serving view of a model folder loaded by the engine's loader (no ONNX needed). */
export function servingModel(folder: ModelFolder): ServingModel {
  const s = folder.spec;
  return {
    name: s.name,
    dir: folder.dir,
    vocabSize: s.vocabSize,
    maxSequenceLength: s.maxSequenceLength,
    architecture: s.architecture,
    bosTokenId: s.bosTokenId,
    topk: s.topk,
    blockSize: s.blockSize,
    quantization: s.quantization ?? null,
    defaults: { ...s.generationDefaults },
    chatTemplate: s.chatTemplate,
    // The engine puts the BOS token id in front of every prompt; a template's bos_token must not add a second one.
    bosToken: '',
    eosToken: folder.tokenizer.decode([s.eosTokenIds[0]]),
    maxBytesPerToken: folder.maxBytesPerToken,
    encode: (text) => folder.tokenizer.encode(text),
    decode: (ids) => folder.tokenizer.decode(ids),
    validate: (request) => validateRequest(s, request),
  };
}

export interface ChatMessage {
  role: string;
  content: string;
}

const templateCache = new Map<string, Template>();

/** Renders the model's chat template (Jinja) with a generation prompt. Without a template: "role: content" lines. */
export function renderChat(model: ServingModel, messages: ChatMessage[]): string {
  if (model.chatTemplate === null) {
    return messages.map((m) => `${m.role}: ${m.content}\n`).join('') + 'assistant: ';
  }
  let t = templateCache.get(model.chatTemplate);
  if (t === undefined) {
    t = new Template(model.chatTemplate);
    templateCache.set(model.chatTemplate, t);
  }
  return t.render({
    messages,
    add_generation_prompt: true,
    bos_token: model.bosToken,
    eos_token: model.eosToken,
  });
}
