// POST /v1/chat/completions: messages → the model's chat template → one generation; events → chat objects/chunks.

import type { GenerateRequest, TokenLogprobs, Usage } from '../engine/types.js';
import type { ChatRequest, ChatResponse } from '../schemas/chat.js';
import { diffusionExt, usageBody, validate } from './completions.js';
import { ApiError } from './errors.js';
import { SYSTEM_FINGERPRINT, completionId } from './ids.js';
import type { ServingModel } from './model.js';
import type { ServingObserver } from './observe.js';
import { resolveParams } from './params.js';
import type { PromptEncoder } from './prompts.js';
import { Run, addUsage, admitted, collectChoices } from './run.js';
import { ChoiceText } from './text.js';

export interface PreparedChat {
  id: string;
  created: number;
  model: string;
  request: GenerateRequest;
  stream: boolean;
  includeUsage: boolean;
  includeCanvas: boolean;
  diffusing: boolean;
  logprobs: boolean;
}

export async function prepareChat(model: ServingModel, prompts: PromptEncoder, servedName: string, body: ChatRequest): Promise<PreparedChat> {
  if (body.model !== servedName) throw ApiError.modelNotFound(body.model);
  if (body.tools != null && body.tools.length > 0) throw ApiError.unsupported('tools', 'are not supported');
  if (body.tool_choice != null && body.tool_choice !== 'none') throw ApiError.unsupported('tool_choice', "is not supported: only 'none'");
  if (body.response_format != null && body.response_format.type !== 'text') {
    throw ApiError.unsupported('response_format', "is not supported: only {type: 'text'}");
  }
  if (body.store === true) throw ApiError.unsupported('store', 'is not supported: only false');
  if (body.service_tier != null && !['auto', 'default'].includes(body.service_tier)) {
    throw ApiError.unsupported('service_tier', "is not supported: only 'auto' or 'default'");
  }
  if (body.top_logprobs != null && body.top_logprobs > 0 && body.logprobs !== true) {
    throw ApiError.invalid('top_logprobs requires logprobs: true', 'top_logprobs');
  }
  if (body.max_tokens != null && body.max_completion_tokens != null && body.max_tokens !== body.max_completion_tokens) {
    throw ApiError.invalid('max_tokens and max_completion_tokens disagree; send one of them', 'max_completion_tokens');
  }
  const messages = body.messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((part) => part.text).join(''),
  }));
  const promptText = await prompts.render(messages);
  prompts.assertCanFit([promptText], 'messages', 'the conversation');
  const ids = await prompts.encode(promptText);
  const logprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : null;
  const fields = { ...body, max_tokens: body.max_tokens ?? body.max_completion_tokens ?? null };
  const r = resolveParams(model, fields, ids.length, 0, logprobs, 'messages');
  const id = completionId('chatcmpl');
  const diffusing = body.diffusing === true;
  const includeCanvas = body.include_canvas === true;
  const request: GenerateRequest = { id, promptTokenIds: ids, suffixTokenIds: [], params: r.params, n: r.n, includeCanvas: includeCanvas || diffusing };
  validate(model, request);
  return {
    id,
    created: Math.floor(Date.now() / 1000),
    model: servedName,
    request,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    includeCanvas,
    diffusing,
    logprobs: logprobs !== null,
  };
}

function chatLogprobs(lp: TokenLogprobs | undefined) {
  if (!lp) return null;
  const bytes = (s: string) => [...Buffer.from(s, 'utf8')];
  return {
    content: lp.tokens.map((token, i) => ({
      token,
      logprob: lp.tokenLogprobs[i],
      bytes: bytes(token),
      top_logprobs: Object.entries(lp.topLogprobs[i] ?? {}).map(([t, l]) => ({ token: t, logprob: l, bytes: bytes(t) })),
    })),
  };
}

export async function chatResponse(p: PreparedChat, run: Run, obs: ServingObserver): Promise<ChatResponse> {
  const { choices, usage } = await collectChoices(run, obs, 'chat', (_part, event): ChatResponse['choices'][number] => ({
    index: event.index,
    message: { role: 'assistant', content: event.text, refusal: null },
    logprobs: p.logprobs ? chatLogprobs(event.logprobs) : null,
    finish_reason: event.finishReason,
  }));
  return {
    id: p.id,
    object: 'chat.completion',
    created: p.created,
    model: p.model,
    system_fingerprint: SYSTEM_FINGERPRINT,
    choices,
    usage: usageBody(usage),
  };
}

export async function* chatChunks(p: PreparedChat, run: Run, obs: ServingObserver): AsyncGenerator<object> {
  const t0 = performance.now();
  let first = true;
  const texts = new Map<number, ChoiceText>();
  const base = { id: p.id, object: 'chat.completion.chunk', created: p.created, model: p.model, system_fingerprint: SYSTEM_FINGERPRINT };
  const extra = p.includeUsage ? { usage: null } : {};
  let usage: Usage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };
  const stop = p.request.params.stop;
  const textOf = (index: number) => {
    let t = texts.get(index);
    if (!t) {
      t = new ChoiceText(stop);
      texts.set(index, t);
    }
    return t;
  };
  const events = await admitted(run);
  // OpenAI's first chunk of each choice carries the role.
  yield {
    ...base,
    choices: Array.from({ length: p.request.n }, (_, index) => ({
      index,
      delta: { role: 'assistant', content: '' },
      logprobs: null,
      finish_reason: null,
    })),
    ...extra,
  };
  for await (const { event } of events) {
    if (event.type === 'step') {
      if (first) {
        first = false;
        obs.firstStep('chat', (performance.now() - t0) / 1000);
      }
      obs.step('chat');
      const delta = textOf(event.index).push(event.stableText);
      const content = p.diffusing ? (event.draft ?? '') : delta;
      yield {
        ...base,
        choices: [
          { index: event.index, delta: { content }, logprobs: null, finish_reason: null, diffusion: diffusionExt(event, p.includeCanvas) },
        ],
        ...extra,
      };
    } else if (event.type === 'finish') {
      const rest = textOf(event.index).finish(event.text);
      if (rest === null && !p.diffusing) throw new Error(`stream of choice ${event.index} diverged from its final text`);
      yield {
        ...base,
        choices: [
          {
            index: event.index,
            delta: { content: p.diffusing ? event.text : rest },
            logprobs: p.logprobs ? chatLogprobs(event.logprobs) : null,
            finish_reason: event.finishReason,
          },
        ],
        ...extra,
      };
    } else {
      usage = addUsage(usage, event.usage);
    }
  }
  if (p.includeUsage) yield { ...base, choices: [], usage: usageBody(usage) };
}
