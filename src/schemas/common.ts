import { Type, type TSchema } from 'typebox';

export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      message: Type.String(),
      type: Type.String(),
      param: Type.Union([Type.String(), Type.Null()]),
      code: Type.Union([Type.String(), Type.Null()]),
    }),
  },
  { $id: 'ErrorResponse', description: 'OpenAI error object' },
);

const ErrorRef = Type.Ref('ErrorResponse');

/** The error responses every generation route can give. */
export const errorResponses = {
  400: ErrorRef,
  401: ErrorRef,
  404: ErrorRef,
  413: ErrorRef,
  429: ErrorRef,
  500: ErrorRef,
  503: ErrorRef,
  504: ErrorRef,
};

export const Usage = Type.Object({
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
});

export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const FinishReason = Nullable(Type.Union([Type.Literal('stop'), Type.Literal('length')]));

/**
 * The fields every OpenAI completion object and stream chunk shares (`text_completion`, `chat.completion`,
 * `chat.completion.chunk`); the choice and usage schemas are what tells them apart.
 */
export function completionObject<O extends string, C extends TSchema, U extends TSchema>(
  object: O,
  choice: C,
  usage: U,
  options: { $id: string; description?: string },
) {
  return Type.Object(
    {
      id: Type.String(),
      object: Type.Literal(object),
      created: Type.Integer(),
      model: Type.String(),
      system_fingerprint: Type.Optional(Type.String()),
      choices: Type.Array(choice),
      usage,
    },
    options,
  );
}

/** Diffusion parameters, at top level like vLLM's extra sampling parameters. */
export const DiffusionParams = {
  steps: Type.Optional(
    Type.Integer({ minimum: 1, description: 'Total denoising steps (fixed schedule); default: the model folder default, at most the generated length.' }),
  ),
  block_length: Type.Optional(
    Type.Integer({ minimum: 1, description: 'Semi-autoregressive block length; the generated span is max_tokens rounded up to whole blocks.' }),
  ),
  remasking: Type.Optional(
    Type.Union(
      [Type.Literal('low_confidence'), Type.Literal('random'), Type.Literal('margin'), Type.Literal('entropy')],
      { description: 'Which masked positions each step commits first.' },
    ),
  ),
  threshold: Type.Optional(
    Nullable(Type.Number({ exclusiveMinimum: 0, maximum: 1, description: 'Parallel decoding (Fast-dLLM): commit every position with confidence >= threshold.' })),
  ),
  factor: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, description: "Fast-dLLM's factor rule for parallel decoding." }))),
  cfg_scale: Type.Optional(Type.Number({ minimum: 0, maximum: 100, description: 'Classifier-free guidance scale; 0 = none.' })),
  top_k: Type.Optional(Type.Integer({ minimum: 0, description: "Sample among the k most likely tokens (0 = off; at most the model head's K)." })),
  include_canvas: Type.Optional(
    Type.Boolean({ description: 'Streaming: put the whole generated span (token ids, null where masked) and its draft text on every step chunk.' }),
  ),
  cache: Type.Optional(
    Type.Union([Type.Literal('none'), Type.Literal('prefix'), Type.Literal('dual')], {
      description:
        "Key/value cache (Fast-dLLM): none runs the whole canvas every step; prefix and dual refresh it with a full pass at each block start, then run the block and what follows it (prefix) or the block alone (dual). Approximations; default: the server's KV_CACHE.",
    }),
  ),
};

export const StreamOptions = Type.Optional(
  Nullable(Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, { additionalProperties: false })),
);

export const Stop = Type.Optional(
  Nullable(Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 4 })], { description: 'Up to 4 stop strings.' })),
);

/** The per-step streaming extension placed on each choice of a chunk (named once: `diffusion`). */
export const DiffusionStep = Type.Object(
  {
    step: Type.Integer({ description: 'Step of this choice, from 0' }),
    block: Type.Integer({ description: 'Block being decoded, from 0' }),
    committed: Type.Array(
      Type.Object({
        position: Type.Integer({ description: 'Index in the generated span' }),
        token_id: Type.Integer(),
        text: Type.String(),
        confidence: Type.Number(),
      }),
    ),
    canvas: Type.Optional(Type.Array(Nullable(Type.Integer()), { description: 'include_canvas: token per position, null = masked' })),
    draft: Type.Optional(Type.String({ description: 'include_canvas: current draft, masked positions as U+2591' })),
  },
  { $id: 'DiffusionStep', description: 'One denoising step, on each choice of a streamed chunk as `diffusion`.' },
);
