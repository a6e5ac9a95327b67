"""The reference sampler's command line: golden vectors, one prompt, or the benchmark server of bench/engine.ts.

    cd models && python3 -m dllm.reference --golden ../test/fixtures/golden/tiny-llada.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from . import __doc__ as DESCRIPTION
from .batching import ReferenceSampler, result
from .golden import folder_tokenizer, golden
from .sampler import CACHE_MODES, DEFAULT_EPS, DREAM_ALGS, REMASKING_RULES, Params
from .weights import load


def bench(sampler: ReferenceSampler, workload: dict) -> list[dict]:
    """Times the benchmark workload of bench/engine.ts: each run generates all its prompts together."""
    out = []
    for run in workload["runs"]:
        params = Params(**run["params"])
        seqs = [sampler.new_sequence(ids, params) for ids in run["prompts"]]
        sampler.model_ms = 0.0
        t0 = time.perf_counter()
        steps = sampler.generate(seqs)
        wall = time.perf_counter() - t0
        out.append({"name": run["name"], "wall_s": wall, "model_s": sampler.model_ms / 1000, "batched_steps": steps,
                    "results": [result(s) for s in seqs]})
        print(f"reference {run['name']}: {wall:.2f} s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    # The repository root (models/dllm/reference/__main__.py is four levels down): the default model is its
    # models/tiny-llada whatever the working directory; other paths are relative to the working directory.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(root, "models", "tiny-llada"), help="model folder (dllm.json, model.onnx)")
    parser.add_argument("--checkpoint", help="PyTorch checkpoint to use instead of the weights inside model.onnx")
    parser.add_argument("--golden", help="write golden vectors (JSON) here")
    parser.add_argument("--prompt", help="generate from this prompt and print the text")
    parser.add_argument("--bench", action="store_true",
                        help="benchmark server for bench/engine.ts: read one run (JSON) per stdin line, answer one line")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--remasking", choices=REMASKING_RULES, default="low_confidence")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--cache", choices=CACHE_MODES, default="none", help="key/value cache mode (Fast-dLLM)")
    parser.add_argument("--alg", choices=DREAM_ALGS, help="Dream's sampler with this confidence (default: LLaDA's)")
    parser.add_argument("--alg-temp", type=float, default=0.0, help="Dream's alg_temp")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help="Dream's eps")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sampler, _ = load(args.model, args.checkpoint)
    tokenizer = folder_tokenizer(args.model)
    if args.bench:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            print(json.dumps(bench(sampler, {"runs": [json.loads(line)]})[0]), flush=True)
    if args.golden:
        data = golden(sampler, tokenizer, args.model)
        os.makedirs(os.path.dirname(os.path.abspath(args.golden)), exist_ok=True)
        with open(args.golden, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        print(f"wrote {len(data['cases'])} cases to {args.golden}")
    if args.prompt:
        params = Params(max_tokens=args.max_tokens, steps=args.steps, block_length=args.block_length,
                        remasking=args.remasking, threshold=args.threshold, temperature=args.temperature, seed=args.seed,
                        cache=args.cache, alg=args.alg, alg_temp=args.alg_temp, eps=args.eps)
        seq = sampler.new_sequence(tokenizer.encode(args.prompt), params)
        sampler.generate([seq])
        print(json.dumps({**result(seq), "text": tokenizer.decode(result(seq)["token_ids"])}))


if __name__ == "__main__":
    main()
