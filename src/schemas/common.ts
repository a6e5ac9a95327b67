import { Type, type TSchema } from 'typebox';
import { CACHE_MODES, DREAM_ALGS } from '../engine/types.js';
import { MAX_SEED } from '../engine/rng.js';
import { MAX_PENALTY } from '../engine/penalties.js';
import { MAX_CFG_SCALE, MAX_CHOICES, MAX_LOGPROBS, MAX_STOP_STRINGS, MAX_TEMPERATURE } from '../engine/validation.js';

// Numeric limits are the engine's (engine/validation.ts): the schema refuses early what the engine would refuse,
// with the same bounds. Limits that depend on the model (max_tokens, top_k) are checked by the engine alone.

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

/** Fields of OpenAI's sampling parameters that both generation requests share. */
export const SamplingFields = {
  max_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: MAX_TEMPERATURE }))),
  top_p: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0, maximum: 1 }))),
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: MAX_CHOICES }))),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(Nullable(Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, { additionalProperties: false }))),
  stop: Type.Optional(
    Nullable(
      Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: MAX_STOP_STRINGS })], { description: `Up to ${MAX_STOP_STRINGS} stop strings.` }),
    ),
  ),
  seed: Type.Optional(Nullable(Type.Integer({ minimum: 0, maximum: MAX_SEED }))),
  user: Type.Optional(Type.String()),
  frequency_penalty: Type.Optional(
    Nullable(
      Type.Number({
        minimum: -MAX_PENALTY,
        maximum: MAX_PENALTY,
        description:
          "Lowers each candidate token's logit by this much per time the choice has already committed it in its completion (end-of-text not counted), at every masked position; default: the model's (usually 0).",
      }),
    ),
  ),
  presence_penalty: Type.Optional(
    Nullable(
      Type.Number({
        minimum: -MAX_PENALTY,
        maximum: MAX_PENALTY,
        description: "Lowers the logit of every token the choice has already committed in its completion by this much, once; default: the model's (usually 0).",
      }),
    ),
  ),
  logit_bias: Type.Optional(Nullable(Type.Record(Type.String(), Type.Number(), { description: 'Not supported: only empty.' }))),
  ignore_eos: Type.Optional(
    Type.Boolean({
      description:
        "vLLM's ignore_eos: an end-of-text does not end the choice; every one of the max_tokens positions is decoded, as LLaDA's generate() does (fixed-length outputs for benchmarks). The text decodes the whole span, end-of-text tokens included as their text.",
    }),
  ),
  min_tokens: Type.Optional(
    Type.Integer({
      minimum: 0,
      description:
        "vLLM's min_tokens, adapted to diffusion: no end-of-text is chosen at the first min_tokens positions of the generated span (at most max_tokens), so the completion has at least that many tokens unless a stop string cuts it.",
    }),
  ),
};

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
  alg: Type.Optional(
    Type.Union(
      DREAM_ALGS.map((a) => Type.Literal(a)),
      {
        description:
          "Dream's sampler (HKUNLP Dream, diffusion_generate) with this confidence: maskgit_plus p(chosen token), topk_margin p(top-1) - p(top-2), entropy -H, origin none (each masked position committed with probability 1 - s/t). The timesteps from 1 down to eps decide how many positions each step commits; every step runs the model. Not with remasking, threshold or factor (LLaDA's sampler). Default: the model folder's (dream folders).",
      },
    ),
  ),
  alg_temp: Type.Optional(
    Type.Number({
      minimum: 0,
      maximum: MAX_TEMPERATURE,
      description: "Dream's alg_temp: 0 commits the most confident positions; above 0 draws them from softmax(confidence / alg_temp). Needs alg.",
    }),
  ),
  eps: Type.Optional(
    Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, description: "Dream's eps: the last timestep (timesteps run from 1 down to eps); default 0.001. Needs alg." }),
  ),
  cfg_scale: Type.Optional(Type.Number({ minimum: 0, maximum: MAX_CFG_SCALE, description: 'Classifier-free guidance scale; 0 = none.' })),
  top_k: Type.Optional(Type.Integer({ minimum: 0, description: "Sample among the k most likely tokens (0 = off; at most the model head's K)." })),
  include_canvas: Type.Optional(
    Type.Boolean({
      description:
        'Streaming: put the whole generated span (token ids, null where masked), its draft text and the provisional tokens (the current guess at each masked position of the block being decoded) on every step chunk.',
    }),
  ),
  cache: Type.Optional(
    Type.Union(
      CACHE_MODES.map((m) => Type.Literal(m)),
      {
        description:
          "Key/value cache (Fast-dLLM): none runs the whole canvas every step; prefix and dual refresh it with a full pass at each block start, then run the block and what follows it (prefix) or the block alone (dual). Approximations; default: the server's KV_CACHE.",
      },
    ),
  ),
};

/** Most alternatives per token a completion's logprobs may ask for. */
export const LogprobsLimit = { minimum: 0, maximum: MAX_LOGPROBS };

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
    block_starts: Type.Optional(
      Type.Array(Type.Integer(), {
        description:
          "include_canvas: where the span's blocks start, then its end (indices in the span): blocks of block_length, or a block diffusion model's own blocks, whose first and last may be short",
      }),
    ),
    provisional: Type.Optional(
      Type.Array(
        Type.Object({
          position: Type.Integer({ description: 'Index in the generated span; still masked' }),
          token_id: Type.Integer(),
          text: Type.String(),
        }),
        {
          description:
            "include_canvas: the model's current guess at each still-masked position of the block being decoded. Provisional: not committed, may change at the next step, never part of the text (docs/design.md §5).",
        },
      ),
    ),
  },
  { $id: 'DiffusionStep', description: 'One denoising step, on each choice of a streamed chunk as `diffusion`.' },
);
