"""The sampler, the mirror of the TypeScript engine's per-sequence logic (docs/design.md §4): the counter-based RNG
(src/engine/rng.ts), the per-position choice and commit rules (src/engine/sampler.ts), one choice's canvas
(src/engine/sequence.ts)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

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
