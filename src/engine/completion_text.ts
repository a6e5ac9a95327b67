// The text side of one choice: which text is stable (docs/design.md §5: the longest mask-free prefix of the completion,
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

/** Knuth–Morris–Pratt failure table of `stop`: entry i is the longest proper border of stop[0..i]. */
function failureTable(stop: string): Int32Array {
  const fail = new Int32Array(stop.length);
  for (let i = 1, k = 0; i < stop.length; i++) {
    while (k > 0 && stop.charCodeAt(i) !== stop.charCodeAt(k)) k = fail[k - 1];
    if (stop.charCodeAt(i) === stop.charCodeAt(k)) k++;
    fail[i] = k;
  }
  return fail;
}

/**
 * Length of the longest suffix of `text` that is a proper prefix of a stop string (held back until resolved).
 * One pass of the KMP matcher over the last (stop length - 1) characters: linear, where comparing every candidate
 * length was quadratic and let long stop strings hold the event loop for a quarter of a second per step
 * (docs/security.md, bounded work on the event loop).
 */
function pendingStopPrefix(text: string, stops: readonly string[], failures: readonly Int32Array[]): number {
  let longest = 0;
  stops.forEach((stop, j) => {
    const fail = failures[j];
    let k = 0;
    for (let i = Math.max(0, text.length - (stop.length - 1)); i < text.length; i++) {
      const c = text.charCodeAt(i);
      while (k > 0 && c !== stop.charCodeAt(k)) k = fail[k - 1];
      if (c === stop.charCodeAt(k)) k++;
      if (k === stop.length) k = fail[k - 1]; // a whole stop string: only proper prefixes are pending
    }
    longest = Math.max(longest, k);
  });
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
  private readonly failures: readonly Int32Array[];

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly stops: readonly string[],
  ) {
    this.failures = stops.map(failureTable);
  }

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
    text = text.slice(0, text.length - pendingStopPrefix(text, this.stops, this.failures));
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
