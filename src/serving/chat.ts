// POST /v1/chat/completions: messages → the model's chat template → one engine request; the chat choice shapes.

import type { GenerateRequest, TokenLogprobs } from '../engine/types.js';
import type { ChatRequest } from '../schemas/chat.js';
import { ApiError } from './errors.js';
import { completionId } from './ids.js';
import type { ServingModel } from './model.js';
import { resolveParams } from './params.js';
import type { Format, Prepared } from './pipeline.js';
import { prefixLength, validated } from './prepare.js';
import type { PromptEncoder } from './prompts.js';
import { refuseChatFields } from './refusals.js';

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

/**
 * chat.completion choices. OpenAI's first chunk of each choice carries the role. With `diffusing` (Inception
 * Mercury's convention) each step's content is the whole draft and the last one the whole text: replace, not append.
 */
function chatFormat(logprobs: boolean, diffusing: boolean): Format {
  const lp = (event: { logprobs?: TokenLogprobs }) => (logprobs ? chatLogprobs(event.logprobs) : null);
  return {
    endpoint: 'chat',
    object: 'chat.completion',
    chunkObject: 'chat.completion.chunk',
    opening: (choices) => choices.map(({ index }) => ({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null })),
    step: (index, text, event) => ({ index, delta: { content: diffusing ? (event.draft ?? '') : text }, logprobs: null, finish_reason: null }),
    finish: (index, rest, event) => ({
      index,
      delta: { content: diffusing ? event.text : rest },
      logprobs: lp(event),
      finish_reason: event.finishReason,
    }),
    choice: (index, _part, event) => ({
      index,
      message: { role: 'assistant', content: event.text, refusal: null },
      logprobs: lp(event),
      finish_reason: event.finishReason,
    }),
  };
}

export async function prepareChat(model: ServingModel, prompts: PromptEncoder, servedName: string, body: ChatRequest): Promise<Prepared> {
  if (body.model !== servedName) throw ApiError.modelNotFound(body.model);
  refuseChatFields(body);
  const messages = body.messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content: typeof m.content === 'string' ? m.content : m.content.map((part) => part.text).join(''),
  }));
  const promptText = await prompts.render(messages);
  prompts.assertCanFit([promptText], 'messages', 'the conversation');
  const ids = await prompts.encode(promptText);
  const logprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : null;
  const fields = { ...body, max_tokens: body.max_tokens ?? body.max_completion_tokens ?? null };
  const { params, n } = resolveParams(model, fields, prefixLength(model, ids, false), 0, logprobs);
  const id = completionId('chatcmpl');
  const diffusing = body.diffusing === true;
  const includeCanvas = body.include_canvas === true;
  const request: GenerateRequest = { id, promptTokenIds: ids, suffixTokenIds: [], params, n, includeCanvas: includeCanvas || diffusing };
  return {
    id,
    created: Math.floor(Date.now() / 1000),
    model: servedName,
    requests: [validated(model, request, 'messages')],
    n,
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    includeCanvas,
    format: chatFormat(logprobs !== null, diffusing),
  };
}
