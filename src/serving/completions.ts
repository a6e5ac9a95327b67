// POST /v1/completions: request → GenerateRequest(s), engine events → text_completion object or chunks.

import type { GenerateRequest, StepEvent, TokenLogprobs, Usage } from '../engine/types.js';
import type { CompletionRequest, CompletionResponse } from '../schemas/completions.js';
import { ApiError, fromEngineError } from './errors.js';
import { SYSTEM_FINGERPRINT, completionId } from './ids.js';
import type { ServingModel } from './model.js';
import type { ServingObserver } from './observe.js';
import { resolveParams } from './params.js';
import type { PromptEncoder } from './prompts.js';
import { Run, addUsage, admitted, collectChoices } from './run.js';
import { ChoiceText } from './text.js';

export interface Prepared {
  id: string;
  created: number;
  model: string;
  requests: GenerateRequest[];
  /** Choices per prompt. */
  n: number;
  stream: boolean;
  includeUsage: boolean;
  includeCanvas: boolean;
  stop: string[];
  /** Text put before each choice's completion (echo), per prompt. */
  echo: string[] | null;
}

export function diffusionExt(ev: StepEvent, includeCanvas: boolean) {
  const ext: Record<string, unknown> = {
    step: ev.step,
    block: ev.block,
    committed: ev.committed.map((c) => ({ position: c.position, token_id: c.tokenId, text: c.text, confidence: c.confidence })),
  };
  if (includeCanvas) {
    ext.canvas = ev.canvas ?? null;
    ext.draft = ev.draft ?? null;
  }
  return ext;
}

export function usageBody(u: Usage) {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.totalTokens };
}

/** The prompts of a request, each refused if it cannot fit with the suffix, then tokenized (prompts.ts). */
async function promptsOf(
  prompts: PromptEncoder,
  prompt: CompletionRequest['prompt'],
  suffix: string,
): Promise<{ ids: number[]; text: string | null }[]> {
  let texts: string[];
  if (typeof prompt === 'string') texts = [prompt];
  else {
    if (prompt.length === 0) throw ApiError.invalid('prompt must not be empty', 'prompt');
    if (typeof prompt[0] === 'number') return [{ ids: prompt as number[], text: null }];
    // Counted before any prompt is tokenized: the body may hold a great many small ones.
    if (prompt.length > MAX_PROMPTS) throw ApiError.invalid(`at most ${MAX_PROMPTS} prompts per request`, 'prompt');
    if (typeof prompt[0] !== 'string') return (prompt as number[][]).map((ids) => ({ ids, text: null }));
    texts = prompt as string[];
  }
  for (const text of texts) prompts.assertCanFit([text, suffix], 'prompt', 'the prompt');
  return Promise.all(texts.map(async (text) => ({ ids: await prompts.encode(text), text })));
}

/** The engine's validation, before anything is queued; its errors become 400s. */
export function validate(model: ServingModel, request: GenerateRequest): void {
  try {
    model.validate(request);
  } catch (e) {
    throw fromEngineError(e);
  }
}

const MAX_PROMPTS = 16;

export async function prepareCompletion(model: ServingModel, prompts: PromptEncoder, servedName: string, body: CompletionRequest): Promise<Prepared> {
  if (body.model !== servedName) throw ApiError.modelNotFound(body.model);
  if (body.best_of != null && body.best_of !== 1 && body.best_of !== (body.n ?? 1)) {
    throw ApiError.unsupported('best_of', 'is not supported: only null, 1 or equal to n');
  }
  if (body.echo && body.logprobs != null) throw ApiError.unsupported('echo', 'together with logprobs is not supported');
  const suffix = body.suffix ?? '';
  const parts = await promptsOf(prompts, body.prompt, suffix);
  for (const p of parts) {
    if (p.ids.some((t) => t >= model.vocabSize)) {
      throw ApiError.invalid(`token ids must be below the vocabulary size ${model.vocabSize}`, 'prompt');
    }
  }
  const suffixIds = suffix ? await prompts.encode(suffix) : [];
  const id = completionId('cmpl');
  const includeCanvas = body.include_canvas === true;
  let n = 1;
  let stop: string[] = [];
  const requests = parts.map((p, k) => {
    const r = resolveParams(model, body, p.ids.length, suffixIds.length, body.logprobs ?? null, 'prompt');
    n = r.n;
    stop = r.params.stop;
    const request: GenerateRequest = {
      id: parts.length === 1 ? id : `${id}-${k}`,
      promptTokenIds: p.ids,
      suffixTokenIds: suffixIds,
      params: r.params,
      n: r.n,
      includeCanvas,
    };
    validate(model, request);
    return request;
  });
  if (requests.length * n > 64) throw ApiError.invalid('at most 64 choices (prompts × n) per request', 'n');
  return {
    id,
    created: Math.floor(Date.now() / 1000),
    model: servedName,
    requests,
    n,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    includeCanvas,
    stop,
    echo: body.echo ? parts.map((p) => p.text ?? model.decode(p.ids)) : null,
  };
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

export async function completionResponse(p: Prepared, run: Run, obs: ServingObserver): Promise<CompletionResponse> {
  const { choices, usage } = await collectChoices(run, obs, 'completions', (part, event): CompletionResponse['choices'][number] => {
    const prefix = p.echo ? p.echo[part] : '';
    return {
      index: part * p.n + event.index,
      text: prefix + event.text,
      logprobs: logprobsBody(event.logprobs, prefix.length),
      finish_reason: event.finishReason,
    };
  });
  return {
    id: p.id,
    object: 'text_completion',
    created: p.created,
    model: p.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices,
    usage: usageBody(usage),
  };
}

/** Stream chunks (objects to be sent as `data: <json>`), one per denoising step. */
export async function* completionChunks(p: Prepared, run: Run, obs: ServingObserver): AsyncGenerator<object> {
  const t0 = performance.now();
  let first = true;
  const texts = new Map<number, ChoiceText>();
  const base = { id: p.id, object: 'text_completion', created: p.created, model: p.model, system_fingerprint: SYSTEM_FINGERPRINT };
  const extra = p.includeUsage ? { usage: null } : {};
  let usage: Usage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
  const textOf = (index: number) => {
    let t = texts.get(index);
    if (!t) {
      t = new ChoiceText(p.stop);
      texts.set(index, t);
    }
    return t;
  };
  const events = await admitted(run);
  if (p.echo) {
    const choices = [];
    for (let part = 0; part < p.requests.length; part++) {
      for (let i = 0; i < p.n; i++) choices.push({ index: part * p.n + i, text: p.echo[part], logprobs: null, finish_reason: null });
    }
    yield { ...base, choices, ...extra };
  }
  for await (const { part, event } of events) {
    if (event.type === 'step') {
      if (first) {
        first = false;
        obs.firstStep('completions', (performance.now() - t0) / 1000);
      }
      obs.step('completions');
      const index = part * p.n + event.index;
      const text = textOf(index).push(event.stableText);
      yield {
        ...base,
        choices: [{ index, text, logprobs: null, finish_reason: null, diffusion: diffusionExt(event, p.includeCanvas) }],
        ...extra,
      };
    } else if (event.type === 'finish') {
      const index = part * p.n + event.index;
      const rest = textOf(index).finish(event.text);
      if (rest === null) throw new Error(`stream of choice ${index} diverged from its final text`);
      yield {
        ...base,
        choices: [{ index, text: rest, logprobs: logprobsBody(event.logprobs, 0), finish_reason: event.finishReason }],
        ...extra,
      };
    } else {
      usage = addUsage(usage, event.usage);
    }
  }
  if (p.includeUsage) yield { ...base, choices: [], usage: usageBody(usage) };
}
