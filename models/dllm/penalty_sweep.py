"""How a folder's greedy text changes with OpenAI's presence and frequency penalties (src/engine/penalties.ts), to
choose its generation defaults. Writes bench/penalties.md and bench/penalties.json.

Each pair is measured on TUNING_PROMPTS, 16 openings written for this choice and kept apart from quality.PROMPTS, so
that the bar quality.py checks is not measured on the prompts the defaults were picked on; then the chosen pair (the
first --chosen) also on quality.PROMPTS. Greedy at the folder's other defaults, through the reference sampler, with
quality.py's metrics (distinct-2, wamerican share, runs of one token, answer length).

    cd models && python3 -m dllm.penalty_sweep --model tiny-dream --chosen 1.5,0.5
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

from . import quality
from .reference import Params, load
from .report import write_report
from .tokenizer import Tokenizer

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(os.path.dirname(MODELS), "bench")

TUNING_PROMPTS = [
    "I opened the window and",
    "The children ran across the field",
    "He wrote a letter to his brother about",
    "At the market, the farmer",
    "She could not sleep because",
    "The museum was closed, so we",
    "Last winter the lake froze and",
    "The captain told his men that",
    "Our neighbour has a dog that",
    "In the morning the baker",
    "The teacher asked the class",
    "When the storm was over, the town",
    "The new bridge across the river",
    "My brother bought a car that",
    "Nobody knew why the bell",
    "The letter arrived on a Monday, and",
]
# (presence_penalty, frequency_penalty): off, then OpenAI's usual range of small values up to 2.
GRID = [(0.0, 0.0), (0.5, 0.5), (1.0, 0.3), (1.0, 0.5), (1.5, 0.3), (1.5, 0.5), (2.0, 0.2), (2.0, 0.4)]


def measure(sampler, tokenizer, prompts: list[str], params: Params, dictionary: set[str]) -> dict:
    m = quality.generation_metrics(quality.generate(sampler, tokenizer, prompts, params), dictionary)
    return {"distinct_bigrams": m["distinct_bigrams"]["ratio"], "dictionary_share": m["dictionary"]["share"],
            "no_token_runs": m["no_token_runs"], "mean_tokens": m["mean_tokens"], "non_empty": m["non_empty"]}


def markdown(result: dict) -> str:
    lines = [f"# Presence and frequency penalties on `{result['model']}`", "",
             f"`cd models && python3 -m dllm.penalty_sweep --model {result['model']} --chosen "
             f"{','.join(f'{v:g}' for v in result['chosen'])}` ({result['date']}). Greedy answers at the folder's other "
             f"defaults ({result['params']}), through the reference sampler; quality.py's metrics. The grid runs on "
             f"{len(TUNING_PROMPTS)} openings written for this choice (dllm/penalty_sweep.py TUNING_PROMPTS); the "
             "chosen pair is then checked on quality.py's 16, which took no part in the choice.", "",
             "| prompts | presence_penalty | frequency_penalty | distinct-2 | in wamerican | answers without 4-token runs "
             "| mean tokens |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["rows"]:
        lines.append(f"| {row['prompts']} | {row['presence']:g} | {row['frequency']:g} | {row['distinct_bigrams']:.3f} | "
                     f"{row['dictionary_share']:.3f} | {row['no_token_runs']:.2f} | {row['mean_tokens']:.1f} |")
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-dream")
    p.add_argument("--chosen", default="1.5,0.5", help="presence,frequency checked on quality.PROMPTS too")
    p.add_argument("--cache", default=os.path.join(MODELS, ".cache", "sources"), help="where wamerican is fetched")
    p.add_argument("--out", default=os.path.join(BENCH, "penalties"))
    args = p.parse_args(argv)
    model_dir = args.model if os.path.isdir(args.model) else os.path.join(MODELS, args.model)
    chosen = tuple(float(v) for v in args.chosen.split(","))
    dictionary, _ = quality.load_dictionary(args.cache)
    sampler, spec = load(model_dir)
    tokenizer = Tokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    base = replace(quality.greedy_params(spec), presence_penalty=0.0, frequency_penalty=0.0)
    rows = []
    for prompts_name, prompts, grid in (("tuning", TUNING_PROMPTS, GRID), ("quality.py", quality.PROMPTS, [chosen])):
        for presence, frequency in grid:
            params = replace(base, presence_penalty=presence, frequency_penalty=frequency)
            row = {"prompts": prompts_name, "presence": presence, "frequency": frequency}
            row |= measure(sampler, tokenizer, prompts, params, dictionary)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"model": spec["name"], "chosen": chosen, "date": time.strftime("%Y-%m-%d"),
              "params": f"{base.max_tokens} tokens, {base.steps} steps, block length {base.block_length}, "
                        + (f"Dream's sampler with alg {base.alg}" if base.alg else f"{base.remasking} remasking"),
              "rows": rows}
    write_report(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
