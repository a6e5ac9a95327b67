// Prompt text → token ids with bounded work on the event loop (docs/security.md, bounded work on the event loop).
// Two measures:
// 1. Text that provably cannot fit the context is refused before it is tokenized: a text of B UTF-8 bytes is at least
//    ceil(B / L) tokens, L being the most bytes one token stands for (engine/token_bound.ts, derived from the model
//    folder's tokenizer.json; no bound is assumed when the tokenizer does not allow a sound one).
// 2. What is left and large is tokenized (and chat templates rendered) on the tokenizer pool's threads; small texts
//    stay on the event loop, where they cost less than the hand-off and never wait behind a large one.

import type { ServingModel, ChatMessage } from './model.js';
import { renderChat } from './model.js';
import { ApiError, clip } from './errors.js';
import { minTokens } from '../engine/token_bound.js';
import { TokenizerPool } from './tokenizer_pool.js';

/** Texts up to this many UTF-8 bytes are tokenized inline (about 2 ms on one core of the 2-core test machine). */
export const INLINE_BYTES = 8 * 1024;
/**
 * Chats of at most this many messages and bytes are rendered inline. Rendering costs per message (about 20 µs each:
 * 30 000 messages took 0.7 s), while the text itself is only concatenated (3 ms for one message of 1 MiB, the default
 * body limit); so one long message is rendered, bounded and refused here, without a thread.
 */
export const INLINE_MESSAGES = 64;
export const INLINE_RENDER_BYTES = 1024 * 1024;

export class PromptEncoder {
  private readonly pool: TokenizerPool;

  constructor(
    private readonly model: ServingModel,
    opts: { threads: number; maxWaiting: number },
  ) {
    this.pool = new TokenizerPool({ dir: model.dir, threads: opts.threads, maxWaiting: opts.maxWaiting });
  }

  /**
   * Refuses `texts` (a prompt and its suffix, or a rendered chat) when together they cannot fit the context with BOS
   * and at least one generated position, whatever they tokenize to.
   */
  assertCanFit(texts: string[], param: string, what: string): void {
    const perToken = this.model.maxBytesPerToken;
    if (perToken === null) return;
    const atLeast = texts.reduce((sum, t) => sum + minTokens(t, perToken), 0);
    const bos = this.model.bosTokenId === null ? 0 : 1;
    if (atLeast + bos + 1 > this.model.maxSequenceLength) {
      const bytes = texts.reduce((sum, t) => sum + Buffer.byteLength(t, 'utf8'), 0);
      throw ApiError.contextLength(
        `This model's maximum context length is ${this.model.maxSequenceLength} tokens. However, ${what} is at least ` +
          `${atLeast} tokens long (${bytes} bytes of text, at most ${perToken} bytes per token). Please reduce the length of ${what}.`,
        param,
      );
    }
  }

  async encode(text: string): Promise<number[]> {
    if (Buffer.byteLength(text, 'utf8') <= INLINE_BYTES) return this.model.encode(text);
    return this.pool.encode(text);
  }

  /** The model's chat template applied to `messages` (a 400 when the template refuses them). */
  async render(messages: ChatMessage[]): Promise<string> {
    const bytes = messages.reduce((sum, m) => sum + Buffer.byteLength(m.content, 'utf8') + Buffer.byteLength(m.role, 'utf8'), 0);
    const inline = messages.length <= INLINE_MESSAGES && bytes <= INLINE_RENDER_BYTES;
    const r = inline ? renderInline(this.model, messages) : await this.pool.render(this.model.chatTemplate, messages);
    if ('templateError' in r) throw ApiError.invalid(`the chat template could not be applied: ${clip(r.templateError, 256)}`, 'messages');
    return r.text;
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

function renderInline(model: ServingModel, messages: ChatMessage[]): { text: string } | { templateError: string } {
  try {
    return { text: renderChat(model, messages) };
  } catch (err) {
    return { templateError: (err as Error).message };
  }
}
