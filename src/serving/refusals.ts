// OpenAI request fields this server accepts in the schema but does not implement: refused by name when they carry
// anything but their neutral value, so that a client never silently gets something other than what it asked for.
// (Whether a supported value is valid is the engine's rule: engine/validation.ts.)

import type { ChatRequest } from '../schemas/chat.js';
import type { CompletionRequest } from '../schemas/completions.js';
import { ApiError } from './errors.js';

// logit_bias may lift any token of the vocabulary, and the head returns only each position's K best logits
// (engine/head.ts), so it cannot be applied; frequency and presence penalties can (engine/penalties.ts).
function refuseLogitBias(f: Pick<CompletionRequest, 'logit_bias'>): void {
  if (f.logit_bias != null && Object.keys(f.logit_bias).length > 0) throw ApiError.unsupported('logit_bias', 'is not supported: only {}');
}

export function refuseCompletionFields(body: CompletionRequest): void {
  refuseLogitBias(body);
  if (body.best_of != null && body.best_of !== 1 && body.best_of !== (body.n ?? 1)) {
    throw ApiError.unsupported('best_of', 'is not supported: only null, 1 or equal to n');
  }
  if (body.echo && body.logprobs != null) throw ApiError.unsupported('echo', 'together with logprobs is not supported');
}

export function refuseChatFields(body: ChatRequest): void {
  refuseLogitBias(body);
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
}
