"""Byte-level BPE: our own trainer and encoder, written out as a Hugging Face `tokenizer.json`.

The format is GPT-2's byte-level BPE as the Hugging Face tokenizers library writes it (model type "BPE",
ByteLevel pre-tokenizer with GPT-2's split regex, ByteLevel decoder), so the npm package
`@huggingface/tokenizers` (what the server uses) and this module encode every text to the same ids.

Ids: the special tokens first (SPECIAL_TOKENS order), then the 256 byte symbols, then one id per merge.

    python3 -m dllm.tokenizer --corpus models/.cache/corpus/train.txt --vocab-size 4096 --out tokenizer.json
"""

from __future__ import annotations

import argparse
import collections
import json
from functools import lru_cache

import regex

# LLaDA's own special tokens where it has one (mask, end of text, chat headers), plus padding.
SPECIAL_TOKENS = (
    "<|pad|>",
    "<|endoftext|>",
    "<|mdm_mask|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|startoftext|>",
)
PAD, EOS, MASK, START_HEADER, END_HEADER, EOT, BOS = range(len(SPECIAL_TOKENS))

# GPT-2's pre-tokenizer split, the one HF's ByteLevel pre-tokenizer applies with use_regex = true.
GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (printable Latin-1 bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pre_tokenize(text: str) -> list[str]:
    """Text -> GPT-2 pieces, each as byte-level characters."""
    return ["".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8")) for piece in GPT2_SPLIT.findall(text)]


def train_bpe(documents: list[str], vocab_size: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn merges until the vocabulary (specials + 256 bytes + merges) has vocab_size entries.

    Classic BPE (Sennrich et al. 2016) over unique pieces weighted by frequency, with incremental pair counts:
    each merge only revisits the pieces that contain the merged pair. Ties break on the pair itself.
    """
    counts: collections.Counter[str] = collections.Counter()
    for doc in documents:
        counts.update(pre_tokenize(doc))
    words = [list(w) for w in counts]
    freqs = list(counts.values())
    pair_counts: collections.Counter[tuple[str, str]] = collections.Counter()
    where: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    for i, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += freqs[i]
            where[pair].add(i)

    n_merges = vocab_size - len(SPECIAL_TOKENS) - 256
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges and pair_counts:
        best = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        merges.append(best)
        for i in list(where[best]):
            w, f = words[i], freqs[i]
            for pair in zip(w, w[1:]):
                pair_counts[pair] -= f
                if pair_counts[pair] <= 0:
                    del pair_counts[pair]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for pair in zip(out, out[1:]):
                pair_counts[pair] += f
                where[pair].add(i)
        del where[best]
    vocab = list(SPECIAL_TOKENS) + [BYTE_TO_CHAR[b] for b in range(256)] + [a + b for a, b in merges]
    return vocab, merges


class Tokenizer:
    """Encoder/decoder over a tokenizer.json written by `to_hf_json` (also reads it back)."""

    def __init__(self, vocab: list[str], merges: list[tuple[str, str]]):
        self.vocab = vocab
        self.ids = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.merges = merges
        self._bpe = lru_cache(maxsize=1 << 18)(self._bpe_uncached)
        self._special = regex.compile("(" + "|".join(regex.escape(t) for t in SPECIAL_TOKENS) + ")")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _bpe_uncached(self, piece: str) -> tuple[int, ...]:
        """Apply merges lowest rank first, as the HF BPE model does."""
        symbols = list(piece)
        while len(symbols) > 1:
            ranked = [(self.ranks.get(p, 1 << 30), k) for k, p in enumerate(zip(symbols, symbols[1:]))]
            rank, k = min(ranked)
            if rank == 1 << 30:
                break
            symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
        return tuple(self.ids[s] for s in symbols)

    def encode(self, text: str) -> list[int]:
        """Text -> ids; special-token strings in the text become their ids (as HF's added tokens do)."""
        ids: list[int] = []
        for part in self._special.split(text):
            if part in self.ids and part in SPECIAL_TOKENS:
                ids.append(self.ids[part])
            elif part:
                for piece in pre_tokenize(part):
                    ids.extend(self._bpe(piece))
        return ids

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        out, buf = [], bytearray()
        for i in ids:
            tok = self.vocab[i]
            if i < len(SPECIAL_TOKENS):
                out.append(buf.decode("utf-8", errors="replace"))
                buf = bytearray()
                if not skip_special:
                    out.append(tok)
            else:
                buf.extend(CHAR_TO_BYTE[c] for c in tok)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def to_hf_json(self) -> dict:
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
                for i, t in enumerate(SPECIAL_TOKENS)
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": {t: i for i, t in enumerate(self.vocab)},
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_json(), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        model = spec["model"]
        vocab = [None] * len(model["vocab"])
        for tok, i in model["vocab"].items():
            vocab[i] = tok
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(vocab, merges)


def main() -> None:
    from .data import read_documents

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    vocab, merges = train_bpe(read_documents(args.corpus), args.vocab_size)
    Tokenizer(vocab, merges).save(args.out)
    print(f"wrote {args.out}: {len(vocab)} tokens, {len(merges)} merges")


if __name__ == "__main__":
    main()
