// Streamed chunk objects, for the OpenAPI document (SSE bodies are written directly, not serialized by schema).

import { Type } from 'typebox';
import { Nullable, Usage } from './common.js';

const Diffusion = Type.Optional(Type.Ref('DiffusionStep'));
const Finish = Nullable(Type.Union([Type.Literal('stop'), Type.Literal('length')]));

export const CompletionChunk = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('text_completion'),
    created: Type.Integer(),
    model: Type.String(),
    system_fingerprint: Type.Optional(Type.String()),
    choices: Type.Array(
      Type.Object({
        index: Type.Integer(),
        text: Type.String({ description: 'Newly stable text (append)' }),
        logprobs: Nullable(Type.Object({})),
        finish_reason: Finish,
        diffusion: Diffusion,
      }),
    ),
    usage: Type.Optional(Nullable(Usage)),
  },
  { $id: 'CompletionChunk', description: 'One SSE `data:` payload of a streamed completion: one per denoising step, then one per finished choice, then usage (include_usage).' },
);

export const ChatCompletionChunk = Type.Object(
  {
    id: Type.String(),
    object: Type.Literal('chat.completion.chunk'),
    created: Type.Integer(),
    model: Type.String(),
    system_fingerprint: Type.Optional(Type.String()),
    choices: Type.Array(
      Type.Object({
        index: Type.Integer(),
        delta: Type.Object({
          role: Type.Optional(Type.Literal('assistant')),
          content: Type.Optional(Type.String({ description: 'Newly stable text (append); with diffusing: true the whole draft (replace)' })),
        }),
        logprobs: Nullable(Type.Object({})),
        finish_reason: Finish,
        diffusion: Diffusion,
      }),
    ),
    usage: Type.Optional(Nullable(Usage)),
  },
  { $id: 'ChatCompletionChunk', description: 'One SSE `data:` payload of a streamed chat completion.' },
);
