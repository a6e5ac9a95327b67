"""The sampler, the mirror of the TypeScript engine's per-sequence logic (docs/design.md §4): the counter-based RNG
(src/engine/rng.ts), the per-position choice and commit rules (src/engine/sampler.ts), the frequency and presence
penalties (src/engine/penalties.ts), one choice's canvas (src/engine/sequence.ts)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

REMASKING_RULES = ("low_confidence", "random", "margin", "entropy")
CACHE_MODES = ("none", "prefix", "dual")
# Dream's sampler (HKUNLP Dream, generation_utils.py `_sample`; src/engine/dream.ts), chosen by Params.alg.
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
DEFAULT_EPS = 1e-3  # Dream's DreamGenerationConfig.eps

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
    # Dream's sampler (src/engine/dream.ts): alg None = LLaDA's (remasking, threshold, factor). block_length stays an
    # int: Dream's whole span as one block (block_length null in a request) is block_length = max_tokens.
    alg: str | None = None  # origin | maskgit_plus | topk_margin | entropy
    alg_temp: float = 0.0  # 0: the most confident positions; > 0: drawn from softmax(confidence / alg_temp)
    eps: float = DEFAULT_EPS  # the last timestep: timesteps run from 1 down to eps
    # OpenAI's penalties over the tokens committed in the generated span (penalized_row); 0 = off.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def to_ts(self) -> dict:
        """The SamplingParams object of the TypeScript engine."""
        return {"maxTokens": self.max_tokens, "steps": self.steps, "blockLength": self.block_length,
                "remasking": self.remasking, "threshold": self.threshold, "factor": self.factor,
                "temperature": self.temperature, "topP": self.top_p, "topK": self.top_k, "cfgScale": self.cfg_scale,
                "seed": self.seed, "stop": [], "logprobs": None, "cache": self.cache,
                **({"ignoreEos": True} if self.ignore_eos else {}),
                **({"minTokens": self.min_tokens} if self.min_tokens else {}),
                **({"alg": self.alg, "algTemp": self.alg_temp, "eps": self.eps} if self.alg is not None else {}),
                **({"frequencyPenalty": self.frequency_penalty} if self.frequency_penalty else {}),
                **({"presencePenalty": self.presence_penalty} if self.presence_penalty else {})}


@dataclass
class Head:
    """The graph's outputs as float32 / int NumPy arrays: [N, P, K], [N, P, K], [N, P], [N, P]."""
    topk_logits: np.ndarray
    topk_ids: np.ndarray
    logsumexp: np.ndarray
    entropy: np.ndarray


def penalized_row(head: Head, row: int, counts: dict[int, int], frequency: float, presence: float) -> Head:
    """One row of the head with the penalties applied (src/engine/penalties.ts penalizedRow): candidate j's logit
    drops by c_j * frequency + presence when it was committed c_j > 0 times; the candidates are re-sorted (ties keep
    the head's order); logsumexp and entropy are those of the penalised full softmax, corrected for the penalised
    candidates: R = 1 - mass + new_mass, lse' = lse + log R, H' = (H - E + E') / R + log R."""
    logits, ids = head.topk_logits[row], head.topk_ids[row]
    positions, k = logits.shape
    out_logits = np.empty((1, positions, k), dtype=np.float32)
    out_ids = np.empty((1, positions, k), dtype=ids.dtype)
    out_lse = np.empty((1, positions), dtype=np.float64)
    out_entropy = np.empty((1, positions), dtype=np.float64)
    for pos in range(positions):
        lse = float(head.logsumexp[row, pos])
        values = []
        mass = entropy_share = new_mass = new_entropy_share = 0.0
        for i in range(k):
            count = counts.get(int(ids[pos, i]), 0)
            d = 0.0 if count == 0 else count * frequency + presence
            values.append(float(logits[pos, i]) - d)
            if d == 0:
                continue
            log_prob = float(logits[pos, i]) - lse
            prob, new_prob = math.exp(log_prob), math.exp(log_prob - d)
            mass += prob
            entropy_share -= prob * log_prob
            new_mass += new_prob
            new_entropy_share -= new_prob * (log_prob - d)
        ratio = max(1 - mass + new_mass, 5e-324)  # the smallest positive float64, as Number.MIN_VALUE
        log_ratio = math.log(ratio)
        out_lse[0, pos] = lse + log_ratio
        out_entropy[0, pos] = (float(head.entropy[row, pos]) - entropy_share + new_entropy_share) / ratio + log_ratio
        order = sorted(range(k), key=lambda i: (-values[i], i))
        out_logits[0, pos] = [values[i] for i in order]
        out_ids[0, pos] = [ids[pos, i] for i in order]
    return Head(out_logits, out_ids, out_lse, out_entropy)


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
                 banned: frozenset[int] = frozenset(), allow_mask: bool = False):
    """(token id, rank among the K, logprob, margin): greedy, or Gumbel-max argmax l - T·log(-log u) in float64.

    margin (not in the TypeScript engine): how far the winner is ahead of the runner-up, to tell the golden test which
    decisions float32 rounding differences between PyTorch and ONNX Runtime could flip. The mask token (unless
    allow_mask: Dream's sampler before a block's last step) and `banned` (end-of-text before min_tokens) are never
    chosen.
    """
    k = len(logits)
    if allow_mask:
        mask_id = -1
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


# --- Dream's sampler (src/engine/dream.ts) ------------------------------------------------------------------------

_F32 = np.float32


def dream_timesteps(steps: int, eps: float, fused: bool = False) -> np.ndarray:
    """Dream's timesteps torch.linspace(1, eps, steps + 1) in float32: the step (eps - 1) / steps in float32, the first
    (steps + 1) // 2 values start + step * i, the others end - step * (steps - i). fused (what dream.ts dreamTimesteps
    computes and the Sequence mirror uses): product and sum rounded once, as a fused multiply-add does, so the scalar
    elements of PyTorch's AVX2 / AVX512 CPU kernels and, presumably, its CUDA kernel under nvcc's default contraction
    (not checked here: no GPU); otherwise each product and sum rounded to float32. PyTorch's CPU kernel itself differs from both once two
    whole vectors fit (16 values with AVX2): it fills vector chunks as base + k * step. tests/test_reference_dream.py
    pins this."""
    start, end = _F32(1.0), _F32(eps)
    step = _F32(end - start) / _F32(steps)
    count, out = steps + 1, np.empty(steps + 1, dtype=_F32)
    for i in range(count):
        if fused:
            exact = float(start) + float(step) * i if i < count // 2 else float(end) - float(step) * (steps - i)
            out[i] = _F32(exact)  # exact in float64 for these magnitudes, then one rounding
        else:
            out[i] = start + step * _F32(i) if i < count // 2 else end - step * _F32(steps - i)
    return out


def dream_share(t: float, s: float) -> float:
    """1 - s / t in float32: the share of the masked positions a step from time t to s commits."""
    return float(_F32(1) - _F32(_F32(s) / _F32(t)))


def dream_count(masked: int, t: float, s: float, last: bool) -> int:
    """int(masked * (1 - s / t)) in float32 (truncated), as `_sample` computes it with float32 tensors; at the block's
    last step every remaining position."""
    return masked if last else int(_F32(masked) * _F32(dream_share(t, s)))


def dream_confidence(alg: str, logits: np.ndarray, ids: np.ndarray, lse: float, entropy: float, rank: int,
                     logprob: float, p: Params) -> float:
    """A masked position's confidence under `alg` (dream.ts dreamConfidence): maskgit_plus p(chosen), topk_margin
    p(top 1) - p(top 2), entropy sum p log(p + 1e-10) = -H; origin none (0). Greedy without top_k / top_p from the
    head's full-vocabulary logsumexp and entropy; otherwise of softmax(l / T) over the candidates (the K cut by top_k,
    top_p), as dream.ts does."""
    if alg == "origin":
        return 0.0
    if p.temperature == 0 and p.top_k == 0 and p.top_p >= 1:
        if alg == "maskgit_plus":
            return math.exp(logprob)
        if alg == "topk_margin":
            second = math.exp(float(logits[1]) - float(lse)) if len(logits) > 1 else 0.0
            return math.exp(float(logits[0]) - float(lse)) - second
        return -float(entropy)
    scale = p.temperature if p.temperature > 0 else 1.0
    count = candidate_count(logits, Params(**{**p.__dict__, "temperature": scale}))
    weights = [math.exp((float(logits[i]) - float(logits[0])) / scale) for i in range(count)]
    total = 0.0
    for w in weights:
        total += w
    probs = [w / total for w in weights]
    if alg == "maskgit_plus":
        return probs[rank] if rank < len(probs) else 0.0
    if alg == "topk_margin":
        return probs[0] - (probs[1] if len(probs) > 1 else 0.0)
    negative_entropy = 0.0
    for q in probs:
        negative_entropy += q * math.log(q + 1e-10)
    return negative_entropy


def dream_commits(scores: list[float], alg: str, alg_temp: float, t: float, s: float, last: bool,
                  rng: CounterRng | None) -> list[int]:
    """Which masked positions a step commits, as indices into `scores` (dream.ts dreamCommits). origin: each with
    probability 1 - s/t (1 at the last step), one uniform per position. Otherwise dream_count of them: the most
    confident, ties to the leftmost (alg_temp 0), or drawn without replacement from softmax(confidence / alg_temp) by
    the Gumbel-top-k trick, one uniform per position."""
    if alg == "origin":
        share = 1.0 if last else dream_share(t, s)
        return [i for i in range(len(scores)) if rng.next() < share]
    count = dream_count(len(scores), t, s, last)
    if count == 0:
        return []
    keys = scores if alg_temp <= 0 else [c / alg_temp - math.log(-math.log(rng.next())) for c in scores]
    return rank_by_score(keys)[:count]


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
                 block_size: int | None = None, shift: int = 0):
        self.params, self.mask_id, self.eos = params, mask_id, set(eos_ids)
        self.block_size = block_size  # a block diffusion model's block size; None for LLaDA
        # 1 with shifted logits (architecture dream): position p's prediction is the graph's output at p - 1.
        self.shift = shift
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
        # Dream's sampler: the timesteps of every block's steps (dream_timesteps); None for LLaDA's.
        self.timesteps = None if params.alg is None else dream_timesteps(self.steps_per_block, params.eps, fused=True)
        # With penalties: how often each token has been committed in the generated span (end-of-text not counted).
        self.committed_counts: dict[int, int] = {}

    @property
    def steps_per_block(self) -> int:
        """Dream's sampler: every block runs steps / blocks steps, also those that commit nothing."""
        return max(1, self.params.steps // self.num_blocks)

    def read_from(self, position: int) -> int:
        """The canvas index whose graph output predicts canvas position `position` (src/engine/sequence.ts readFrom):
        itself, or with shifted logits the one before (a row's first position reads its own, as Dream's
        `torch.cat([logits[:, :1], logits[:, :-1]], dim=1)`)."""
        return max(0, position - self.shift)

    def query_start(self) -> int:
        """Where a cached step's query starts (src/engine/kv_cache.ts stepSpan): the block start, or with shifted
        logits one position earlier, whose output predicts the block's first position; the cached positions a prefix
        step reads end there."""
        return max(0, self.block_range()[0] - self.shift)

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

    def penalized(self, head: Head, row: int) -> tuple[Head, int]:
        """The head row every rule of a step reads: with penalties, penalized_row's one-row head (row 0)."""
        p = self.params
        if p.frequency_penalty == 0 and p.presence_penalty == 0:
            return head, row
        return penalized_row(head, row, self.committed_counts, p.frequency_penalty, p.presence_penalty), 0

    def apply_step(self, head: Head, row: int, positions: list[int]) -> list[tuple[int, int, float]]:
        head, row = self.penalized(head, row)
        if self.timesteps is not None:
            return self.apply_dream_step(head, row, positions)
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
        return self.commit(selected, choices, positions)

    def commit(self, selected: list[int], choices: list[tuple], positions: list[int]) -> list[tuple[int, int, float]]:
        """Commits the selected choices (a chosen mask token leaves its position masked: Dream's sampler), then
        advances the step, the block and its schedule, and checks the end: the one place a step changes state."""
        commits = []
        for j in selected:
            token, _, logprob, _ = choices[j]
            if token == self.mask_id:
                continue  # the mask token was chosen: the position stays masked
            self.canvas[positions[j]] = token
            commits.append((positions[j] - self.gen_start, token, math.exp(logprob)))
            if token not in self.eos:
                self.committed_counts[token] = self.committed_counts.get(token, 0) + 1
        self.steps += 1
        self.step_in_block += 1
        if not self.wanted_positions():
            self.block += 1
            self.step_in_block = 0
            if self.block < self.num_blocks:
                self.schedule = self.block_schedule()
        self.end = self.check_end()
        return sorted(commits)

    def apply_dream_step(self, head: Head, row: int, positions: list[int]) -> list[tuple[int, int, float]]:
        """One step of Dream's sampler (src/engine/sequence.ts applyStep with `alg`; reference/dream.py is the
        PyTorch reference): a choice and a confidence per masked position of the block, dream_commits of them
        committed. Before the block's last step the mask token may be chosen (the position stays masked, as in the
        official code); at the last step it is not."""
        p = self.params
        last = self.step_in_block >= self.steps_per_block - 1
        t, s = float(self.timesteps[self.step_in_block]), float(self.timesteps[self.step_in_block + 1])
        no_eos = frozenset(self.eos)
        rng = self.rng if p.temperature > 0 else None
        choices = [choose_token(head.topk_logits[row, j], head.topk_ids[row, j], head.logsumexp[row, j], p,
                                self.mask_id, rng, no_eos if at - self.gen_start < p.min_tokens else frozenset(),
                                allow_mask=not last) for j, at in enumerate(positions)]
        scores = [dream_confidence(p.alg, head.topk_logits[row, j], head.topk_ids[row, j], head.logsumexp[row, j],
                                   head.entropy[row, j], choices[j][1], choices[j][2], p)
                  for j in range(len(positions))]
        picked = dream_commits(scores, p.alg, p.alg_temp, t, s, last, self.rng)
        # Near-ties: the token choice at the committed positions, and the cut between committed and not.
        self.min_margin = min([self.min_margin] + [choices[j][3] for j in picked])
        if p.alg != "origin" and p.alg_temp <= 0 and 0 < len(picked) < len(scores):
            order = rank_by_score(scores)
            self.min_margin = min(self.min_margin, scores[order[len(picked) - 1]] - scores[order[len(picked)]])
        return self.commit(picked, choices, positions)

    def check_end(self) -> tuple[str, int] | None:
        limit = min(self.params.max_tokens, self.gen_length)
        for i in range(limit):
            token = self.canvas[self.gen_start + i]
            if token == self.mask_id:
                return None
            if token in self.eos and not self.params.ignore_eos:
                return ("stop", i)
        return ("length", limit)
