"""Two recipes for the default model side by side: masked diffusion from scratch (tiny-llada) and an autoregressive
model adapted to diffusion (tiny-dream: Dream 7B's recipe; Gong et al. 2024), with the compute each took. Writes
bench/recipes.md and bench/recipes.json.

Each folder is measured by dllm.quality (the reference sampler, the same prompts, dictionary and validation windows)
at its own generation defaults, and under LLaDA's threshold decoding at 0.9 and 0.7. Compute is what the training
runs record (log.jsonl: steps, tokens, seconds); both models are the same transformer, so equal tokens are equal
training FLOPs.

    cd models && python3 -m dllm.recipes --recipe "masked diffusion from scratch=tiny-llada=3900:15877520:90.4" \
        --recipe "autoregressive, then adapted=tiny-dream=runs/tiny-ar,runs/tiny-dream"
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from . import quality
from .report import write_report

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(os.path.dirname(MODELS), "bench")
THRESHOLDS = (0.9, 0.7)
SAMPLES = 3  # greedy answers shown per model


def run_compute(runs: list[str]) -> dict:
    """Steps, tokens and minutes summed over training runs (their log.jsonl's last record each)."""
    steps = tokens = seconds = 0
    for run in runs:
        with open(os.path.join(run, "log.jsonl")) as f:
            last = [json.loads(line) for line in f if line.strip()][-1]
        steps, tokens, seconds = steps + last["step"], tokens + last["tokens"], seconds + last["seconds"]
    return {"steps": steps, "tokens": tokens, "minutes": round(seconds / 60, 1)}


def measure(model_dir: str, corpus: str, dictionary) -> dict:
    """dllm.quality at the folder's defaults (threshold 0.9), plus the threshold-0.7 figures."""
    report = quality.evaluate(model_dir, corpus, dictionary=dictionary, log=lambda *_: None)
    low = quality.evaluate(model_dir, corpus, dictionary=dictionary, threshold=THRESHOLDS[1], valid_windows=1,
                           log=lambda *_: None)
    g, t = report["greedy"]["metrics"], report["threshold"]
    return {
        "valid_mean": report["validation"]["new"]["mean"],
        "valid": report["validation"]["new"],
        "distinct_bigrams": g["distinct_bigrams"]["ratio"],
        "dictionary_share": g["dictionary"]["share"],
        "no_token_runs": g["no_token_runs"],
        "best_median": t["confidence"]["median"],
        "best_at_least_0.9": t["confidence"]["at_least_0.9"],
        "commits_0.9": t["commits"]["per_step"],
        "commits_0.7": low["threshold"]["commits"]["per_step"],
        "greedy_params": report["greedy"]["params"],
        "samples": [(a["prompt"], a["text"]) for a in report["greedy"]["answers"][:SAMPLES]],
    }


def markdown(rows: list[dict], when: str) -> str:
    base = rows[0]["compute"]["tokens"]
    shares = "; ".join(f"`{r['folder']}` saw {r['compute']['tokens'] / base:.0%} of `{rows[0]['folder']}`'s tokens"
                       for r in rows[1:])
    lines = [
        "# Default-model recipes",
        "",
        "The same transformer (3.7M parameters) trained two ways; equal tokens are equal training compute. "
        + (shares + ". " if shares else "") + "Wall minutes depend on how busy the machine was.",
        "",
        f"`cd models && python3 -m dllm.recipes` ({when}); the figures are `dllm.quality`'s (definitions in docs/models.md): "
        "validation masked-token loss on its fixed windows and masks (nats per masked token, mean over t = 0.1 … 0.9, "
        "shifted predictions for the adapted model), greedy answers to its 16 prompts at each folder's defaults, "
        "threshold decoding with LLaDA's sampler.",
        "",
        "| recipe | folder | steps | tokens | wall minutes (2 threads) | validation loss | distinct-2 | in wamerican | answers "
        "without 4-token runs | best position p (median) | best p >= 0.9 | positions/step at 0.9 | at 0.7 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        m, c = r["metrics"], r["compute"]
        lines.append(f"| {r['recipe']} | `{r['folder']}` | {c['steps']:,} | {c['tokens']:,} | {c['minutes']} | "
                     f"{m['valid_mean']:.3f} | {m['distinct_bigrams']:.3f} | {m['dictionary_share']:.3f} | "
                     f"{m['no_token_runs']:.2f} | {m['best_median']:.3f} | {m['best_at_least_0.9']:.1%} | "
                     f"{m['commits_0.9']:.2f} | {m['commits_0.7']:.2f} |")
    for r in rows:
        p = r["metrics"]["greedy_params"]
        sampler = f"Dream's sampler, alg {p['alg']}" if p.get("alg") else f"remasking {p['remasking']}"
        sampler += "".join(f", {k.replace('_', ' ')} {p[k]:g}" for k in ("presence_penalty", "frequency_penalty") if p.get(k))
        lines += ["", f"Greedy samples of `{r['folder']}` ({p['max_tokens']} tokens, {p['steps']} steps, block "
                      f"{p['block_length']}, {sampler}):", ""]
        lines += [f"- {prompt!r} → {text!r}" for prompt, text in r["metrics"]["samples"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", action="append", required=True, metavar="LABEL=FOLDER=COMPUTE",
                   help="a recipe's label, its model folder, and its compute: comma-separated training run folders "
                        "(their log.jsonl), or steps:tokens:minutes when the runs are not at hand")
    p.add_argument("--corpus", default=os.path.join(MODELS, ".cache", "corpus"))
    p.add_argument("--cache", default=os.path.join(MODELS, ".cache", "sources"))
    p.add_argument("--out", default=os.path.join(BENCH, "recipes"))
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dictionary = quality.load_dictionary(args.cache)
    rows = []
    for spec in args.recipe:
        label, folder, compute = spec.split("=", 2)
        if ":" in compute:
            steps, tokens, minutes = compute.split(":")
            work = {"steps": int(steps), "tokens": int(tokens), "minutes": float(minutes)}
        else:
            work = run_compute(compute.split(","))
        model_dir = folder if os.path.isabs(folder) else os.path.join(MODELS, folder)
        rows.append({"recipe": label, "folder": os.path.basename(model_dir), "compute": work,
                     "metrics": measure(model_dir, args.corpus, dictionary)})
        print(json.dumps({k: v for k, v in rows[-1]["metrics"].items() if k != "samples"}), flush=True)
    when = time.strftime("%Y-%m-%d", time.gmtime())
    write_report(args.out, {"date": when, "rows": rows}, markdown(rows, when), indent=1)


if __name__ == "__main__":
    main()
