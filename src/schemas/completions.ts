import { Type, type Static } from 'typebox';
import { DiffusionParams, FinishReason, LogprobsLimit, Nullable, SamplingFields, Usage, completionObject, errorResponses } from './common.js';

export const CompletionRequest = Type.Object(
  {
    model: Type.String({ description: 'A model id from GET /v1/models' }),
    prompt: Type.Union(
      [
        Type.String(),
        Type.Array(Type.String(), { minItems: 1 }),
        Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }),
        Type.Array(Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }), { minItems: 1 }),
      ],
      { description: "A string, strings, token ids, or arrays of token ids. Several prompts give n choices each. Text is tokenized after the model's BOS; token ids are used verbatim, no BOS added (vLLM's behaviour)." },
    ),
    suffix: Type.Optional(
      Nullable(Type.String({ description: 'Infill: the masked span sits between prompt and suffix, decoded with both in view.' })),
    ),
    echo: Type.Optional(Nullable(Type.Boolean())),
    logprobs: Type.Optional(Nullable(Type.Integer(LogprobsLimit))),
    best_of: Type.Optional(Nullable(Type.Integer({ minimum: 1, description: 'Not supported: only null, 1 or n.' }))),
    ...SamplingFields,
    ...DiffusionParams,
  },
  { additionalProperties: false },
);
export type CompletionRequest = Static<typeof CompletionRequest>;

export const CompletionLogprobs = Type.Object({
  tokens: Type.Array(Type.String()),
  token_logprobs: Type.Array(Nullable(Type.Number())),
  top_logprobs: Type.Array(Nullable(Type.Record(Type.String(), Type.Number()))),
  text_offset: Type.Array(Type.Integer()),
});

export const CompletionResponse = completionObject(
  'text_completion',
  Type.Object({
    index: Type.Integer(),
    text: Type.String(),
    logprobs: Nullable(CompletionLogprobs),
    finish_reason: FinishReason,
  }),
  Usage,
  { $id: 'CompletionResponse' },
);
export type CompletionResponse = Static<typeof CompletionResponse>;

export const completionsRouteSchema = {
  summary: 'Create a completion (masked diffusion; infill with `suffix`)',
  description:
    'OpenAI text completion. With `stream: true` the reply is server-sent events: one chunk per denoising step ' +
    '(`choices[i].text` = newly stable text, `choices[i].diffusion` = the step), then `data: [DONE]`.',
  tags: ['completions'],
  body: CompletionRequest,
  response: {
    200: {
      description: 'A text_completion object, or with stream=true an SSE stream of text_completion chunks',
      content: {
        'application/json': { schema: CompletionResponse },
        'text/event-stream': { schema: Type.String({ description: 'data: <CompletionChunk JSON>\\n\\n per chunk, then data: [DONE]\\n\\n' }) },
      },
    },
    ...errorResponses,
  },
};
