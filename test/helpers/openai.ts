// Types for the tests that speak to the server: request bodies for the official `openai` client with this server's
// extension fields (steps, block_length, ignore_eos, alg, include_canvas, ...), the `diffusion` extension of a
// streamed choice, and the JSON bodies of /ready, /v1/models and the error object. All from the route schemas
// (src/schemas), so that a field renamed there breaks the tests at typecheck time instead of being sent unchecked.

import type OpenAI from 'openai';
import type { Static } from 'typebox';
import type { ChatRequest } from '../../src/schemas/chat.js';
import type { ChatCompletionChunk, CompletionChunk } from '../../src/schemas/chunks.js';
import type { DiffusionStep, ErrorResponse } from '../../src/schemas/common.js';
import type { CompletionRequest } from '../../src/schemas/completions.js';
import type { ReadyBody as ReadySchema } from '../../src/schemas/health.js';
import type { ModelList } from '../../src/schemas/models.js';
import type { CacheMode, DreamAlg } from '../../src/engine/types.js';

/**
 * A request schema's fields, all optional. `alg` and `cache` are typed from the engine's types: their schemas are
 * unions built from arrays with .map (src/schemas/common.ts), which TypeBox's Static cannot see into (it gives never).
 */
type Fields<R> = Partial<Omit<R, 'alg' | 'cache'>> & { alg?: DreamAlg; cache?: CacheMode };

/**
 * A completion body for `client.completions.create`: OpenAI's parameters and this server's (src/schemas/completions.ts),
 * checked against both as an object literal, returned as the client's type (which has no field for the extensions).
 */
export function completionParams(body: OpenAI.CompletionCreateParamsNonStreaming & Fields<CompletionRequest>): OpenAI.CompletionCreateParamsNonStreaming {
  return body;
}

/** The same with `stream: true`: the client then returns a Stream of chunks. */
export function completionStreamParams(body: OpenAI.CompletionCreateParamsStreaming & Fields<CompletionRequest>): OpenAI.CompletionCreateParamsStreaming {
  return body;
}

/** A chat body for `client.chat.completions.create` with this server's fields (src/schemas/chat.ts). */
export function chatParams(body: OpenAI.ChatCompletionCreateParamsNonStreaming & Fields<ChatRequest>): OpenAI.ChatCompletionCreateParamsNonStreaming {
  return body;
}

/** The same with `stream: true`. */
export function chatStreamParams(body: OpenAI.ChatCompletionCreateParamsStreaming & Fields<ChatRequest>): OpenAI.ChatCompletionCreateParamsStreaming {
  return body;
}

/** The per-step extension on a streamed choice (src/schemas/common.ts DiffusionStep). */
export type Diffusion = Static<typeof DiffusionStep>;

/** A streamed choice as this server sends it: the client's type, plus `diffusion` on the chunks of a step. */
export type StreamedChoice<C> = C & { diffusion?: Diffusion };

/** A choice of a streamed chunk from the client, with the server's `diffusion` extension in its type. */
export function streamed<C extends object>(choice: C): StreamedChoice<C> {
  // The client's chunk types do not know the extension; the server's chunk schema (src/schemas/chunks.ts) puts it there.
  return choice as StreamedChoice<C>;
}

/** A chunk schema's type with the `diffusion` of its choices typed (the schema refers to DiffusionStep by $ref). */
type WithDiffusion<T extends { choices: object[] }> = Omit<T, 'choices'> & { choices: StreamedChoice<Omit<T['choices'][number], 'diffusion'>>[] };

/** One `data:` payload of a streamed completion, as the server writes it (src/schemas/chunks.ts CompletionChunk). */
export type CompletionChunkBody = WithDiffusion<Static<typeof CompletionChunk>>;

/** One `data:` payload of a streamed chat completion (src/schemas/chunks.ts ChatCompletionChunk). */
export type ChatChunkBody = WithDiffusion<Static<typeof ChatCompletionChunk>>;

/** The OpenAI error object every refusal carries (src/schemas/common.ts ErrorResponse). */
export type ErrorBody = Static<typeof ErrorResponse>;

/** GET /ready's body when ready (src/schemas/health.ts). */
export type ReadyBody = Static<typeof ReadySchema>;

/** GET /v1/models (src/schemas/models.ts). */
export type ModelListBody = Static<typeof ModelList>;

/** A response's JSON body, as the type the route's schema gives it (the schema is the server's contract; not checked here). */
export async function jsonOf<T>(response: Response | Promise<Response>): Promise<T> {
  return (await (await response).json()) as T;
}
