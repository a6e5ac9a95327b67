"""Reference sampler of a masked diffusion language model (docs/design.md §4), in PyTorch + NumPy.

The TypeScript engine (src/engine/{rng,sampler,sequence}.ts) must reproduce it token for token; this module mirrors
it function for function and produces the golden vectors that test/engine/golden.test.ts checks. Semantics follow
LLaDA's generate() (Nie et al., "Large Language Diffusion Models", 2025; GitHub ML-GSAI/LLaDA generate.py): a canvas
of prompt + masks (+ an infill suffix), blocks decoded left to right, the linear commit schedule, Gumbel-max sampling
in float64, low_confidence / random remasking, classifier-free guidance; Dream's (HKUNLP/Dream) margin and entropy
confidences; Fast-dLLM's (NVlabs/Fast-dLLM) threshold and factor parallel decoding; end-of-text early stop.

The model step is SamplingGraph from export.py, i.e. exactly the computation of the exported ONNX graph.

Regenerate the golden vectors after the model changes (one command, from the repository root):

    python3 models/dllm/reference_generate.py --golden test/fixtures/golden/tiny-llada.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `dllm` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "dllm"

from dllm.export import (INPUT_NAMES, OPSET, OUTPUT_NAMES, TRANSPOSED, CachedSamplingGraph, SamplingGraph,  # noqa: E402
                         example_inputs)
from dllm.model import LLaDA, ModelConfig, load_checkpoint  # noqa: E402

REMASKING_RULES = ("low_confidence", "random", "margin", "entropy")
CACHE_MODES = ("none", "prefix", "dual")

# --- RNG (src/engine/rng.ts) -------------------------------------------------------------------------------

_U32 = np.uint32


def mix32(x: np.ndarray) -> np.ndarray:
    """Chris Wellons' lowbias32 hash on uint32 arrays (wrapping multiplication)."""
    x = np.asarray(x, dtype=_U32).reshape(-1)
    x = x ^ (x >> _U32(16))
    x = x * _U32(0x7FEB352D)
    x = x ^ (x >> _U32(15))
    x = x * _U32(0x846CA68B)
    return x ^ (x >> _U32(16))


class CounterRng:
    """Counter-based uniforms in (0, 1): draw c = f(seed, c), bit for bit as CounterRng in rng.ts."""

    def __init__(self, seed: int):
        if not 0 <= seed < 2**53:
            raise ValueError(f"seed must be an integer in [0, 2^53), got {seed}")
        lo, hi = seed % 2**32, seed // 2**32
        self.key = mix32(np.array([lo], dtype=np.uint64).astype(_U32) ^ mix32([(hi ^ 0x9E3779B9) & 0xFFFFFFFF]))
        self.counter = 0

    def draw(self, n: int) -> np.ndarray:
        c = np.arange(self.counter, self.counter + n, dtype=np.uint64)
        self.counter += n
        even = ((2 * c) & np.uint64(0xFFFFFFFF)).astype(_U32)
        odd = ((2 * c + np.uint64(1)) & np.uint64(0xFFFFFFFF)).astype(_U32)
        a = mix32(mix32(even) ^ self.key)
        b = mix32(mix32(odd) ^ self.key)
        return ((a >> _U32(6)).astype(np.float64) * 2.0**26 + (b >> _U32(6)).astype(np.float64) + 0.5) / 2.0**52

    def next(self) -> float:
        return float(self.draw(1)[0])


# --- per-position choice and commit selection (src/engine/sampler.ts) ------------------------------------------

@dataclass
class Params:
    """SamplingParams of types.ts (camelCase there)."""
    max_tokens: int = 32
    steps: int = 32
    block_length: int = 32
    remasking: str = "low_confidence"
    threshold: float | None = None
    factor: float | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    cfg_scale: float = 0.0
    seed: int | None = None
    cache: str = "none"  # key/value cache mode (Fast-dLLM): none | prefix | dual
    ignore_eos: bool = False  # vLLM's ignore_eos: end-of-text does not end the sequence (benchmarks)
    min_tokens: int = 0  # vLLM's min_tokens, adapted: no end-of-text is chosen at generated positions below it

    def to_ts(self) -> dict:
        """The SamplingParams object of the TypeScript engine."""
        return {"maxTokens": self.max_tokens, "steps": self.steps, "blockLength": self.block_length,
                "remasking": self.remasking, "threshold": self.threshold, "factor": self.factor,
                "temperature": self.temperature, "topP": self.top_p, "topK": self.top_k, "cfgScale": self.cfg_scale,
                "seed": self.seed, "stop": [], "logprobs": None, "cache": self.cache,
                **({"ignoreEos": True} if self.ignore_eos else {}),
                **({"minTokens": self.min_tokens} if self.min_tokens else {})}


@dataclass
class Head:
    """The graph's outputs as float32 / int NumPy arrays: [N, P, K], [N, P, K], [N, P], [N, P]."""
    topk_logits: np.ndarray
    topk_ids: np.ndarray
    logsumexp: np.ndarray
    entropy: np.ndarray


def candidate_count(logits: np.ndarray, p: Params) -> int:
    count = min(p.top_k, len(logits)) if p.top_k > 0 else len(logits)
    if p.top_p < 1 and p.temperature > 0:
        base = float(logits[0])
        weights = [math.exp((float(logits[i]) - base) / p.temperature) for i in range(count)]
        total = 0.0
        for w in weights:
            total += w
        cumulative = 0.0
        for i in range(count):
            cumulative += weights[i] / total
            if cumulative >= p.top_p:
                return i + 1
    return count


def choose_token(logits: np.ndarray, ids: np.ndarray, lse: float, p: Params, mask_id: int, rng: CounterRng | None,
                 banned: frozenset[int] = frozenset()):
    """(token id, rank among the K, logprob, margin): greedy, or Gumbel-max argmax l - T·log(-log u) in float64.

    margin (not in the TypeScript engine): how far the winner is ahead of the runner-up, to tell the golden test which
    decisions float32 rounding differences between PyTorch and ONNX Runtime could flip. The mask token and `banned`
    (end-of-text before min_tokens) are never chosen.
    """
    k = len(logits)
    allowed = [i for i in range(k) if int(ids[i]) != mask_id and int(ids[i]) not in banned]
    rank = allowed[0] if allowed else k - 1
    values = {i: float(logits[i]) for i in allowed}
    if p.temperature > 0:
        count = candidate_count(logits, p)
        uniforms = rng.draw(k)
        best = -math.inf
        values = {}
        for i in range(k):
            if i >= count or int(ids[i]) == mask_id or int(ids[i]) in banned:
                continue
            score = float(logits[i]) - p.temperature * math.log(-math.log(float(uniforms[i])))
            values[i] = score
            if score > best:
                best, rank = score, i
    others = [v for i, v in values.items() if i != rank]
    margin = values[rank] - max(others) if others and rank in values else math.inf
    return int(ids[rank]), rank, float(logits[rank]) - float(lse), margin


def selection_margin(scores: list[float], rule: tuple[str, float], chosen: int) -> float:
    """How far the commit decision is from flipping: score gaps at the cut, or distances to the threshold."""
    order = rank_by_score(scores)
    kind, value = rule
    gaps = []
    if kind == "fixed" and chosen < len(order):
        gaps.append(scores[order[chosen - 1]] - scores[order[chosen]])
    elif kind == "threshold":
        gaps += [abs(scores[i] - value) for i in order[1:]]
    elif kind == "factor":
        gaps += [abs(scores[order[i]] - (1 - value / (i + 2))) for i in range(1, min(chosen + 1, len(order)))]
    if kind != "fixed" and len(order) > 1:
        gaps.append(scores[order[0]] - scores[order[1]])
    return min(gaps, default=math.inf)


def confidence_score(rule: str, logits: np.ndarray, lse: float, entropy: float, logprob: float, uniform: float) -> float:
    if rule == "low_confidence":
        return math.exp(logprob)
    if rule == "margin":
        second = math.exp(float(logits[1]) - float(lse)) if len(logits) > 1 else 0.0
        return math.exp(float(logits[0]) - float(lse)) - second
    if rule == "entropy":
        return -float(entropy)
    if rule == "random":
        return uniform
    raise ValueError(f"unknown remasking rule {rule!r}")


def transfer_schedule(masked: int, steps: int) -> list[int]:
    effective = max(1, min(steps, masked))
    base, remainder = divmod(masked, effective)
    return [base + (1 if i < remainder else 0) for i in range(effective)]


def rank_by_score(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def select_commits(scores: list[float], rule: tuple[str, float]) -> list[int]:
    order = rank_by_score(scores)
    if not order:
        return []
    kind, value = rule
    if kind == "fixed":
        return order[: min(int(value), len(order))]
    if kind == "threshold":
        return [order[0]] + [i for i in order[1:] if scores[i] >= value]
    n = 1
    while n < len(order) and scores[order[n]] >= 1 - value / (n + 2):
        n += 1
    return order[:n]


# --- one choice's canvas (src/engine/sequence.ts) -------------------------------------------------------------

def generated_length(max_tokens: int, block_length: int) -> int:
    return -(-max_tokens // block_length) * block_length


def block_starts(gen_start: int, params: Params, block_size: int | None) -> list[int]:
    """Canvas indices where the generated span's blocks start, and its end (src/engine/sequence.ts blockStarts).

    LLaDA: max_tokens rounded up to whole blocks of block_length from the prompt's end. Block diffusion: the model's
    blocks are counted from position 0 (as in training), so the first generated block completes the prompt's last
    block (SDAR and Fast-dLLM v2 continue a prompt the same way), and the span ends after exactly max_tokens: under the
    block-causal rule nothing after it could change what comes before, so a last block cut short decodes only the
    positions that are returned (the trainer's random-length windows end in such blocks too)."""
    if block_size is None:
        length = generated_length(params.max_tokens, params.block_length)
        return list(range(gen_start, gen_start + length + 1, params.block_length))
    end = gen_start + params.max_tokens
    return [gen_start] + list(range((gen_start // block_size + 1) * block_size, end, block_size)) + [end]


class Sequence:
    def __init__(self, prefix: list[int], suffix: list[int], params: Params, mask_id: int, eos_ids: list[int], seed: int,
                 block_size: int | None = None):
        self.params, self.mask_id, self.eos = params, mask_id, set(eos_ids)
        self.block_size = block_size  # a block diffusion model's block size; None for LLaDA
        self.rng = CounterRng(seed)
        self.gen_start = len(prefix)
        self.block_starts = block_starts(self.gen_start, params, block_size)
        self.gen_length = self.block_starts[-1] - self.gen_start
        self.num_blocks = len(self.block_starts) - 1
        self.canvas = list(prefix) + [mask_id] * self.gen_length + list(suffix)
        self.block = self.step_in_block = self.steps = 0
        self.end: tuple[str, int] | None = None
        self.min_margin = math.inf  # smallest decision margin seen (see choose_token)
        self.schedule = self.block_schedule()
        # Per graph row (conditional, unconditional): keys/values [layers, 2, Hk, length, Dh] of canvas positions
        # 0 .. length-1: LLaDA's from the last refresh, a block diffusion model's appended block by block.
        self.kv: list[torch.Tensor] | None = None
        self.refreshes = self.cached_steps = 0

    def block_schedule(self) -> list[int]:
        """The linear schedule of the current block: its (all masked) positions over the block's steps. LLaDA: steps
        shared equally by the blocks. Block diffusion, whose first block may be short: a block of n positions gets
        ceil(n * steps / max_tokens) steps, so steps = max_tokens commits one token per step in every block."""
        start, end = self.block_range()
        if self.block_size is None:
            block_steps = max(1, self.params.steps // self.num_blocks)
        else:
            block_steps = max(1, -(-(end - start) * self.params.steps // self.params.max_tokens))
        return transfer_schedule(end - start, block_steps)

    def cache_frontier(self) -> int:
        """Block diffusion: the canvas positions before the model block holding the current block are final (every
        one committed, and no later position can change their keys/values), so their cache is exact."""
        return self.block_range()[0] // self.block_size * self.block_size

    def pass_kind(self) -> str:
        """How this step runs (src/engine/kv_cache.ts passKind): `full` (the whole canvas; with a cache mode it also
        refreshes the cache) at every block start, `cached` for the later steps of a block. A block diffusion model's
        cache is exact and only grows: one full pass (the prefill) and cached steps from then on."""
        if self.params.cache == "none" or self.kv is None:
            return "full"
        return "cached" if self.block_size is not None or self.step_in_block > 0 else "full"

    def kept_length(self) -> int:
        """Canvas positions a full pass's keys/values are kept for (src/engine/kv_cache.ts keptLength)."""
        if self.block_size is not None:
            return self.cache_frontier()
        return self.block_range()[0] if self.params.cache == "prefix" else len(self.canvas)

    def block_range(self) -> tuple[int, int]:
        return self.block_starts[self.block], self.block_starts[self.block + 1]

    @property
    def row_count(self) -> int:
        return 2 if self.params.cfg_scale > 0 else 1

    def wanted_positions(self) -> list[int]:
        start, end = self.block_range()
        return [i for i in range(start, end) if self.canvas[i] == self.mask_id]

    def unconditional_canvas(self) -> list[int]:
        gen_end = self.gen_start + self.gen_length
        return [t if self.gen_start <= i < gen_end else self.mask_id for i, t in enumerate(self.canvas)]

    def generated(self) -> list[int]:
        return self.canvas[self.gen_start:self.gen_start + self.gen_length]

    def commit_rule(self) -> tuple[str, float]:
        if self.params.factor is not None:
            return ("factor", self.params.factor)
        if self.params.threshold is not None:
            return ("threshold", self.params.threshold)
        return ("fixed", self.schedule[min(self.step_in_block, len(self.schedule) - 1)])

    def apply_step(self, head: Head, row: int, positions: list[int]) -> list[tuple[int, int, float]]:
        p = self.params
        choices, scores = [], []
        no_eos = frozenset(self.eos)
        for j in range(len(positions)):
            banned = no_eos if positions[j] - self.gen_start < p.min_tokens else frozenset()
            choices.append(choose_token(head.topk_logits[row, j], head.topk_ids[row, j], head.logsumexp[row, j], p,
                                        self.mask_id, self.rng if p.temperature > 0 else None, banned))
        for j in range(len(positions)):
            uniform = self.rng.next() if p.remasking == "random" else 0.0
            scores.append(confidence_score(p.remasking, head.topk_logits[row, j], head.logsumexp[row, j],
                                           head.entropy[row, j], choices[j][2], uniform))
        rule = self.commit_rule()
        selected = select_commits(scores, rule)
        self.min_margin = min([self.min_margin] + [c[3] for c in choices])
        if p.remasking != "random":  # random scores are the same uniforms in both implementations
            self.min_margin = min(self.min_margin, selection_margin(scores, rule, len(selected)))
        commits = []
        for j in selected:
            token, _, logprob, _ = choices[j]
            self.canvas[positions[j]] = token
            commits.append((positions[j] - self.gen_start, token, math.exp(logprob)))
        self.steps += 1
        self.step_in_block += 1
        if not self.wanted_positions():
            self.block += 1
            self.step_in_block = 0
            if self.block < self.num_blocks:
                self.schedule = self.block_schedule()
        self.end = self.check_end()
        return sorted(commits)

    def check_end(self) -> tuple[str, int] | None:
        limit = min(self.params.max_tokens, self.gen_length)
        for i in range(limit):
            token = self.canvas[self.gen_start + i]
            if token == self.mask_id:
                return None
            if token in self.eos and not self.params.ignore_eos:
                return ("stop", i)
        return ("length", limit)


# --- the loop: every unfinished sequence in one left-padded batch per step (src/engine/batch.ts) ----------------

def build_batch(entries: list[tuple[Sequence, list[int]]], pad_id: int):
    rows, row_of = [], []
    for seq, positions in entries:
        cond = len(rows)
        row_of.append(cond)
        if seq.params.cfg_scale > 0:
            rows.append((seq.canvas, positions, seq.params.cfg_scale, cond + 1))
            rows.append((seq.unconditional_canvas(), positions, 0.0, cond + 1))
        else:
            rows.append((seq.canvas, positions, 0.0, cond))
    length = max(len(r[0]) for r in rows)
    p = max(1, max(len(r[1]) for r in rows))
    n = len(rows)
    input_ids = torch.full((n, length), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((n, length), dtype=torch.int64)
    positions = torch.zeros((n, p), dtype=torch.int64)
    for r, (canvas, pos, _, _) in enumerate(rows):
        pad = length - len(canvas)
        input_ids[r, pad:] = torch.tensor(canvas)
        attention_mask[r, pad:] = 1
        positions[r] = torch.tensor([pad + pos[min(j, len(pos) - 1)] for j in range(p)])
    cfg_scale = torch.tensor([r[2] for r in rows], dtype=torch.float32)
    uncond_row = torch.tensor([r[3] for r in rows], dtype=torch.int64)
    return (input_ids, attention_mask, positions, cfg_scale, uncond_row), row_of


def cached_feeds(feeds):
    """A full pass as cached-graph feeds: the whole canvas is the query, positions from the mask, nothing cached."""
    input_ids, attention_mask, positions, cfg_scale, uncond_row = feeds
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, position_ids, attention_mask, None, positions, cfg_scale, uncond_row


def step_rows(seq: Sequence, positions: list[int]):
    """The graph rows of a cached step (src/engine/kv_cache.ts stepRows): per row (canvas, cache), the query span,
    the cached positions it sees, and which of them are masked out.

    Fast-dLLM's two modes (Wu et al. 2025, NVlabs/Fast-dLLM llada/generate.py generate_with_prefix_cache,
    generate_with_dual_cache): `prefix` queries the block and everything after it (later blocks, suffix) over the
    cached keys/values before the block; `dual` queries the block alone over the cached keys/values of every other
    position (before and after it) from the block start. In dual mode the cached entries of the block itself are
    masked out and its fresh keys/values come from the query, which equals Fast-dLLM's replace_position update.
    """
    start, end = seq.block_range()
    canvases = [seq.canvas] + ([seq.unconditional_canvas()] if seq.params.cfg_scale > 0 else [])
    rows = []
    for canvas, kv in zip(canvases, seq.kv):
        if seq.block_size is not None:
            # Block diffusion: everything not cached yet up to the block's end (the block, and right after a block
            # completes also that block, whose keys/values the step returns to be appended), over the whole cache.
            q_lo, q_hi, past_len, hidden = kv.shape[-2], end, kv.shape[-2], (0, 0)
        elif seq.params.cache == "prefix":
            q_lo, q_hi, past_len, hidden = start, len(canvas), start, (start, start)
        else:
            q_lo, q_hi, past_len, hidden = start, end, len(canvas), (start, end)
        rows.append({"query": canvas[q_lo:q_hi], "q_lo": q_lo, "past": kv[..., :past_len, :], "hidden": hidden,
                     "positions": [p - q_lo for p in positions], "cfg": seq.params.cfg_scale if len(rows) == 0 else 0.0})
    return rows


def build_step_batch(entries: list[tuple[Sequence, list[int]]], pad_id: int):
    """Cached-step feeds, left-padded like build_batch: row r's cached positions end at Lp and its query at Q, with the
    attention mask 0 on padding (and on the hidden cached positions)."""
    rows, row_of = [], []
    for seq, positions in entries:
        row_of.append(len(rows))
        for i, row in enumerate(step_rows(seq, positions)):
            row["partner"] = row_of[-1] + (1 if seq.params.cfg_scale > 0 else 0)
            rows.append(row)
    n = len(rows)
    lp = max(r["past"].shape[-2] for r in rows)
    q = max(len(r["query"]) for r in rows)
    p = max(1, max(len(r["positions"]) for r in rows))
    layers, _, hk, _, dh = rows[0]["past"].shape
    past_kv = torch.zeros((layers, 2, n, hk, lp, dh), dtype=torch.float32)
    attention_mask = torch.zeros((n, lp + q), dtype=torch.int64)
    input_ids = torch.full((n, q), pad_id, dtype=torch.int64)
    position_ids = torch.zeros((n, q), dtype=torch.int64)
    positions = torch.zeros((n, p), dtype=torch.int64)
    for r, row in enumerate(rows):
        past_len, q_len = row["past"].shape[-2], len(row["query"])
        past_pad, q_pad = lp - past_len, q - q_len
        past_kv[:, :, r, :, past_pad:, :] = row["past"]
        attention_mask[r, past_pad:lp] = 1
        lo, hi = row["hidden"]
        attention_mask[r, past_pad + lo:past_pad + hi] = 0
        attention_mask[r, lp + q_pad:] = 1
        input_ids[r, q_pad:] = torch.tensor(row["query"])
        position_ids[r, q_pad:] = torch.arange(row["q_lo"], row["q_lo"] + q_len)
        pos = row["positions"]
        positions[r] = torch.tensor([q_pad + pos[min(j, len(pos) - 1)] for j in range(p)])
    cfg_scale = torch.tensor([r["cfg"] for r in rows], dtype=torch.float32)
    uncond_row = torch.tensor([r["partner"] for r in rows], dtype=torch.int64)
    return (input_ids, position_ids, attention_mask, past_kv, positions, cfg_scale, uncond_row), row_of


def append_completed_blocks(seq: Sequence, present: torch.Tensor, row: int) -> None:
    """Block diffusion: a cached step's query starts at the end of the cache; its leading positions up to the cache
    frontier are blocks completed by the previous step, and their keys/values (present_kv, computed under the
    block-causal rule from clean tokens) are appended. present [layers, 2, N, Hk, Q, Dh], queries left-padded."""
    cached, end = seq.kv[0].shape[-2], seq.block_range()[1]
    count = seq.cache_frontier() - cached
    if count <= 0:
        return
    q_pad = present.shape[-2] - (end - cached)
    seq.kv = [torch.cat((kv, present[:, :, r, :, q_pad:q_pad + count, :]), dim=-2)
              for kv, r in zip(seq.kv, range(row, row + seq.row_count))]


class ReferenceSampler:
    def __init__(self, model: LLaDA, spec: dict):
        self.graph = SamplingGraph(model.eval(), spec["topk"])
        self.cached_graph = CachedSamplingGraph(model.eval(), spec["topk"])
        self.spec = spec
        self.model_ms = 0.0

    def run_cached(self, feeds) -> tuple[Head, torch.Tensor]:
        """The cached graph (export.CachedSamplingGraph); feeds with past_kv None run with nothing cached."""
        input_ids, position_ids, attention_mask, past_kv, *rest = feeds
        if past_kv is None:
            c = self.cached_graph.model.config
            past_kv = torch.zeros((c.n_layers, 2, input_ids.shape[0], c.effective_n_kv_heads, 0, c.head_dim))
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.cached_graph(input_ids, position_ids, attention_mask, past_kv, *rest)
        self.model_ms += (time.perf_counter() - t0) * 1000
        return Head(*(t.numpy() for t in out[:4])), out[4]

    def run(self, feeds) -> Head:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.graph(*feeds)
        self.model_ms += (time.perf_counter() - t0) * 1000
        return Head(*(t.numpy() for t in out))

    def new_sequence(self, prompt_ids: list[int], params: Params, suffix_ids: list[int] = (), choice: int = 0) -> Sequence:
        bos = self.spec.get("bos_token_id")
        prefix = ([bos] if bos is not None else []) + list(prompt_ids)
        seed = ((params.seed or 0) + choice) % 2**53
        block_size = self.spec.get("block_size") if self.spec.get("architecture") == "block_diffusion" else None
        if block_size is not None:
            # What the engine refuses for such a model (src/engine/validation.ts): it decodes left to right only.
            if params.block_length != block_size or suffix_ids or params.cfg_scale > 0 or params.cache == "dual":
                raise ValueError("block diffusion: block_length must be the model's block size; no suffix, guidance "
                                 "or dual cache")
        return Sequence(prefix, list(suffix_ids), params, self.spec["mask_token_id"], self.spec["eos_token_ids"], seed,
                        block_size)

    def generate(self, sequences: list[Sequence]) -> int:
        """Steps every sequence to its end, all unfinished ones batched per step. Returns the batched steps.

        Without a cache mode every sequence runs in one full batch (SamplingGraph, the graph of model.onnx). With
        one, a step has up to three graph runs, as in the engine: full passes without a cache, full passes that
        refresh the cache (block starts, through the cached graph), and cached steps."""
        steps = 0
        while True:
            active = [s for s in sequences if s.end is None]
            if not active:
                return steps
            groups = {"none": [], "refresh": [], "cached": []}
            for s in active:
                kind = s.pass_kind()
                groups["none" if s.params.cache == "none" else "refresh" if kind == "full" else "cached"].append(s)
            for kind, group in groups.items():
                if not group:
                    continue
                entries = [(s, s.wanted_positions()) for s in group]
                if kind == "cached":
                    feeds, row_of = build_step_batch(entries, self.spec["pad_token_id"])
                    head, present = self.run_cached(feeds)
                    for (seq, _), row in zip(entries, row_of):
                        seq.cached_steps += 1
                        if seq.block_size is not None:
                            append_completed_blocks(seq, present, row)
                else:
                    feeds, row_of = build_batch(entries, self.spec["pad_token_id"])
                    if kind == "none":
                        head = self.run(feeds)
                    else:
                        head, present = self.run_cached(cached_feeds(feeds))
                        mask = feeds[1]
                        for (seq, _), row in zip(entries, row_of):
                            # Each graph row's keys/values over its real (unpadded) positions.
                            # Each graph row's keys/values over its real (unpadded) positions, as far as they are
                            # ever read (prefix: before the block; block diffusion: the final blocks).
                            pad = [int((mask[r] == 0).sum()) for r in range(row, row + seq.row_count)]
                            seq.kv = [present[:, :, r, :, pad[i]:pad[i] + seq.kept_length(), :].clone()
                                      for i, r in enumerate(range(row, row + seq.row_count))]
                            seq.refreshes += 1
                for (seq, positions), row in zip(entries, row_of):
                    seq.apply_step(head, row, positions)
            steps += 1


def result(seq: Sequence) -> dict:
    """The choice's tokens, end and steps; `canvas`: the whole generated span when it ended (None = still masked)."""
    reason, length = seq.end
    canvas = [None if t == seq.mask_id else t for t in seq.generated()]
    return {"token_ids": seq.generated()[:length], "finish_reason": reason, "steps": seq.steps, "canvas": canvas}


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

# (name, prompt index, params, n, infill suffix text or None). Covers the grid: block length 8 / 32 / whole
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


def sha256(path: str, *more: str) -> str:
    """sha256 of the files' bytes one after the other."""
    h = hashlib.sha256()
    for name in (path, *more):
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_sha256(model_dir: str, spec: dict) -> str:
    """sha256 of model.onnx followed by its weights file (format 2 keeps the weights outside the graph)."""
    weights = (spec.get("weights") or {}).get("fp32")
    return sha256(os.path.join(model_dir, spec["onnx"]["fp32"]), *([os.path.join(model_dir, weights)] if weights else []))


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


def model_from_onnx(model_dir: str, spec: dict) -> LLaDA:
    """The PyTorch model holding exactly the weights of the folder's model.onnx.

    Graphs exported since issue 13 name every weight after its parameter (`name`, or `name^T` stored transposed:
    export.bind_weights). Older ones carry the exporter's counters (constant folding renamed and transposed the
    weights), so there the mapping is recovered by exporting, as they were exported, a model of the same config
    whose parameters are consecutive integers: each initializer then names the parameter it came from, and whether
    it was transposed.
    """
    import tempfile

    import onnx
    from onnx import numpy_helper

    model = LLaDA(ModelConfig.from_dict(spec["model_config"])).eval()
    params = dict(model.named_parameters())
    path = os.path.join(model_dir, spec["onnx"]["fp32"])
    named = {t.name: t for t in onnx.load(path).graph.initializer}
    if all(n in named or n + TRANSPOSED in named for n in params):
        state = {n: torch.from_numpy(numpy_helper.to_array(named[n]).copy()) if n in named else
                 torch.from_numpy(numpy_helper.to_array(named[n + TRANSPOSED]).T.copy()) for n in params}
        model.load_state_dict(state, strict=False)
        return model
    start, owner = 0, []
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.arange(start, start + p.numel(), dtype=torch.float32).view_as(p))
            owner.append((start, start + p.numel(), name))
            start += p.numel()
    if start >= 2**24:
        raise ValueError("model too large to recover its ONNX weight mapping with float32 integers; use --checkpoint")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        # The exporter as it was before issue 13: the module with its weights, constant folding on.
        torch.onnx.export(SamplingGraph(model, spec["topk"]), example_inputs(model.config.vocab_size),
                          os.path.join(tmp, "probe.onnx"), opset_version=OPSET, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, do_constant_folding=True,
                          dynamic_axes={n: {0: "N", 1: "L"} for n in ("input_ids", "attention_mask")})
        probe = [numpy_helper.to_array(t) for t in onnx.load(os.path.join(tmp, "probe.onnx")).graph.initializer]
    real = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer]
    # Initializer names carry exporter counters that differ between exports; their order and shapes do not.
    if [a.shape for a in probe] != [a.shape for a in real]:
        raise ValueError(f"{path}: initializers differ from an export of model_config; use --checkpoint")
    state = {}
    for values, weights in zip(probe, real):
        first = float(values.reshape(-1)[0]) if values.size else -1.0
        match = [(a, n) for a, b, n in owner if a <= first < b and first.is_integer()]
        if not match:
            continue
        a, name = match[0]
        target = params[name]
        expected = torch.arange(a, a + target.numel(), dtype=torch.float32).view_as(target).numpy()
        if values.shape == expected.shape and np.array_equal(values, expected):
            state[name] = torch.from_numpy(weights.copy())
        elif values.shape == expected.T.shape and np.array_equal(values, expected.T):
            state[name] = torch.from_numpy(weights.T.copy())
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"{model_dir}: could not find these weights in the ONNX graph: {missing[:5]}; use --checkpoint")
    model.load_state_dict(state, strict=False)
    return model


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


def load(model_dir: str, checkpoint: str | None = None) -> tuple[ReferenceSampler, dict]:
    """The folder's spec and a sampler over its weights: from the ONNX file itself, or from a PyTorch checkpoint."""
    with open(os.path.join(model_dir, "dllm.json")) as f:
        spec = json.load(f)
    model = load_checkpoint(checkpoint)[0] if checkpoint else model_from_onnx(model_dir, spec)
    return ReferenceSampler(model, spec), spec


def main(argv: list[str] | None = None) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dllm.tokenizer import Tokenizer

    sampler, _ = load(args.model, args.checkpoint)
    tokenizer = Tokenizer.load(os.path.join(args.model, "tokenizer.json"))
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
                        cache=args.cache)
        seq = sampler.new_sequence(tokenizer.encode(args.prompt), params)
        sampler.generate([seq])
        print(json.dumps({**result(seq), "text": tokenizer.decode(result(seq)["token_ids"])}))


if __name__ == "__main__":
    main()
