// Streamed chunk objects, for the OpenAPI document (SSE bodies are written directly, not serialized by schema).

import { Type } from 'typebox';
import { FinishReason, Nullable, Usage, completionObject } from './common.js';

const Diffusion = Type.Optional(Type.Ref('DiffusionStep'));

export const CompletionChunk = completionObject(
  'text_completion',
  Type.Object({
    index: Type.Integer(),
    text: Type.String({ description: 'Newly stable text (append)' }),
    logprobs: Nullable(Type.Object({})),
    finish_reason: FinishReason,
    diffusion: Diffusion,
  }),
  Type.Optional(Nullable(Usage)),
  { $id: 'CompletionChunk', description: 'One SSE `data:` payload of a streamed completion: one per denoising step, then one per finished choice, then usage (include_usage).' },
);

export const ChatCompletionChunk = completionObject(
  'chat.completion.chunk',
  Type.Object({
    index: Type.Integer(),
    delta: Type.Object({
      role: Type.Optional(Type.Literal('assistant')),
      content: Type.Optional(Type.String({ description: 'Newly stable text (append); with diffusing: true the whole draft (replace)' })),
    }),
    logprobs: Nullable(Type.Object({})),
    finish_reason: FinishReason,
    diffusion: Diffusion,
  }),
  Type.Optional(Nullable(Usage)),
  { $id: 'ChatCompletionChunk', description: 'One SSE `data:` payload of a streamed chat completion.' },
);
