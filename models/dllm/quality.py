"""Quality of a model folder against the default model's bar (docs/models.md), measured through the reference sampler.

Rerunnable on any exported folder (the PyTorch module is rebuilt from model.onnx by dllm.reference.load):

- Greedy answers to PROMPTS (16 openings of everyday English written for this check; the run counts how many of
  them occur in the training text) at the folder's `generation_defaults`: how many are non-empty, their mean
  length in tokens, the share of their alphabetic words found in Debian's `wamerican` word list, and the ratio of
  distinct word bigrams (distinct-2, pooled over all answers).
- The same prompts under threshold decoding (low-confidence remasking, threshold 0.9): positions committed per
  denoising step, counted at each step of the sampler, and how probable each step's best position is (how far the
  model is from clearing the threshold).
- Validation loss: train.py's estimator (masked-token cross-entropy at the fixed t grid, fixed masks) on windows
  of the new validation split, for the folder and, with --old-model, for another folder on the same windows.

    cd models && nice -n 10 python3 -m dllm.quality --model tiny-llada --old-model /tmp/old --out /tmp/quality.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, fields, replace

import regex
import torch

from . import data, train
from .reference import Params, ReferenceSampler, Sequence, load, result, sha256
from .tokenizer import SPECIAL_TOKENS, Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)

# Everyday openings, written for this check (none is taken from the corpus; `prompts_in_training_text` in the
# output counts those found verbatim in train.txt).
PROMPTS = [
    "The weather this morning was",
    "My favourite way to spend a Sunday is",
    "When I got home from work, I",
    "The best thing about living in a small town is",
    "Before the meeting started, she",
    "Every summer our family used to",
    "The old house at the end of our street",
    "After dinner we decided to",
    "The train was late again, so",
    "My grandmother always told me that",
    "On the first day of school, the children",
    "The little shop on the corner sells",
    "It had been raining for three days when",
    "The doctor looked at the test results and",
    "If you want to learn to cook, you should",
    "We walked along the river until",
]

# Debian's American English word list, pinned like the corpus sources (data.fetch_debian).
DICTIONARY_PACKAGE = ("wamerican", "2020.12.07-2")
DICTIONARY_FILE = "usr/share/dict/american-english"

THRESHOLD = 0.9
VALID_WINDOWS, VALID_SEQ_LEN, VALID_SEED = 64, 256, 1234

# The default model's bar (docs/models.md): each target met when the measured value is at least it: (key, description,
# target).
TARGETS = [
    ("non_empty", "non-empty greedy answers", 15),
    ("mean_tokens", "mean greedy answer length (tokens)", 32),
    ("dictionary_share", "share of alphabetic words in wamerican", 0.97),
    ("distinct_bigrams", "distinct word bigrams / all word bigrams", 0.6),
    ("no_token_runs", "share of greedy answers with no token 4 or more times in a row", 1.0),
    ("commits_per_step", "positions committed per step, threshold {threshold:g}", 1.3),
    ("valid_improvement", "validation loss below the old model's (nats)", 0.3),
]
RUN_LIMIT = 4  # a token this many times in a row is a loop ("don't't't't"), not language

DEFINITIONS = {
    "non_empty": "an answer (the tokens before end-of-text, special tokens removed) with a non-whitespace character",
    "mean_tokens": "mean over all answers of the number of generated tokens before end-of-text (or max_tokens)",
    "words": "maximal runs of letters and digits, with inner apostrophes (don't, it's); alphabetic words are those "
             "with letters only (and apostrophes)",
    "dictionary_share": "alphabetic words found in wamerican's american-english list / all alphabetic words, "
                        "case-insensitive, a possessive 's stripped first; pooled over all answers",
    "distinct_bigrams": "distinct-2 (Li et al. 2016): distinct lower-cased word bigrams / all word bigrams, bigrams "
                        "taken within each answer and pooled over all answers",
    "no_token_runs": f"answers whose token ids never repeat one id {RUN_LIMIT} or more times in a row / all answers",
    "commits_per_step": "positions committed (unmasked) in the generated span / denoising steps, summed over all "
                        "prompts; counted at every step of the sampler",
    "validation": "train.py's validation_losses: mean cross-entropy per masked token at t in the fixed grid, each "
                  "token masked with probability t by a generator seeded with the seed, on evenly spaced windows of "
                  "the packed validation split (<|startoftext|> doc <|endoftext|> concatenated); mean over the grid",
}

_WORD = regex.compile(r"[\p{L}\p{N}]+(?:['\u2019][\p{L}\p{N}]+)*")
_ALPHA = regex.compile(r"\p{L}+(?:'\p{L}+)*")
_SPECIAL = regex.compile("|".join(regex.escape(t) for t in SPECIAL_TOKENS))


# --- metrics on text (pure functions) ---------------------------------------------------------------------------

def words(text: str) -> list[str]:
    """Word tokens (letters and digits, inner apostrophes kept, typographic ones made straight), in text order."""
    return [w.replace("\u2019", "'") for w in _WORD.findall(text)]


def alphabetic_words(text: str) -> list[str]:
    return [w for w in words(text) if _ALPHA.fullmatch(w)]


def dictionary_key(word: str) -> str:
    """Lower-cased, a possessive 's stripped (the form looked up in the word list)."""
    w = word.lower().replace("\u2019", "'")
    return w[:-2] if w.endswith("'s") and len(w) > 2 else w


def load_dictionary(cache: str) -> tuple[set[str], dict]:
    """wamerican's words (lower-cased) -> (set, provenance). Fetched as data.py fetches its Debian sources."""
    name, version = DICTIONARY_PACKAGE
    root, digest = data.fetch_debian(name, version, cache)
    with open(os.path.join(root, DICTIONARY_FILE), encoding="utf-8") as f:
        entries = [line.strip() for line in f if line.strip()]
    return dictionary_set(entries), {"package": f"debian:{name}", "version": version, "sha256": digest,
                                     "file": DICTIONARY_FILE, "entries": len(entries)}


def dictionary_set(entries: list[str]) -> set[str]:
    return {e.lower() for e in entries}


def dictionary_share(texts: list[str], dictionary: set[str]) -> dict:
    """Alphabetic words of all texts found in the dictionary (case-insensitive, possessive 's stripped)."""
    found = total = 0
    missing: dict[str, int] = {}
    for text in texts:
        for w in alphabetic_words(text):
            total += 1
            key = dictionary_key(w)
            if key in dictionary or w.lower() in dictionary:
                found += 1
            else:
                missing[key] = missing.get(key, 0) + 1
    top = sorted(missing.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return {"words": total, "in_dictionary": found, "share": found / total if total else None,
            "not_found": [{"word": w, "count": c} for w, c in top]}


def distinct_bigrams(texts: list[str]) -> dict:
    """distinct-2 pooled over texts: distinct (w1, w2) pairs of lower-cased words / all pairs (within each text)."""
    pairs = []
    for text in texts:
        ws = [w.lower() for w in words(text)]
        pairs += list(zip(ws, ws[1:]))
    return {"distinct": len(set(pairs)), "total": len(pairs), "ratio": len(set(pairs)) / len(pairs) if pairs else None}


def commit_rate(per_step: list[list[int]]) -> dict:
    """Per-sequence lists of positions committed at each step -> totals and committed positions per step."""
    committed = sum(sum(s) for s in per_step)
    steps = sum(len(s) for s in per_step)
    return {"committed": committed, "steps": steps, "per_step": committed / steps if steps else None}


# --- generation through the reference sampler ------------------------------------------------------------------

def record_commits(seq: Sequence) -> list[list[float]]:
    """Wraps seq.apply_step (behaviour unchanged) to record, per step, the probability of each token it commits: how
    many positions each step commits, and the best one's probability (with low-confidence remasking, the step's best
    position; threshold decoding commits more than one only where others also clear the threshold, so this shows how
    far a model is from doing so)."""
    steps: list[list[float]] = []
    apply_step = seq.apply_step

    def recorded(head, row, positions):
        commits = apply_step(head, row, positions)
        steps.append([probability for _, _, probability in commits])
        return commits

    seq.apply_step = recorded
    return steps


def confidence_profile(per_step: list[list[float]]) -> dict:
    """Per-sequence lists of each step's best committed probability -> median and the shares of steps at 0.5 and 0.9."""
    values = sorted(v for s in per_step for v in s)
    if not values:
        return {"steps": 0, "median": None, "at_least_0.5": None, "at_least_0.9": None}
    return {"steps": len(values), "median": values[len(values) // 2],
            "at_least_0.5": sum(v >= 0.5 for v in values) / len(values),
            "at_least_0.9": sum(v >= 0.9 for v in values) / len(values)}


def answer_text(tokenizer: Tokenizer, ids: list[int]) -> str:
    """The answer as the server decodes it (special tokens kept), for display."""
    return tokenizer.decode(ids)


def generate(sampler: ReferenceSampler, tokenizer: Tokenizer, prompts: list[str], params: Params) -> list[dict]:
    """All prompts in one batch (as the server batches them); each answer with its per-step commit counts."""
    seqs = [sampler.new_sequence(tokenizer.encode(p), params) for p in prompts]
    recorded = [record_commits(s) for s in seqs]
    sampler.generate(seqs)
    out = []
    for prompt, seq, steps in zip(prompts, seqs, recorded):
        c = [len(step) for step in steps]
        r = result(seq)
        filled = sum(t is not None for t in r["canvas"])
        if sum(c) != filled or len(c) != r["steps"]:  # the wrapper must see every step and every commit
            raise AssertionError(f"commit count {sum(c)}/{len(c)} steps != canvas {filled}/{r['steps']}")
        text = answer_text(tokenizer, r["token_ids"])
        out.append({"prompt": prompt, "text": text, "token_ids": r["token_ids"], "finish_reason": r["finish_reason"],
                    "steps": r["steps"], "commits": c, "best_confidence": [max(step) for step in steps if step]})  # Dream's sampler has steps that commit nothing
    return out


def plain(text: str) -> str:
    """An answer with special-token strings removed (what the word metrics read)."""
    return _SPECIAL.sub(" ", text)


def longest_run(ids: list[int]) -> int:
    """The most times one token id follows itself in a row (0 for no tokens)."""
    best = run = 0
    for i, t in enumerate(ids):
        run = run + 1 if i > 0 and ids[i - 1] == t else 1
        best = max(best, run)
    return best


def generation_metrics(answers: list[dict], dictionary: set[str]) -> dict:
    texts = [plain(a["text"]) for a in answers]
    runs = [longest_run(a["token_ids"]) for a in answers]
    return {
        "answers": len(answers),
        "non_empty": sum(bool(t.strip()) for t in texts),
        "mean_tokens": sum(len(a["token_ids"]) for a in answers) / len(answers),
        "finish_reasons": {r: sum(a["finish_reason"] == r for a in answers) for r in ("stop", "length")},
        "special_tokens": sum(len(_SPECIAL.findall(a["text"])) for a in answers),
        "dictionary": dictionary_share(texts, dictionary),
        "distinct_bigrams": distinct_bigrams(texts),
        "longest_runs": runs,
        "no_token_runs": sum(r < RUN_LIMIT for r in runs) / len(answers),
    }


# --- validation loss --------------------------------------------------------------------------------------------

def validation(model: torch.nn.Module, model_dir: str, corpus: str, windows: int, length: int, seed: int,
               max_sequence_length: int) -> tuple[dict, torch.Tensor]:
    if length > max_sequence_length:
        raise ValueError(f"{model_dir}: validation windows of {length} tokens exceed its context {max_sequence_length}")
    tokenizer = Tokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    x = train.validation_windows(tokenizer, os.path.join(corpus, "valid.txt"), windows, length)
    return train.validation_losses(model, x, seed), x


def model_files(model_dir: str, spec: dict) -> list[str]:
    """The files a model folder is made of: dllm.json, tokenizer.json, and the graphs and weight files dllm.json
    names (with an ONNX file's own `<file>.data` external data where present)."""
    names = ["dllm.json", "tokenizer.json"]
    for section in ("onnx", "cached", "weights"):
        value = spec.get(section)
        for v in (value.values() if isinstance(value, dict) else []):
            if isinstance(v, str) and os.path.isfile(os.path.join(model_dir, v)):
                names += [v] + ([v + ".data"] if os.path.isfile(os.path.join(model_dir, v + ".data")) else [])
    return sorted(set(names))


def folder_info(model_dir: str, spec: dict, model: torch.nn.Module) -> dict:
    files = {f: sha256(os.path.join(model_dir, f)) for f in model_files(model_dir, spec)}
    return {"dir": os.path.abspath(model_dir), "name": spec["name"], "format": spec.get("format"),
            "files_sha256": files, "digest": folder_digest(files),
            "parameters": sum(p.numel() for p in model.parameters()), "model_config": spec["model_config"]}


def folder_digest(files: dict[str, str]) -> str:
    """sha256 over the folder's model files (name and sha256 of each): changes with any weight, graph or setting."""
    return hashlib.sha256("".join(f"{n} {h}\n" for n, h in sorted(files.items())).encode()).hexdigest()


def prompts_in_text(prompts: list[str], path: str) -> int:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return sum(p in text for p in prompts)


def criteria(report: dict) -> list[dict]:
    g, v = report["greedy"]["metrics"], report["validation"]
    values = {
        "non_empty": g["non_empty"], "mean_tokens": g["mean_tokens"], "dictionary_share": g["dictionary"]["share"],
        "distinct_bigrams": g["distinct_bigrams"]["ratio"], "no_token_runs": g["no_token_runs"],
        "commits_per_step": report["threshold"]["commits"]["per_step"],
        "valid_improvement": v.get("improvement"),
    }
    out = []
    for key, what, target in TARGETS:
        value = values[key]
        what = what.format(threshold=report["threshold"]["params"]["threshold"])
        out.append({"key": key, "what": what, "value": value, "target": target,
                    "passed": None if value is None else bool(value >= target)})
    return out


def greedy_params(spec: dict) -> Params:
    """A folder's generation_defaults (dllm.json) as the reference sampler's Params, greedy (temperature 0)."""
    known = {f.name for f in fields(Params)}
    defaults = {k: v for k, v in spec["generation_defaults"].items() if k in known}
    # A dream folder's block_length null is the whole span, one block (Dream's sampler), as the server reads it.
    defaults["block_length"] = defaults.get("block_length") or defaults.get("max_tokens", Params.max_tokens)
    return replace(Params(**defaults), temperature=0.0)


def evaluate(model_dir: str, corpus: str, old_model: str | None = None, dictionary: tuple[set[str], dict] | None = None,
             cache: str | None = None, block_length: int | None = None, steps: int | None = None, kv_cache: str = "none",
             threshold: float = THRESHOLD, prompts: list[str] = PROMPTS, valid_windows: int = VALID_WINDOWS,
             valid_seq_len: int = VALID_SEQ_LEN, valid_seed: int = VALID_SEED, log=print) -> dict:
    started = time.time()
    if dictionary is None:
        dictionary = load_dictionary(cache or os.path.join(MODELS, ".cache", "sources"))
    words_set, dict_info = dictionary
    sampler, spec = load(model_dir)
    tokenizer = Tokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    greedy = greedy_params(spec)
    if block_length:
        greedy = replace(greedy, block_length=block_length)
    if steps:
        greedy = replace(greedy, steps=steps)
    # The key/value cache of the greedy and threshold answers: none (exact), or Fast-dLLM's prefix / dual, which the
    # server uses by default on a CPU (KV_CACHE) and whose steps approximate.
    greedy = replace(greedy, cache=kv_cache)
    # Threshold decoding is LLaDA's sampler (Fast-dLLM), also on a folder whose default is Dream's.
    thresh = replace(greedy, remasking="low_confidence", threshold=threshold, factor=None, alg=None)

    phases = {"load": time.time() - started}
    log(f"greedy answers: {len(prompts)} prompts, {asdict(greedy)}")
    t0 = time.time()
    answers = generate(sampler, tokenizer, prompts, greedy)
    phases["greedy"] = time.time() - t0
    log(f"threshold answers: threshold {threshold}")
    t0 = time.time()
    t_answers = generate(sampler, tokenizer, prompts, thresh)
    phases["threshold"] = time.time() - t0
    log(f"validation: {valid_windows} windows x {valid_seq_len} tokens, seed {valid_seed}")
    t0 = time.time()
    new_loss, windows = validation(sampler.graph.model, model_dir, corpus, valid_windows, valid_seq_len, valid_seed,
                                   spec["max_sequence_length"])
    report_valid = {"windows": int(windows.shape[0]), "length": int(windows.shape[1]), "seed": valid_seed,
                    "t_grid": list(train.VALID_T_GRID), "valid_sha256": sha256(os.path.join(corpus, "valid.txt")),
                    "new": new_loss}
    info = {"model": folder_info(model_dir, spec, sampler.graph.model)}
    if old_model:
        old_sampler, old_spec = load(old_model)
        old_loss, old_windows = validation(old_sampler.graph.model, old_model, corpus, valid_windows, valid_seq_len,
                                           valid_seed, old_spec["max_sequence_length"])
        info["old_model"] = folder_info(old_model, old_spec, old_sampler.graph.model)
        report_valid.update({"old": old_loss, "same_windows": bool(torch.equal(windows, old_windows)),
                             "improvement": old_loss["mean"] - new_loss["mean"]})
    phases["validation"] = time.time() - t0
    report = {
        **info,
        # the bar is defined at the folder's defaults and threshold 0.9
        "at_defaults": not (block_length or steps) and threshold == THRESHOLD,
        "prompts": prompts,
        "prompts_in_training_text": prompts_in_text(prompts, os.path.join(corpus, "train.txt")),
        "dictionary_source": dict_info,
        "greedy": {"params": asdict(greedy), "answers": answers, "metrics": generation_metrics(answers, words_set)},
        "threshold": {"params": asdict(thresh), "answers": t_answers,
                      "commits": commit_rate([a["commits"] for a in t_answers]),
                      "confidence": confidence_profile([a["best_confidence"] for a in t_answers]),
                      "metrics": generation_metrics(t_answers, words_set)},
        "validation": report_valid,
        "definitions": DEFINITIONS,
        "threads": torch.get_num_threads(),
        "seconds": None,
        "phase_seconds": {k: round(x, 1) for k, x in phases.items()},
    }
    report["criteria"] = criteria(report)
    report["seconds"] = round(time.time() - started, 1)
    return report


def summary(report: dict) -> str:
    g = report["greedy"]["metrics"]
    lines = [f"model {report['model']['dir']} ({report['model']['parameters']:,} parameters)", "",
             f"greedy answers ({report['greedy']['params']['max_tokens']} tokens, {report['greedy']['params']['steps']} "
             f"steps, block {report['greedy']['params']['block_length']}):"]
    for a in report["greedy"]["answers"]:
        lines.append(f"  {a['prompt']!r} -> {a['text']!r} ({len(a['token_ids'])} tokens, {a['finish_reason']})")
    lines += ["", f"threshold {report['threshold']['params']['threshold']} answers:"]
    for a in report["threshold"]["answers"]:
        lines.append(f"  {a['prompt']!r} -> {a['text']!r} ({len(a['token_ids'])} tokens in {a['steps']} steps)")
    c = report["threshold"]["confidence"]
    lines.append(f"  best committed probability per step: median {c['median']:.3f}, >= 0.5 in {c['at_least_0.5']:.1%}, "
                 f">= 0.9 in {c['at_least_0.9']:.1%} of {c['steps']} steps")
    nf = ", ".join(f"{x['word']} ({x['count']})" for x in g["dictionary"]["not_found"][:10])
    v = report["validation"]
    lines += ["", f"words not in wamerican (top): {nf or '-'}",
              f"validation ({v['windows']} x {v['length']} tokens, seed {v['seed']}): new {v['new']['mean']:.4f}"
              + (f", old {v['old']['mean']:.4f}, improvement {v['improvement']:.4f} nats"
                 + ("" if v["same_windows"] else " (WARNING: different tokenizers, different windows)") if "old" in v else ""),
              "", "criteria (the default model's bar)" + ("" if report["at_defaults"] else ", NOT at the folder's defaults / threshold 0.9") + ":"]
    for c in report["criteria"]:
        value = "n/a" if c["value"] is None else (f"{c['value']:.3f}" if isinstance(c["value"], float) else c["value"])
        mark = {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]]
        lines.append(f"  {mark:4}  {c['what']}: {value} (target >= {c['target']})")
    lines.append(f"\n{report['seconds']} s on {report['threads']} threads ({report['phase_seconds']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(MODELS, "tiny-llada"), help="model folder (dllm.json, model.onnx)")
    p.add_argument("--old-model", help="another model folder whose validation loss to compare (same windows)")
    p.add_argument("--corpus", default=os.path.join(MODELS, ".cache", "corpus"), help="folder with valid.txt (train.txt)")
    p.add_argument("--cache", default=os.path.join(MODELS, ".cache", "sources"), help="where wamerican is fetched")
    p.add_argument("--out", help="write the report (JSON) here")
    p.add_argument("--block-length", type=int, help="override generation_defaults.block_length (exploration)")
    p.add_argument("--steps", type=int, help="override generation_defaults.steps (exploration)")
    p.add_argument("--threshold", type=float, default=THRESHOLD)
    p.add_argument("--kv-cache", choices=("none", "prefix", "dual"), default="none",
                   help="key/value cache of the answers (the server's KV_CACHE; none is exact)")
    p.add_argument("--valid-windows", type=int, default=VALID_WINDOWS)
    p.add_argument("--valid-seq-len", type=int, default=VALID_SEQ_LEN)
    p.add_argument("--valid-seed", type=int, default=VALID_SEED)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = evaluate(args.model, args.corpus, args.old_model, cache=args.cache, block_length=args.block_length,
                      steps=args.steps, kv_cache=args.kv_cache, threshold=args.threshold, valid_windows=args.valid_windows,
                      valid_seq_len=args.valid_seq_len, valid_seed=args.valid_seed)
    print(summary(report))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
