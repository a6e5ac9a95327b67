// POST /v1/completions: the request → one engine request per prompt; the choice shapes of a text_completion.

import type { GenerateRequest, TokenLogprobs } from '../engine/types.js';
import type { CompletionRequest } from '../schemas/completions.js';
import { ApiError } from './errors.js';
import { completionId } from './ids.js';
import type { ServingModel } from './model.js';
import { resolveParams } from './params.js';
import type { Format, Prepared } from './pipeline.js';
import { prefixLength, validated } from './prepare.js';
import type { PromptEncoder } from './prompts.js';
import { refuseCompletionFields } from './refusals.js';

/** Most prompts per request, and most choices (prompts × n). */
const MAX_PROMPTS = 16;
const MAX_REQUEST_CHOICES = 64;

interface Prompt {
  ids: number[];
  /** The text as sent; null for token ids, which are used verbatim (no BOS: docs/design.md §2). */
  text: string | null;
}

/** The prompts of a request, each refused if it cannot fit with the suffix, then tokenized (prompts.ts). */
async function promptsOf(prompts: PromptEncoder, prompt: CompletionRequest['prompt'], suffix: string): Promise<Prompt[]> {
  let texts: string[];
  if (typeof prompt === 'string') texts = [prompt];
  else {
    if (typeof prompt[0] === 'number') return [{ ids: prompt as number[], text: null }];
    // Counted before any prompt is tokenized: the body may hold a great many small ones.
    if (prompt.length > MAX_PROMPTS) throw ApiError.invalid(`at most ${MAX_PROMPTS} prompts per request`, 'prompt');
    if (typeof prompt[0] !== 'string') return (prompt as number[][]).map((ids) => ({ ids, text: null }));
    texts = prompt as string[];
  }
  for (const text of texts) prompts.assertCanFit([text, suffix], 'prompt', 'the prompt');
  return Promise.all(texts.map(async (text) => ({ ids: await prompts.encode(text), text })));
}

function logprobsBody(lp: TokenLogprobs | undefined, offset: number) {
  if (!lp) return null;
  return {
    tokens: lp.tokens,
    token_logprobs: lp.tokenLogprobs,
    top_logprobs: lp.topLogprobs,
    text_offset: lp.textOffset.map((o) => o + offset),
  };
}

/** text_completion choices; `echo` holds each prompt's text when the request echoes it. */
function completionFormat(echo: string[] | null): Format {
  return {
    endpoint: 'completions',
    object: 'text_completion',
    chunkObject: 'text_completion',
    opening: (choices) =>
      echo === null ? [] : choices.map(({ index, part }) => ({ index, text: echo[part], logprobs: null, finish_reason: null })),
    step: (index, text) => ({ index, text, logprobs: null, finish_reason: null }),
    finish: (index, rest, event) => ({ index, text: rest, logprobs: logprobsBody(event.logprobs, 0), finish_reason: event.finishReason }),
    choice: (index, part, event) => {
      const prefix = echo === null ? '' : echo[part];
      return { index, text: prefix + event.text, logprobs: logprobsBody(event.logprobs, prefix.length), finish_reason: event.finishReason };
    },
  };
}

export async function prepareCompletion(model: ServingModel, prompts: PromptEncoder, servedName: string, body: CompletionRequest): Promise<Prepared> {
  if (body.model !== servedName) throw ApiError.modelNotFound(body.model);
  refuseCompletionFields(body);
  const suffix = body.suffix ?? '';
  const parts = await promptsOf(prompts, body.prompt, suffix);
  const suffixIds = suffix ? await prompts.encode(suffix) : [];
  const id = completionId('cmpl');
  const includeCanvas = body.include_canvas === true;
  const n = body.n ?? 1;
  if (parts.length * n > MAX_REQUEST_CHOICES) throw ApiError.invalid(`at most ${MAX_REQUEST_CHOICES} choices (prompts × n) per request`, 'n');
  const requests = parts.map((p, k): GenerateRequest => {
    const verbatim = p.text === null;
    const { params } = resolveParams(model, body, prefixLength(model, p.ids, verbatim), suffixIds.length, body.logprobs ?? null);
    const request: GenerateRequest = {
      id: parts.length === 1 ? id : `${id}-${k}`,
      promptTokenIds: p.ids,
      ...(verbatim ? { verbatimPrompt: true } : {}),
      suffixTokenIds: suffixIds,
      params,
      n,
      includeCanvas,
    };
    return validated(model, request, 'prompt');
  });
  return {
    id,
    created: Math.floor(Date.now() / 1000),
    model: servedName,
    requests,
    n,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    includeCanvas,
    format: completionFormat(body.echo ? parts.map((p) => p.text ?? model.decode(p.ids)) : null),
  };
}
