// The text side of one choice: which text is stable (design.md §5: the longest mask-free prefix of the completion,
// minus what was already sent), stop strings, the final text, and OpenAI-style logprobs with text offsets.

import type { TextTokenizer } from './model_folder.js';
import type { TokenLogprob } from './sequence.js';
import { MASK_PLACEHOLDER, type TokenLogprobs } from './types.js';

/** What decoding a stable prefix shows when it ends inside a UTF-8 character (byte-level BPE). */
const REPLACEMENT = '\uFFFD';

export interface StableUpdate {
  /** Newly stable text, to append to what was sent. */
  delta: string;
  /** Set when a stop string appeared: the final text (cut before it); the choice finishes with `stop`. */
  stoppedText: string | null;
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string (held back until resolved). */
function pendingStopPrefix(text: string, stops: readonly string[]): number {
  let longest = 0;
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, text.length); n > longest; n--) {
      if (text.endsWith(stop.slice(0, n))) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

/** Index of the earliest stop string in `text`, or -1. */
export function findStop(text: string, stops: readonly string[]): number {
  let first = -1;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at >= 0 && (first < 0 || at < first)) first = at;
  }
  return first;
}

export class CompletionText {
  /** Text already sent as stable. */
  sent = '';

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly stops: readonly string[],
  ) {}

  /**
   * After a step of an unfinished sequence: `stablePrefix` is the generated tokens before the first mask (and
   * before any end-of-text, at most max_tokens). Holds back an incomplete trailing character and any tail that could
   * still become a stop string.
   */
  update(stablePrefix: readonly number[]): StableUpdate {
    let text = this.tokenizer.decode(stablePrefix);
    const stopAt = findStop(text, this.stops);
    if (stopAt >= 0) return this.finish(text.slice(0, stopAt), true);
    if (text.endsWith(REPLACEMENT)) text = text.slice(0, -1);
    text = text.slice(0, text.length - pendingStopPrefix(text, this.stops));
    return { delta: this.advance(text), stoppedText: null };
  }

  /** The sequence ended with these tokens: the final text (cut at a stop string) and the rest of it to send. */
  finalize(tokens: readonly number[]): StableUpdate {
    const text = this.tokenizer.decode(tokens);
    const stopAt = findStop(text, this.stops);
    return stopAt >= 0 ? this.finish(text.slice(0, stopAt), true) : this.finish(text, false);
  }

  private finish(text: string, stopped: boolean): StableUpdate {
    return { delta: this.advance(text), stoppedText: stopped ? text : null };
  }

  /** Sends what `text` adds to the sent text; text that does not extend it (never for byte-level BPE) waits. */
  private advance(text: string): string {
    if (!text.startsWith(this.sent) || text.length === this.sent.length) return '';
    const delta = text.slice(this.sent.length);
    this.sent = text;
    return delta;
  }

  /** Character offset of each token in the decoded text of `tokens`. */
  offsets(tokens: readonly number[]): number[] {
    return tokens.map((_, i) => (i === 0 ? 0 : this.tokenizer.decode(tokens.slice(0, i)).length));
  }

  /** How many of `tokens` the final text keeps: all of them, or after a stop cut those starting before the cut. */
  keptCount(tokens: readonly number[], finalText: string): number {
    if (finalText.length >= this.tokenizer.decode(tokens).length) return tokens.length;
    return this.offsets(tokens).filter((offset) => offset < finalText.length).length;
  }

  /** OpenAI completions logprobs for the kept tokens. */
  logprobs(ids: readonly number[], offsets: readonly number[], records: readonly (TokenLogprob | null)[]): TokenLogprobs {
    const text = (id: number): string => this.tokenizer.decode([id]);
    return {
      tokens: ids.map(text),
      tokenLogprobs: ids.map((_, i) => records[i]?.logprob ?? 0),
      topLogprobs: ids.map((_, i) => Object.fromEntries((records[i]?.top ?? []).map(([id, lp]) => [text(id), lp]))),
      textOffset: [...offsets],
    };
  }

  /** The generated span as text with masked positions shown as MASK_PLACEHOLDER (Mercury-style draft). */
  draft(generated: readonly number[], maskTokenId: number): string {
    let out = '';
    let run: number[] = [];
    for (const token of generated) {
      if (token === maskTokenId) {
        out += this.tokenizer.decode(run) + MASK_PLACEHOLDER;
        run = [];
      } else {
        run.push(token);
      }
    }
    return out + this.tokenizer.decode(run);
  }
}
