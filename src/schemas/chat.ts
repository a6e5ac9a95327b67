import { Type, type Static } from 'typebox';
import { DiffusionParams, FinishReason, LogprobsLimit, Nullable, SamplingFields, Usage, completionObject, errorResponses } from './common.js';

const TextPart = Type.Object({ type: Type.Literal('text'), text: Type.String() });

export const ChatMessage = Type.Object({
  role: Type.Union([Type.Literal('system'), Type.Literal('developer'), Type.Literal('user'), Type.Literal('assistant')]),
  content: Type.Union([Type.String(), Type.Array(TextPart, { minItems: 1 })]),
  name: Type.Optional(Type.String()),
});

export const ChatRequest = Type.Object(
  {
    model: Type.String(),
    messages: Type.Array(ChatMessage, { minItems: 1 }),
    max_completion_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
    logprobs: Type.Optional(Nullable(Type.Boolean())),
    top_logprobs: Type.Optional(Nullable(Type.Integer(LogprobsLimit))),
    diffusing: Type.Optional(
      Type.Boolean({ description: "Inception Mercury convention: each chunk's delta.content is the whole current draft (replace, not append)." }),
    ),
    response_format: Type.Optional(Nullable(Type.Object({ type: Type.String() }, { description: "Only {type: 'text'}." }))),
    tools: Type.Optional(Nullable(Type.Array(Type.Unknown(), { description: 'Not supported: only empty.' }))),
    tool_choice: Type.Optional(Nullable(Type.Unknown({ description: "Not supported: only 'none'." }))),
    parallel_tool_calls: Type.Optional(Nullable(Type.Boolean())),
    store: Type.Optional(Nullable(Type.Boolean({ description: 'Not supported: only false.' }))),
    service_tier: Type.Optional(Nullable(Type.String({ description: "Only 'auto' or 'default'." }))),
    ...SamplingFields,
    ...DiffusionParams,
  },
  { additionalProperties: false },
);
export type ChatRequest = Static<typeof ChatRequest>;

const ChatLogprob = Type.Object({
  token: Type.String(),
  logprob: Type.Number(),
  bytes: Nullable(Type.Array(Type.Integer())),
  top_logprobs: Type.Array(Type.Object({ token: Type.String(), logprob: Type.Number(), bytes: Nullable(Type.Array(Type.Integer())) })),
});

export const ChatResponse = completionObject(
  'chat.completion',
  Type.Object({
    index: Type.Integer(),
    message: Type.Object({
      role: Type.Literal('assistant'),
      content: Type.String(),
      refusal: Nullable(Type.String()),
    }),
    logprobs: Nullable(Type.Object({ content: Nullable(Type.Array(ChatLogprob)) })),
    finish_reason: FinishReason,
  }),
  Usage,
  { $id: 'ChatCompletionResponse' },
);
export type ChatResponse = Static<typeof ChatResponse>;

export const chatRouteSchema = {
  summary: "Create a chat completion with the model's chat template",
  description:
    'OpenAI chat completion. With `stream: true`: one chunk per denoising step; `delta.content` is the newly stable text ' +
    '(or, with `diffusing: true`, the whole current draft), `choices[i].diffusion` the step; `data: [DONE]` last.',
  tags: ['chat'],
  body: ChatRequest,
  response: {
    200: {
      description: 'A chat.completion object, or with stream=true an SSE stream of chat.completion.chunk objects',
      content: {
        'application/json': { schema: ChatResponse },
        'text/event-stream': { schema: Type.String({ description: 'data: <ChatCompletionChunk JSON>\\n\\n per chunk, then data: [DONE]\\n\\n' }) },
      },
    },
    ...errorResponses,
  },
};
