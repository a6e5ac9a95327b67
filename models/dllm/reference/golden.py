"""The golden vectors the TypeScript engine must reproduce (test/engine/golden.test.ts): prompts, cases and
golden()."""

from __future__ import annotations

import math
from dataclasses import replace

from .batching import ReferenceSampler, result
from .sampler import Params
from .weights import model_sha256

# --- golden vectors ---------------------------------------------------------------------------------------------

PROMPTS = [
    "The old man looked at the sea and said",
    "Once upon a time, there was a little girl who",
    "The committee announced on Tuesday that",
    "Q: What is the capital of France?\nA:",
    "She opened the door and",
    "The history of the city begins with",
    "He never thought that the letter would",
    "It was a dark and stormy night;",
    "<|start_header_id|>user<|end_header_id|>\n\nTell me about the sea.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
]

# A decision closer than this (logits, probabilities, entropies) may go either way between PyTorch and ONNX Runtime
# float32 arithmetic; cases with one are marked near_tie and the node test does not require them to match.
NEAR_TIE = 1e-6

# (name, prompt index, params, n, infill suffix text or None). Covers the grid of settings: block length 8 / 32 / whole
# span, steps = length and length / 2, low_confidence, random with a seed, threshold 0.9, guidance; and margin,
# entropy, factor, temperature with top_k / top_p, n = 2, infill.
GOLDEN_CASES = [
    ("lowconf-block8-steps=len", 0, Params(max_tokens=32, steps=32, block_length=8), 1, None),
    ("lowconf-block32-steps=len/2", 1, Params(max_tokens=32, steps=16, block_length=32), 1, None),
    ("lowconf-whole-span-steps=len", 2, Params(max_tokens=48, steps=48, block_length=48), 1, None),
    ("lowconf-block8-steps=len/2", 3, Params(max_tokens=32, steps=16, block_length=8), 1, None),
    ("random-seed7-block16", 0, Params(max_tokens=32, steps=32, block_length=16, remasking="random", seed=7), 1, None),
    ("threshold0.9-block32", 1, Params(max_tokens=64, steps=64, block_length=32, threshold=0.9), 1, None),
    ("threshold0.9-block8", 2, Params(max_tokens=32, steps=32, block_length=8, threshold=0.9), 1, None),
    ("guidance1.5-block16", 3, Params(max_tokens=16, steps=16, block_length=16, cfg_scale=1.5), 1, None),
    ("margin-block8", 0, Params(max_tokens=32, steps=16, block_length=8, remasking="margin"), 1, None),
    ("entropy-block32", 1, Params(max_tokens=32, steps=32, block_length=32, remasking="entropy"), 1, None),
    ("factor1-block16", 2, Params(max_tokens=32, steps=32, block_length=16, factor=1.0), 1, None),
    ("temperature0.8-seed42", 3, Params(max_tokens=32, steps=32, block_length=16, temperature=0.8, seed=42), 1, None),
    ("temperature1-topk5-topp0.9-n2", 0, Params(max_tokens=24, steps=24, block_length=8, temperature=1.0, top_k=5,
                                                top_p=0.9, seed=3), 2, None),
    ("infill-block16", 1, Params(max_tokens=16, steps=16, block_length=16), 1, " and they lived happily ever after."),
    ("lowconf-block16-steps=len", 4, Params(max_tokens=32, steps=32, block_length=16), 1, None),
    ("lowconf-block32-steps=len", 5, Params(max_tokens=64, steps=64, block_length=32), 1, None),
    ("lowconf-block8-steps=len/2-b", 6, Params(max_tokens=24, steps=12, block_length=8), 1, None),
    ("random-seed99-block8", 7, Params(max_tokens=32, steps=32, block_length=8, remasking="random", seed=99), 1, None),
    ("threshold0.9-whole-span", 4, Params(max_tokens=48, steps=48, block_length=48, threshold=0.9), 1, None),
    ("chat-lowconf-block16", 8, Params(max_tokens=32, steps=32, block_length=16), 1, None),
    ("chat-threshold0.9-block32", 8, Params(max_tokens=32, steps=32, block_length=32, threshold=0.9), 1, None),
    ("temperature0.5-seed7-random", 5, Params(max_tokens=32, steps=16, block_length=16, temperature=0.5, seed=7,
                                              remasking="random"), 1, None),
]
# The key/value cache modes (Fast-dLLM prefix and dual cache): the same sampler over the cached graph, whose cached
# steps differ from `none` (an approximation), so each mode has its own expected tokens. The node test runs them
# alone and all of a mode at once (batched), when the model folder has a cached graph (format 2).
for _mode in ("prefix", "dual"):
    GOLDEN_CASES += [
        (f"{_mode}-lowconf-block8-steps=len", 0, Params(max_tokens=32, steps=32, block_length=8, cache=_mode), 1, None),
        (f"{_mode}-lowconf-block16-steps=len/2", 1, Params(max_tokens=48, steps=24, block_length=16, cache=_mode), 1, None),
        (f"{_mode}-threshold0.9-block32", 6, Params(max_tokens=64, steps=64, block_length=32, threshold=0.9,
                                                    cache=_mode), 1, None),
        (f"{_mode}-margin-block8", 7, Params(max_tokens=32, steps=16, block_length=8, remasking="margin",
                                             cache=_mode), 1, None),
        (f"{_mode}-guidance1.5-block8", 3, Params(max_tokens=16, steps=16, block_length=8, cfg_scale=1.5,
                                                  cache=_mode), 1, None),
        (f"{_mode}-temperature0.8-n2", 2, Params(max_tokens=24, steps=24, block_length=8, temperature=0.8, seed=11,
                                                 cache=_mode), 2, None),
        (f"{_mode}-infill-block8", 1, Params(max_tokens=16, steps=16, block_length=8, cache=_mode), 1,
         " and they lived happily ever after."),
        (f"{_mode}-chat-block16", 8, Params(max_tokens=32, steps=32, block_length=16, cache=_mode), 1, None),
    ]


# A block diffusion model (architecture block_diffusion) decodes its own blocks left to right: block_length is its block
# size, and there is no infill or guidance. Each case runs without a cache and with the exact block cache (`prefix`);
# golden() checks that both give the same tokens, and the node test checks the engine against both.
BD3_BASE_CASES = [
    ("lowconf-steps=len", 0, Params(max_tokens=32, steps=32), 1),
    ("lowconf-steps=len/2", 1, Params(max_tokens=48, steps=24), 1),
    ("lowconf-max20", 2, Params(max_tokens=20, steps=20), 1),
    ("threshold0.9", 3, Params(max_tokens=64, steps=64, threshold=0.9), 1),
    ("margin", 4, Params(max_tokens=32, steps=16, remasking="margin"), 1),
    ("entropy", 5, Params(max_tokens=32, steps=32, remasking="entropy"), 1),
    ("random-seed7", 6, Params(max_tokens=32, steps=32, remasking="random", seed=7), 1),
    ("factor1", 7, Params(max_tokens=32, steps=32, factor=1.0), 1),
    ("temperature0.8-seed42-n2", 0, Params(max_tokens=24, steps=24, temperature=0.8, seed=42), 2),
    ("chat-lowconf", 8, Params(max_tokens=32, steps=32), 1),
]


def golden_cases(spec: dict) -> list[tuple[str, int, Params, int, str | None]]:
    """The golden cases of a model folder: GOLDEN_CASES for LLaDA, BD3_BASE_CASES x {none, prefix} for block
    diffusion (block_length set to its block size)."""
    if spec.get("architecture") != "block_diffusion":
        return GOLDEN_CASES
    return [(f"{mode}-{name}", prompt, replace(params, block_length=spec["block_size"], cache=mode), n, None)
            for name, prompt, params, n in BD3_BASE_CASES for mode in ("none", "prefix")]


def golden(sampler: ReferenceSampler, tokenizer, model_dir: str) -> dict:
    cases = []
    for name, prompt_index, params, n, suffix in golden_cases(sampler.spec):
        prompt = PROMPTS[prompt_index]
        prompt_ids = tokenizer.encode(prompt)
        suffix_ids = tokenizer.encode(suffix) if suffix else []
        seqs = [sampler.new_sequence(prompt_ids, params, suffix_ids, i) for i in range(n)]
        sampler.generate(seqs)
        margin = min(s.min_margin for s in seqs)
        cases.append({"name": name, "prompt": prompt, "prompt_token_ids": prompt_ids, "suffix": suffix or "",
                      "suffix_token_ids": suffix_ids, "n": n, "params": params.to_ts(),
                      "min_margin": margin if math.isfinite(margin) else None,
                      "near_tie": margin < NEAR_TIE, "expected": [result(s) for s in seqs]})
        print(f"{name}: " + " | ".join(repr(tokenizer.decode(r["token_ids"])) for r in cases[-1]["expected"]), flush=True)
        if sampler.spec.get("architecture") == "block_diffusion" and params.cache == "prefix":
            # The block cache is exact: the same tokens, steps and span as without it (the case before this one).
            if cases[-1]["expected"] != cases[-2]["expected"]:
                raise AssertionError(f"{name}: the block cache changed the output")
    # onnx_sha256: of model.onnx and, in format 2, its weights file after it (model_sha256).
    return {"model": sampler.spec["name"], "onnx_sha256": model_sha256(model_dir, sampler.spec), "cases": cases}
