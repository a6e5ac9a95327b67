"""Dream's sampler in PyTorch, written to read like the official code: HKUNLP Dream's `diffusion_generate` / `_sample`
and `sample_tokens` (generation_utils.py of Dream-v0-Instruct-7B; Ye et al. 2025, "Dream 7B"), with Fast-dLLM's
generalisation to blocks decoded left to right (NVlabs/Fast-dLLM dream/), on our LLaDA module (weights.py loads it
from a model folder) with shifted logits (model.shift_logits).

It is the independent reference of the engine's Dream path: it shares no code with the engine mirror (sampler.py,
batching.py), runs every sequence alone and unpadded through the module's full-vocabulary logits in float32, and takes
its timesteps from torch.linspace. The pytest (tests/test_reference_dream.py) and golden() check that the mirror gives
the same tokens on every case without a cache.

Where a server must differ from the official code (docs/design.md §4), this does, as the engine does:
- each sequence runs alone: the number to commit counts its own masked positions (the official code averages the mask
  count over the batch);
- at a block's last step the mask token is not chosen (the best other token is; the official code would leave the
  position masked in its output); before it the mask token may be chosen, and the position stays masked although it
  took one of the step's commits, as in the official code;
- min_tokens: no end-of-text at generated positions below it (the next best token is chosen);
- ends: after each step, the first still-masked position of the span means not ended; an end-of-text committed with
  every position before it committed ends the choice (stop) unless ignore_eos; max_tokens positions committed end it
  (length). The choice stops at that step.
Token choice ignores the mask token and banned tokens only in the choice: the confidences are those of the unchanged
distribution (maskgit_plus: the probability of the token chosen).

Each step also records the smallest decision margin: at each committed position the gap between the chosen token's
logit and the best other allowed one, and where a step commits some but not all masked positions the gap between the
last committed and the first uncommitted confidence. A margin under golden.NEAR_TIE may flip between this float32
computation, the mirror's and ONNX Runtime's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model import LLaDA, shift_logits


# --- sample_tokens of generation_utils.py ------------------------------------------------------------------------

def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_indices_to_remove = cumulative_probs > top_p
    # Shift the indices to the right to keep the first token above the threshold
    sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
    sorted_indices_to_remove[..., 0] = 0
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask = mask.scatter_(-1, sorted_indices, sorted_indices_to_remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    top_k = min(top_k, logits.size(-1))
    indices_to_remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(indices_to_remove, torch.finfo(logits.dtype).min)


def sample_tokens(logits: torch.Tensor, temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
                  margin_confidence: bool = False, neg_entropy: bool = False, excluded: torch.Tensor | None = None,
                  generator: torch.Generator | None = None):
    """Dream's sample_tokens on logits [M, V] -> (confidence [M], x0 [M]). `excluded` [M, V] (bool): tokens that may not
    be chosen (the server's rules above); they stay in the distribution the confidences are computed from. Sampling
    draws from `generator` (torch.multinomial; the official code draws with Categorical.sample from the global RNG)."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k is not None and top_k > 0:  # Params.top_k 0 = the official None
        logits = top_k_logits(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    allowed = probs if excluded is None else probs.masked_fill(excluded, 0.0)
    if temperature > 0:
        x0 = torch.multinomial(allowed, 1, generator=generator).squeeze(-1)
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    elif excluded is None:
        confidence, x0 = probs.max(dim=-1)
    else:
        # The best allowed token: argmax of the probabilities with the excluded ones below every probability.
        x0 = probs.masked_fill(excluded, -1.0).max(dim=-1).indices
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    if margin_confidence:
        sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
        # Extract top1 and top2 probabilities
        top1_probs = sorted_probs[:, 0]
        top2_probs = sorted_probs[:, 1]
        # Calculate confidence as top1 - top2
        confidence = top1_probs - top2_probs
    if neg_entropy:
        epsilon = 1e-10
        log_probs = torch.log(probs + epsilon)
        confidence = torch.sum(probs * log_probs, dim=-1)
    return confidence, x0


# --- the sampler ------------------------------------------------------------------------------------------------

@dataclass
class DreamResult:
    """One choice: the tokens (up to the end), how it ended, the steps run, the span then (None = masked), and per
    step its smallest decision margin (inf where none was measured: random choices) and its commit count."""
    token_ids: list[int]
    finish_reason: str
    steps: int
    canvas: list[int | None]
    margins: list[float] = field(default_factory=list)
    # per step: (steps per block, step in the block, masked positions, number to commit)
    counts: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def min_margin(self) -> float:
        return min(self.margins, default=math.inf)

    def as_golden(self) -> dict:
        return {"token_ids": self.token_ids, "finish_reason": self.finish_reason, "steps": self.steps,
                "canvas": self.canvas}


def check_end(x: torch.Tensor, gen_start: int, max_tokens: int, mask_token_id: int, eos_token_ids: set[int],
              ignore_eos: bool) -> tuple[str, int] | None:
    """(finish reason, tokens) once the choice has ended, else None: scanning the span from its start, a mask means not
    ended; an end-of-text token (all before it committed) ends it unless ignore_eos; max_tokens committed end it."""
    for i in range(max_tokens):
        token = int(x[0, gen_start + i])
        if token == mask_token_id:
            return None
        if token in eos_token_ids and not ignore_eos:
            return ("stop", i)
    return ("length", max_tokens)


def decision_margin(mask_logits: torch.Tensor, x0: torch.Tensor, excluded: torch.Tensor | None,
                    rows: torch.Tensor) -> float:
    """The smallest gap, over the given rows of mask_logits [M, V], between the chosen token's logit and the best other
    allowed token's."""
    if rows.numel() == 0:
        return math.inf
    logits = mask_logits[rows].clone()
    chosen = logits.gather(-1, x0[rows].unsqueeze(-1)).squeeze(-1)
    if excluded is not None:
        logits = logits.masked_fill(excluded[rows], -math.inf)
    logits.scatter_(-1, x0[rows].unsqueeze(-1), -math.inf)
    return float((chosen - logits.max(dim=-1).values).min())


@torch.no_grad()
def dream_generate(model: LLaDA, prompt_ids: list[int], *, max_tokens: int, steps: int, mask_token_id: int,
                   eos_token_ids: list[int], block_length: int | None = None, alg: str = "entropy",
                   alg_temp: float = 0.0, eps: float = 1e-3, temperature: float = 0.0, top_p: float | None = None,
                   top_k: int | None = None, min_tokens: int = 0, ignore_eos: bool = False,
                   suffix_ids: list[int] = (), generator: torch.Generator | None = None) -> DreamResult:
    """One choice of Dream's `_sample` on its own: canvas = prompt, the span of mask tokens, the infill suffix.
    block_length None: the span is one block of max_tokens positions (the official code); otherwise max_tokens is
    rounded up to whole blocks decoded left to right, each with steps / blocks steps (Fast-dLLM)."""
    block_length = block_length or max_tokens
    num_blocks = -(-max_tokens // block_length)
    if steps % num_blocks:
        raise ValueError(f"steps {steps} must be a multiple of the number of blocks {num_blocks}")
    steps_per_block = steps // num_blocks
    gen_start = len(prompt_ids)
    gen_length = num_blocks * block_length
    x = torch.tensor([list(prompt_ids) + [mask_token_id] * gen_length + list(suffix_ids)], dtype=torch.long)
    eos = set(eos_token_ids)
    vocab = model.config.vocab_size
    banned_eos = torch.zeros(vocab, dtype=torch.bool)
    banned_eos[[e for e in eos if e < vocab]] = True
    margins, counts, step_count = [], [], 0

    def finish(end: tuple[str, int]) -> DreamResult:
        span = x[0, gen_start:gen_start + gen_length].tolist()
        return DreamResult(span[:end[1]], end[0], step_count, [None if t == mask_token_id else t for t in span],
                           margins, counts)

    for num_block in range(num_blocks):
        block_start = gen_start + num_block * block_length
        block_end = block_start + block_length
        timesteps = torch.linspace(1, eps, steps_per_block + 1)
        for i in range(steps_per_block):
            mask_index = x == mask_token_id
            mask_index[:, :block_start] = False
            mask_index[:, block_end:] = False
            logits = model(x).float()
            logits = shift_logits(logits)  # torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            mask_logits = logits[mask_index]
            t = timesteps[i]
            s = timesteps[i + 1]
            last = i == steps_per_block - 1

            # The server's rules on the choice: no mask token at the block's last step, no end-of-text below min_tokens.
            where = mask_index[0].nonzero().squeeze(-1)  # canvas indices of the masked positions, ascending
            excluded = torch.zeros(mask_logits.shape, dtype=torch.bool)
            if last:
                excluded[:, mask_token_id] = True
            excluded |= ((where - gen_start) < min_tokens).unsqueeze(-1) & banned_eos
            excluded = excluded if bool(excluded.any()) else None

            step_margin = math.inf  # the step's smallest decision margin
            if alg == "origin":
                p_transfer = 1 - s / t if i < steps_per_block - 1 else 1
                x0 = torch.zeros_like(x[mask_index], dtype=torch.long) + mask_token_id
                transfer_index_t_s = torch.rand(*x0.shape, generator=generator) < p_transfer
                x0[transfer_index_t_s] = sample_tokens(
                    mask_logits[transfer_index_t_s], temperature=temperature, top_p=top_p, top_k=top_k,
                    excluded=None if excluded is None else excluded[transfer_index_t_s], generator=generator)[1]
                x[mask_index] = x0.clone()
                counts.append((steps_per_block, i, int(mask_index.sum()), int(transfer_index_t_s.sum())))
            else:
                if alg == "maskgit_plus":
                    confidence, x0 = sample_tokens(mask_logits, temperature=temperature, top_p=top_p, top_k=top_k,
                                                   excluded=excluded, generator=generator)
                elif alg == "topk_margin":
                    confidence, x0 = sample_tokens(mask_logits, temperature=temperature, top_p=top_p, top_k=top_k,
                                                   margin_confidence=True, excluded=excluded, generator=generator)
                elif alg == "entropy":
                    confidence, x0 = sample_tokens(mask_logits, temperature, top_p=top_p, top_k=top_k,
                                                   neg_entropy=True, excluded=excluded, generator=generator)
                else:
                    raise RuntimeError(f"Unknown alg: {alg}")
                num_mask_token = mask_index.sum() / mask_index.shape[0]  # one sequence: its own count
                number_transfer_tokens = (int(num_mask_token * (1 - s / t)) if i < steps_per_block - 1
                                          else int(num_mask_token))
                counts.append((steps_per_block, i, int(mask_index.sum()), number_transfer_tokens))
                full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
                full_confidence[mask_index] = confidence
                if number_transfer_tokens > 0:
                    if alg_temp is None or alg_temp == 0:
                        # torch.topk, with ties to the leftmost (a stable sort), as the engine's.
                        order = torch.sort(full_confidence, dim=-1, descending=True, stable=True).indices
                        transfer_index = order[:, :number_transfer_tokens]
                        if number_transfer_tokens < len(where):  # the cut between committed and not
                            ranked = full_confidence[0, order[0]]
                            step_margin = float(ranked[number_transfer_tokens - 1] - ranked[number_transfer_tokens])
                    else:
                        full_confidence = full_confidence / alg_temp
                        full_confidence = F.softmax(full_confidence, dim=-1)
                        transfer_index = torch.multinomial(full_confidence, num_samples=number_transfer_tokens,
                                                           generator=generator)
                    x_ = torch.zeros_like(x, dtype=torch.long) + mask_token_id
                    x_[mask_index] = x0.clone()
                    row_indices = torch.arange(x.size(0)).unsqueeze(1).expand_as(transfer_index)
                    x[row_indices, transfer_index] = x_[row_indices, transfer_index]
                    # The token choice at the committed positions.
                    committed = torch.isin(where, transfer_index[0]).nonzero().squeeze(-1)
                    if temperature == 0:
                        step_margin = min(step_margin, decision_margin(mask_logits, x0, excluded, committed))
            margins.append(step_margin)
            step_count += 1
            end = check_end(x, gen_start, max_tokens, mask_token_id, eos, ignore_eos)
            if end is not None:
                return finish(end)
    raise AssertionError("every block ends with all its positions committed")


def dream_params(params) -> dict:
    """dream_generate's keyword arguments from a reference Params (sampler.py; block_length kept as is)."""
    return dict(max_tokens=params.max_tokens, steps=params.steps, block_length=params.block_length, alg=params.alg,
                alg_temp=params.alg_temp, eps=params.eps, temperature=params.temperature,
                top_p=params.top_p if params.top_p < 1 else None, top_k=params.top_k or None,
                min_tokens=params.min_tokens, ignore_eos=params.ignore_eos)


def dream_generate_many(model: LLaDA, spec: dict, prompts: list[list[int]], params, suffix_ids: list[int] = (),
                        n: int = 1, seed: int | None = None) -> list[list[DreamResult]]:
    """Several prompts, n choices each, every choice run alone (a request behaves as if alone); the canvas starts
    with the folder's BOS when it has one (a dream folder has none)."""
    bos = spec.get("bos_token_id")
    generator = torch.Generator().manual_seed(seed if seed is not None else (params.seed or 0))
    out = []
    for prompt in prompts:
        prefix = ([bos] if bos is not None else []) + list(prompt)
        out.append([dream_generate(model, prefix, mask_token_id=spec["mask_token_id"],
                                   eos_token_ids=spec["eos_token_ids"], suffix_ids=list(suffix_ids),
                                   generator=generator, **dream_params(params)) for _ in range(n)])
    return out
