"""The golden vectors the TypeScript engine must reproduce (test/engine/golden.test.ts): prompts, cases and
golden()."""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import replace

import numpy as np
import torch

from .batching import ReferenceSampler, result
from .dream import dream_generate_many
from .sampler import Params, dream_timesteps
from .weights import model_sha256

# --- golden vectors ---------------------------------------------------------------------------------------------

# The server's tokenizer (src/engine/model_folder.ts textTokenizer: @huggingface/tokenizers, no special tokens added on
# encode, none skipped on decode), for folders whose tokenizer.json dllm.tokenizer cannot encode (a converted Dream
# folder: Qwen2's pre-tokenizer, ChatML added tokens). Run with node from the repository root.
_NODE_TOKENIZER = """
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@huggingface/tokenizers';
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const r = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const tok = new Tokenizer(JSON.parse(readFileSync(r.tokenizer, 'utf8')), {});
process.stdout.write(JSON.stringify({
  encoded: r.encode.map((t) => tok.encode(t, { add_special_tokens: false }).ids),
  decoded: r.decode.map((ids) => ids.length === 0 ? '' :
    tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false })),
}));
"""


class ServerTokenizer:
    """encode / decode through the server's tokenizer library (node, @huggingface/tokenizers)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

    def _run(self, encode: list[str], decode: list[list[int]]) -> dict:
        proc = subprocess.run(["node", "--input-type=module", "-e", _NODE_TOKENIZER], cwd=self.root, check=True,
                              capture_output=True, text=True,
                              input=json.dumps({"tokenizer": self.path, "encode": encode, "decode": decode}))
        return json.loads(proc.stdout)

    def encode(self, text: str) -> list[int]:
        return self._run([text], [])["encoded"][0]

    def decode(self, ids: list[int]) -> str:
        return self._run([], [list(ids)])["decoded"][0]


def folder_tokenizer(model_dir: str):
    """The tokenizer golden prompts are encoded with: dllm.tokenizer for the tokenizers it writes (what the LLaDA
    fixtures were made with), the server's library for any other tokenizer.json."""
    from ..tokenizer import SPECIAL_TOKENS, Tokenizer

    path = os.path.join(model_dir, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    ours = ([t["content"] for t in spec.get("added_tokens") or []] == list(SPECIAL_TOKENS)
            and (spec.get("pre_tokenizer") or {}).get("type") == "ByteLevel" and spec.get("normalizer") is None)
    return Tokenizer.load(path) if ours else ServerTokenizer(path)


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
    # Dream's (Qwen2's) chat format.
    "<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n",
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
    # Frequency and presence penalties (penalized_row): with each confidence rule, threshold decoding, sampling and a
    # negative penalty.
    ("penalties-freq0.5-pres0.5-block8", 0, Params(max_tokens=32, steps=32, block_length=8, frequency_penalty=0.5,
                                                   presence_penalty=0.5), 1, None),
    ("penalties-pres1.5-threshold0.9", 2, Params(max_tokens=32, steps=32, block_length=16, threshold=0.9,
                                                 presence_penalty=1.5, frequency_penalty=0.3), 1, None),
    ("penalties-freq1-entropy", 6, Params(max_tokens=32, steps=32, block_length=32, remasking="entropy",
                                          frequency_penalty=1.0), 1, None),
    ("penalties-freq-0.5-margin-temperature0.8", 3, Params(max_tokens=32, steps=16, block_length=16, remasking="margin",
                                                           temperature=0.8, seed=5, frequency_penalty=-0.5), 1, None),
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
        (f"{_mode}-penalties-block8", 4, Params(max_tokens=32, steps=32, block_length=8, frequency_penalty=0.5,
                                                presence_penalty=0.5, cache=_mode), 1, None),
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


# A shifted-logits model (architecture dream) under Dream's sampler (Params.alg; reference/dream.py): greedy with
# alg_temp 0 only (the choices the engine makes without its RNG). The whole span as one block (Dream's own sampler:
# block_length = max_tokens) with steps = max_tokens, max_tokens / 2, 2 max_tokens (steps that commit nothing) and 1,
# blocks of 8 (Fast-dLLM's generalisation), the three confidences, two eps, min_tokens, ignore_eos, infill, n = 2, a
# chat prompt. Without a cache the mirror's tokens are checked against reference/dream.py (golden()); the cache modes
# (their steps approximate, so their own tokens) come from the mirror alone.
def _dream(alg: str, max_tokens: int, steps: int, block_length: int | None = None, **more) -> Params:
    return Params(max_tokens=max_tokens, steps=steps, block_length=block_length or max_tokens, alg=alg, **more)


DREAM_CASES = [
    ("maskgit_plus-whole-steps=len", 0, _dream("maskgit_plus", 32, 32), 1, None),
    ("topk_margin-whole-steps=len", 1, _dream("topk_margin", 32, 32), 1, None),
    ("entropy-whole-steps=len", 2, _dream("entropy", 32, 32), 1, None),
    ("entropy-whole-steps=len/2", 3, _dream("entropy", 32, 16), 1, None),
    ("maskgit_plus-whole-steps=len/2", 4, _dream("maskgit_plus", 48, 24), 1, None),
    ("topk_margin-whole-steps=2len", 5, _dream("topk_margin", 16, 32), 1, None),
    ("entropy-whole-steps=2len", 6, _dream("entropy", 16, 32), 1, None),
    ("maskgit_plus-whole-steps=1", 7, _dream("maskgit_plus", 16, 1), 1, None),
    ("entropy-whole-eps0.01", 0, _dream("entropy", 32, 32, eps=0.01), 1, None),
    ("topk_margin-whole-steps=len/2-eps0.01", 2, _dream("topk_margin", 32, 16, eps=0.01), 1, None),
    ("entropy-block8-steps=len", 1, _dream("entropy", 32, 32, 8), 1, None),
    ("maskgit_plus-block8-steps=len/2", 3, _dream("maskgit_plus", 32, 16, 8), 1, None),
    ("topk_margin-block8-steps=len", 4, _dream("topk_margin", 32, 32, 8), 1, None),
    ("entropy-min_tokens24", 5, _dream("entropy", 32, 32, min_tokens=24), 1, None),
    ("maskgit_plus-block8-min_tokens20", 6, _dream("maskgit_plus", 32, 32, 8, min_tokens=20), 1, None),
    ("entropy-ignore_eos", 7, _dream("entropy", 32, 32, ignore_eos=True), 1, None),
    ("maskgit_plus-infill", 1, _dream("maskgit_plus", 16, 16), 1, " and they lived happily ever after."),
    ("entropy-block8-infill", 4, _dream("entropy", 16, 16, 8), 1, " and they lived happily ever after."),
    ("topk_margin-n2", 3, _dream("topk_margin", 24, 24), 2, None),
    ("chat-entropy-whole", 9, _dream("entropy", 32, 32), 1, None),
    ("chat-maskgit_plus-block8-steps=len/2", 9, _dream("maskgit_plus", 32, 16, 8), 1, None),
    # Penalties (penalized_row) are the server's, not in the official code: the mirror alone (check_dream_case).
    ("entropy-block8-penalties", 5, _dream("entropy", 32, 32, 8, frequency_penalty=0.3, presence_penalty=1.5), 1, None),
    ("maskgit_plus-whole-presence1", 7, _dream("maskgit_plus", 32, 32, presence_penalty=1.0), 1, None),
]
for _mode in ("prefix", "dual"):
    DREAM_CASES += [
        (f"{_mode}-entropy-whole-steps=len", 0, _dream("entropy", 32, 32, cache=_mode), 1, None),
        (f"{_mode}-maskgit_plus-whole-steps=len/2", 1, _dream("maskgit_plus", 32, 16, cache=_mode), 1, None),
        (f"{_mode}-entropy-block8-steps=len", 2, _dream("entropy", 32, 32, 8, cache=_mode), 1, None),
        (f"{_mode}-maskgit_plus-block8-steps=len/2", 3, _dream("maskgit_plus", 32, 16, 8, cache=_mode), 1, None),
        (f"{_mode}-topk_margin-block8-n2", 4, _dream("topk_margin", 24, 24, 8, cache=_mode), 2, None),
        (f"{_mode}-entropy-block8-infill", 1, _dream("entropy", 16, 16, 8, cache=_mode), 1,
         " and they lived happily ever after."),
        (f"{_mode}-chat-entropy-block8", 9, _dream("entropy", 32, 32, 8, cache=_mode), 1, None),
        (f"{_mode}-entropy-block8-penalties", 5, _dream("entropy", 32, 32, 8, frequency_penalty=0.3, presence_penalty=1.5,
                                                        cache=_mode), 1, None),
    ]


def dream_schedule_agrees(steps_per_block: int, eps: float, max_masked: int) -> bool:
    """Whether the number a step commits (int(m * (1 - s / t)) in float32) is the same, for every step and every m up
    to max_masked, with torch.linspace's timesteps (PyTorch's CPU kernel, which fills vector chunks differently) and
    with the engine's formula, rounded per operation or fused (sampler.dream_timesteps): golden cases keep to such
    schedules, so their tokens do not depend on which of these an implementation computes."""
    variants = [torch.linspace(1, eps, steps_per_block + 1).numpy(), dream_timesteps(steps_per_block, eps),
                dream_timesteps(steps_per_block, eps, fused=True)]
    m = np.arange(1, max_masked + 1, dtype=np.float32)[:, None]
    counts = []
    for ts in variants:
        t, s = ts[:-2], ts[1:-1]  # every step but the last, which commits all that remain
        share = np.float32(1) - (s / t).astype(np.float32)
        counts.append(np.trunc((m * share[None, :]).astype(np.float32)))
    return all(np.array_equal(counts[0], c) for c in counts[1:])


def golden_cases(spec: dict) -> list[tuple[str, int, Params, int, str | None]]:
    """The golden cases of a model folder: GOLDEN_CASES for LLaDA, DREAM_CASES for a shifted-logits model (dream),
    BD3_BASE_CASES x {none, prefix} for block diffusion (block_length set to its block size)."""
    if spec.get("architecture") == "dream":
        return DREAM_CASES
    if spec.get("architecture") != "block_diffusion":
        return GOLDEN_CASES
    return [(f"{mode}-{name}", prompt, replace(params, block_length=spec["block_size"], cache=mode), n, None)
            for name, prompt, params, n in BD3_BASE_CASES for mode in ("none", "prefix")]


def check_dream_case(sampler: ReferenceSampler, name: str, prompt_ids: list[int], suffix_ids: list[int], params: Params,
                     n: int, seqs) -> float:
    """A Dream case: its schedule must not depend on how the timesteps are computed (dream_schedule_agrees), and
    without a cache the mirror's choices must equal reference/dream.py's (each choice alone, full-vocabulary float32
    logits) unless one of them saw a near-tie. Returns dream.py's smallest margin (inf with a cache, and with penalties,
    which the official code does not have)."""
    blocks = -(-params.max_tokens // params.block_length)
    if not dream_schedule_agrees(params.steps // blocks, params.eps, params.block_length):
        raise AssertionError(f"{name}: the commit counts of steps {params.steps} / eps {params.eps} depend on how the "
                             "timesteps are rounded; choose other steps or eps")
    if params.cache != "none" or params.frequency_penalty or params.presence_penalty:
        return math.inf
    reference = dream_generate_many(sampler.graph.model, sampler.spec, [prompt_ids], params, suffix_ids, n)[0]
    margin = min(r.min_margin for r in reference)
    mirror = [result(s) for s in seqs]
    if [r.as_golden() for r in reference] != mirror and min(margin, min(s.min_margin for s in seqs)) >= NEAR_TIE:
        raise AssertionError(f"{name}: the engine mirror and reference/dream.py disagree:\n{mirror}\n"
                             f"{[r.as_golden() for r in reference]}")
    return margin


def golden(sampler: ReferenceSampler, tokenizer, model_dir: str) -> dict:
    cases = []
    for name, prompt_index, params, n, suffix in golden_cases(sampler.spec):
        prompt = PROMPTS[prompt_index]
        prompt_ids = tokenizer.encode(prompt)
        suffix_ids = tokenizer.encode(suffix) if suffix else []
        seqs = [sampler.new_sequence(prompt_ids, params, suffix_ids, i) for i in range(n)]
        sampler.generate(seqs)
        margin = min(s.min_margin for s in seqs)
        if params.alg is not None:
            margin = min(margin, check_dream_case(sampler, name, prompt_ids, suffix_ids, params, n, seqs))
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
