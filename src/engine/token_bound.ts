// A lower bound on the number of tokens of a text, known without tokenizing it (docs/security.md, bounded work on the
// event loop): the API refuses a prompt that provably cannot fit the model's context before it spends any time on it.
//
// The bound: if the tokenizer keeps every byte of the text (no normaliser, a byte-level pre-tokenizer that drops
// nothing) and no token can stand for more than L bytes, a text of B UTF-8 bytes is at least ceil(B / L) tokens.
// L is read from tokenizer.json: the longest vocabulary entry (byte-level entries are one character per byte) and the
// longest added token (matched on the raw text, so its UTF-8 length). Any feature that breaks the argument makes the
// bound unknown (null), and the caller then tokenizes, off the event loop when the text is large:
// - a normaliser: NFC/NFKC, Lowercase, Replace, Strip can make the text shorter (NFC turns 9 bytes of Hangul jamo into
//   3), so B would overstate what the model sees;
// - a pre-tokenizer other than ByteLevel (alone or in a Sequence with Split/Digits, which only cut), or a Split that
//   removes what it matches;
// - a model other than BPE, or a BPE that fuses runs of unknown characters into one token (fuse_unk);
// - added tokens with lstrip/rstrip (they swallow the whitespace around them, any amount of it);
// - truncation in tokenizer.json (the text would be cut, not refused).

type Json = Record<string, unknown>;

const obj = (v: unknown): Json | null => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : null);

/** Pre-tokenizers that only cut the text and keep every byte of it, with one ByteLevel among them. */
function keepsEveryByte(pre: Json | null): boolean {
  if (pre === null) return false;
  const steps = pre.type === 'Sequence' && Array.isArray(pre.pretokenizers) ? pre.pretokenizers.map(obj) : [pre];
  let byteLevel = 0;
  for (const step of steps) {
    if (step === null) return false;
    if (step.type === 'ByteLevel') byteLevel++;
    else if (step.type === 'Digits') continue;
    else if (step.type === 'Split' && step.behavior !== 'Removed') continue;
    else return false;
  }
  return byteLevel === 1;
}

/** The most bytes of text one token can stand for, or null when tokenizer.json does not allow a sound bound. */
export function maxBytesPerToken(tokenizerJson: unknown): number | null {
  const t = obj(tokenizerJson);
  if (t === null || t.normalizer != null || t.truncation != null) return null;
  if (!keepsEveryByte(obj(t.pre_tokenizer))) return null;
  const model = obj(t.model);
  const vocab = obj(model?.vocab);
  if (model === null || model.type !== 'BPE' || vocab === null) return null;
  if (model.unk_token != null && model.fuse_unk === true) return null;
  let longest = 0;
  // Byte-level vocabulary entries spell each byte with one character (GPT-2's bytes_to_unicode).
  for (const piece of Object.keys(vocab)) longest = Math.max(longest, [...piece].length);
  const added = Array.isArray(t.added_tokens) ? t.added_tokens.map(obj) : [];
  for (const a of added) {
    if (a === null || typeof a.content !== 'string' || a.lstrip === true || a.rstrip === true) return null;
    longest = Math.max(longest, Buffer.byteLength(a.content, 'utf8'));
  }
  return longest > 0 ? longest : null;
}

/** At least this many tokens: ceil(UTF-8 bytes / maxBytesPerToken); 0 when the bound is unknown. */
export function minTokens(text: string, bytesPerToken: number | null): number {
  return bytesPerToken === null ? 0 : Math.ceil(Buffer.byteLength(text, 'utf8') / bytesPerToken);
}
