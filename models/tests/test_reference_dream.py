"""Dream's sampler in the reference: the schedule's numbers against torch, the shifted logits, the confidences against
the official sample_tokens, the server's rules (mask token at a block's last step, min_tokens, ends), and the engine
mirror (sampler.py, batching.py) against the PyTorch reference (reference/dream.py)."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.distributions as dists
import torch.nn as nn
import torch.nn.functional as F

from dllm import reference as ref
from dllm.graph import SamplingGraph, guided_head
from dllm.model import LLaDA, ModelConfig, position_ids_from_mask, shift_logits
from dllm.reference.dream import dream_generate, dream_params, sample_tokens

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MASK, EOS = 2, [1, 5]
SPEC = {"name": "t", "architecture": "dream", "mask_token_id": MASK, "eos_token_ids": EOS, "pad_token_id": 0,
        "bos_token_id": None, "topk": 8}
F32 = np.float32


# --- the official code, transcribed (HKUNLP Dream generation_utils.py) -------------------------------------------

def official_top_p_logits(logits, top_p=None):
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_indices_to_remove = cumulative_probs > top_p
    sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
    sorted_indices_to_remove[..., 0] = 0
    mask = torch.zeros_like(logits, dtype=torch.bool, device=logits.device)
    mask = mask.scatter_(-1, sorted_indices, sorted_indices_to_remove)
    logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    return logits


def official_top_k_logits(logits, top_k=None):
    top_k = min(top_k, logits.size(-1))
    indices_to_remove = logits < torch.topk(logits, top_k)[0][..., -1, None]
    logits = logits.masked_fill(indices_to_remove, torch.finfo(logits.dtype).min)
    return logits


def official_sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, margin_confidence=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = official_top_p_logits(logits, top_p)
    if top_k is not None:
        logits = official_top_k_logits(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        try:
            x0 = dists.Categorical(probs=probs).sample()
            confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
        except Exception:
            confidence, x0 = probs.max(dim=-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin_confidence:
        sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)
        top1_probs = sorted_probs[:, 0]
        top2_probs = sorted_probs[:, 1]
        confidence = top1_probs - top2_probs
    if neg_entropy:
        epsilon = 1e-10
        log_probs = torch.log(probs + epsilon)
        confidence = torch.sum(probs * log_probs, dim=-1)
    return confidence, x0


ALG_FLAGS = {"maskgit_plus": {}, "topk_margin": {"margin_confidence": True}, "entropy": {"neg_entropy": True}}


# --- models ------------------------------------------------------------------------------------------------------

def peaked_model(vocab=64, seed=0) -> LLaDA:
    """A tiny random module with shifted logits whose logits are peaked (output head scaled), so that greedy decisions
    are not near-ties."""
    torch.manual_seed(seed)
    model = LLaDA(ModelConfig(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=vocab,
                              max_sequence_length=128, weight_tying=False, include_qkv_bias=True,
                              shift_logits=True)).eval()
    with torch.no_grad():
        model.transformer["ff_out"].weight.mul_(40)
    return model


class StubModel(nn.Module):
    """A module with the LLaDA interface whose 'hidden states' are logits made by a rule of (row-relative position q,
    input token): the output at q favours token 10 + q % 20 with a confidence falling with q (commits go left to
    right); from eos_at on it favours end-of-text; with mask_top the mask token is best everywhere (then the rule's
    token). With shifted logits canvas position p reads the output at q = p - 1."""

    def __init__(self, vocab=64, eos_at=None, mask_top=False):
        super().__init__()
        self.config = ModelConfig(d_model=8, n_heads=1, n_layers=1, mlp_hidden_size=8, vocab_size=vocab,
                                  shift_logits=True)
        self.eos_at, self.mask_top = eos_at, mask_top

    def hidden_states(self, input_ids, attention_mask=None):
        n, length = input_ids.shape
        q = (torch.arange(length).expand(n, -1) if attention_mask is None else position_ids_from_mask(attention_mask))
        logits = torch.full((n, length, self.config.vocab_size), -5.0)
        logits += 0.01 * torch.arange(self.config.vocab_size, dtype=torch.float32)  # no exact ties among the rest
        eos = torch.full_like(q, EOS[0])
        token = torch.where(q >= (self.eos_at if self.eos_at is not None else 10**9), eos, 10 + q % 20)
        logits.scatter_(2, token.unsqueeze(-1), (5.0 - 0.05 * q.float()).unsqueeze(-1))
        if self.mask_top:
            logits[..., MASK] = 6.0
        return logits

    def project(self, h):
        return h

    def forward(self, input_ids, attention_mask=None):
        return self.project(self.hidden_states(input_ids, attention_mask))


def mirror(model, spec=SPEC) -> ref.ReferenceSampler:
    sampler = ref.ReferenceSampler(peaked_model(), spec)
    sampler.graph = SamplingGraph(model, spec["topk"])
    return sampler


def run_mirror(sampler, prompt, params, suffix=(), n=1):
    seqs = [sampler.new_sequence(prompt, params, list(suffix), i) for i in range(n)]
    sampler.generate(seqs)
    return seqs


def run_reference(model, prompt, params, suffix=(), spec=SPEC):
    return dream_generate(model, list(prompt), mask_token_id=spec["mask_token_id"], eos_token_ids=spec["eos_token_ids"],
                          suffix_ids=list(suffix), **dream_params(params))


# --- the schedule ------------------------------------------------------------------------------------------------

def cpu_linspace(steps: int, eps: float, lanes: int, fused: bool) -> np.ndarray:
    """A model of PyTorch's CPU linspace kernel (ATen RangeFactoriesKernel.cpp, linspace_kernel) in float32: element i
    is start + step * i below (steps + 1) // 2, end - step * (steps - i) from there (fused: one rounding, as the AVX2
    and AVX512 builds of the kernel compile it with FMA contraction); but while two whole vectors of `lanes` remain,
    the elements are filled a vector at a time as base + k * step, base being the element at the vector's start."""
    n, start, end = steps + 1, F32(1.0), F32(eps)
    step = F32(end - start) / F32(steps)
    half = n // 2

    def scalar(idx: np.ndarray) -> np.ndarray:
        if fused:
            lo = (np.float64(step) * idx + 1.0).astype(F32)
            hi = (np.float64(end) - np.float64(step) * (steps - idx)).astype(F32)
        else:
            lo = start + step * idx.astype(F32)
            hi = end - step * (steps - idx).astype(F32)
        return np.where(idx < half, lo, hi).astype(F32)

    out = scalar(np.arange(n))
    chunked = n // (2 * lanes) * (2 * lanes)
    if chunked:
        bases = scalar(np.arange(0, chunked, lanes))
        out[:chunked] = (bases[:, None] + np.arange(lanes, dtype=F32)[None, :] * step).reshape(-1)
    return out


CPU_VARIANTS = {"default": (8, False), "avx2": (8, True), "avx512": (16, True)}


def test_torch_linspace_is_the_cpu_kernel_and_its_scalar_part_is_the_engine_formula():
    """torch.linspace(1, eps, S + 1) on the CPU is, value for value, one of the CPU kernel's builds (which one depends
    on the CPU capability PyTorch dispatches to); its values from the vector path (S >= 2 * lanes - 1) differ from the
    per-element formula, below that they are the formula (dream_timesteps, fused where the build contracts to FMA)."""
    eps_values = (1e-3, 1e-2, 0.05, 0.3)
    linspaces = {(s, e): torch.linspace(1, e, s + 1).numpy() for s in range(1, 1025) for e in eps_values}
    matching = [name for name, (lanes, fused) in CPU_VARIANTS.items()
                if all(np.array_equal(v, cpu_linspace(s, e, lanes, fused)) for (s, e), v in linspaces.items())]
    if not matching:
        pytest.skip(f"torch {torch.__version__}'s CPU linspace is none of the modelled kernel builds")
    assert len(matching) == 1, matching
    lanes, fused = CPU_VARIANTS[matching[0]]
    for (s, e), v in linspaces.items():
        if s + 1 < 2 * lanes:
            assert np.array_equal(ref.dream_timesteps(s, e, fused=fused), v), (s, e)
    # The vector path does change values: the formula is not torch's CPU result for most S >= 2 * lanes - 1.
    differ = sum(not np.array_equal(ref.dream_timesteps(s, 1e-3, fused=fused), linspaces[(s, 1e-3)])
                 for s in range(2 * lanes - 1, 1025))
    assert differ > 900


def test_dream_timesteps_formula_in_float32():
    ts = ref.dream_timesteps(4, 1e-3)
    assert ts.dtype == np.float32 and ts[0] == 1 and ts[-1] == F32(1e-3)
    step = F32(F32(1e-3) - F32(1)) / F32(4)
    assert ts[1] == F32(1) + step * F32(1) and ts[3] == F32(1e-3) - step * F32(1)
    # Fused and per-operation rounding differ for some steps (which one CUDA's kernel computes is not checked here).
    assert any(not np.array_equal(ref.dream_timesteps(s, 1e-3), ref.dream_timesteps(s, 1e-3, fused=True))
               for s in range(1, 200))


def test_counts_equal_torch_float32_arithmetic():
    """dream_count is int(m * (1 - s / t)) as `_sample` computes it on float32 tensors (m = mask_index.sum() / 1)."""
    for steps in (1, 2, 5, 16, 32, 64):
        for eps in (1e-3, 0.01):
            ts = torch.linspace(1, eps, steps + 1)
            for i in range(steps):
                t, s = ts[i], ts[i + 1]
                for m in range(1, 65):
                    mask_index = torch.zeros(1, m + 3, dtype=torch.bool)
                    mask_index[0, :m] = True
                    num_mask_token = mask_index.sum() / mask_index.shape[0]
                    expected = int(num_mask_token * (1 - s / t)) if i < steps - 1 else int(num_mask_token)
                    assert ref.dream_count(m, float(t), float(s), i == steps - 1) == expected, (steps, eps, i, m)


def test_steps_beyond_the_masked_count_commit_nothing_at_first():
    ts = ref.dream_timesteps(32, 1e-3)
    counts = [ref.dream_count(16, float(ts[i]), float(ts[i + 1]), False) for i in range(16)]
    assert counts[0] == 0 and sum(counts) < 16


def test_golden_schedules_do_not_depend_on_timestep_rounding():
    for name, _, params, _, _ in ref.DREAM_CASES:
        blocks = -(-params.max_tokens // params.block_length)
        assert ref.dream_schedule_agrees(params.steps // blocks, params.eps, params.block_length), name
    assert not ref.dream_schedule_agrees(33, 0.01, 64)  # e.g. S 33, step 31, 7 masked: counts differ


# --- shifted logits ----------------------------------------------------------------------------------------------

def test_shift_logits_is_dreams_cat():
    logits = torch.randn(2, 5, 7)
    assert torch.equal(shift_logits(logits), torch.cat([logits[:, :1], logits[:, :-1]], dim=1))


def test_mirror_reads_the_head_one_position_earlier_row_relative():
    sampler = mirror(peaked_model())
    a = sampler.new_sequence([20, 21, 22], ref.Params(max_tokens=4, steps=4, block_length=4, alg="entropy"))
    b = sampler.new_sequence([], ref.Params(max_tokens=4, steps=4, block_length=4, alg="entropy"))
    assert a.shift == 1 and [a.read_from(p) for p in (3, 4, 0)] == [2, 3, 0] and b.read_from(0) == 0
    feeds, rows = ref.build_batch([(a, a.wanted_positions()), (b, b.wanted_positions())], 0)
    pad_b = 3  # b's canvas (4 masks) is left-padded to a's length (7)
    assert feeds[2][0].tolist() == [2, 3, 4, 5] and feeds[2][1].tolist() == [pad_b + 0, pad_b + 0, pad_b + 1, pad_b + 2]
    # The head at those positions is the shifted full-vocabulary logits of the canvas alone.
    head = sampler.run(feeds)
    model = sampler.graph.model
    for seq, row in zip((a, b), rows):
        with torch.no_grad():
            logits = shift_logits(model(torch.tensor([seq.canvas])))[0, seq.wanted_positions()]
        top = logits.topk(8, dim=-1)
        np.testing.assert_allclose(head.topk_logits[row], top.values.numpy(), atol=1e-5)
        assert np.array_equal(head.topk_ids[row], top.indices.numpy())


# --- confidences against the official sample_tokens ----------------------------------------------------------------

@pytest.mark.parametrize("alg", list(ALG_FLAGS))
def test_confidences_match_the_official_sample_tokens(alg):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 300, generator=g) * 3
    expected_conf, expected_x0 = official_sample_tokens(logits, **ALG_FLAGS[alg])
    conf, x0 = sample_tokens(logits, **ALG_FLAGS[alg])
    assert torch.equal(x0, expected_x0) and torch.equal(conf, expected_conf)
    # The engine mirror from the graph head's outputs (top-K, float64 logsumexp and entropy).
    k = 16
    head = guided_head(logits[None], torch.zeros(1), torch.zeros(1, dtype=torch.long), k)
    params = ref.Params(alg=alg)
    for j in range(logits.shape[0]):
        topk_logits, topk_ids, lse, entropy = (t[0, j].numpy() for t in head)
        token, rank, logprob, _ = ref.choose_token(topk_logits, topk_ids, float(lse), params, 299, None,
                                                   allow_mask=True)
        assert token == int(expected_x0[j])
        c = ref.dream_confidence(alg, topk_logits, topk_ids, float(lse), float(entropy), rank, logprob, params)
        assert c == pytest.approx(float(expected_conf[j]), rel=1e-5, abs=3e-6)


@pytest.mark.parametrize("alg", list(ALG_FLAGS))
@pytest.mark.parametrize("cut", [{"top_k": 5}, {"top_p": 0.9}])
def test_top_k_top_p_at_temperature_zero_as_the_official_code(alg, cut):
    """The official code cuts the distribution (top_k, top_p) also when greedy; the confidences are then of the cut
    distribution, which the mirror computes over the head's candidates."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(30, 200, generator=g) * 2
    expected_conf, expected_x0 = official_sample_tokens(logits, **cut, **ALG_FLAGS[alg])
    conf, x0 = sample_tokens(logits, **cut, **ALG_FLAGS[alg])
    assert torch.equal(x0, expected_x0) and torch.equal(conf, expected_conf)
    head = guided_head(logits[None], torch.zeros(1), torch.zeros(1, dtype=torch.long), 200)  # every token a candidate
    params = ref.Params(alg=alg, **cut)
    for j in range(logits.shape[0]):
        topk_logits, topk_ids, lse, entropy = (t[0, j].numpy() for t in head)
        token, rank, logprob, _ = ref.choose_token(topk_logits, topk_ids, float(lse), params, 199, None,
                                                   allow_mask=True)
        c = ref.dream_confidence(alg, topk_logits, topk_ids, float(lse), float(entropy), rank, logprob, params)
        assert token == int(expected_x0[j])
        assert c == pytest.approx(float(expected_conf[j]), rel=1e-5, abs=3e-6)


def test_excluded_tokens_change_the_choice_not_the_distribution():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    excluded = torch.tensor([[False, True, False, False]])
    conf, x0 = sample_tokens(logits, excluded=excluded)
    assert int(x0) == 2 and float(conf) == pytest.approx(float(torch.softmax(logits, -1)[0, 2]))
    conf, _ = sample_tokens(logits, margin_confidence=True, excluded=excluded)
    p = torch.softmax(logits, -1)[0]
    assert float(conf) == pytest.approx(float(p[1] - p[2]))


# --- the server's rules -------------------------------------------------------------------------------------------

def test_mask_token_is_chosen_before_the_last_step_and_skipped_at_it():
    """The mask token is the best everywhere: every step before the last commits it (the positions stay masked), the
    last step commits the best other token at every position."""
    stub = StubModel(mask_top=True)
    params = ref.Params(max_tokens=8, steps=4, block_length=8, alg="maskgit_plus")
    seq = run_mirror(mirror(stub), [20, 21], params)[0]
    assert seq.steps == 4 and seq.end == ("length", 8)
    assert seq.generated() == [10 + q % 20 for q in range(1, 9)]  # position p reads the output at p - 1
    reference = run_reference(stub, [20, 21], params)
    assert reference.as_golden() == ref.result(seq)
    ts = torch.linspace(1, 1e-3, 5).tolist()
    assert [c[2:] for c in reference.counts] == [(8, ref.dream_count(8, ts[i], ts[i + 1], i == 3)) for i in range(4)]
    assert reference.counts[-1][3] == 8 and sum(c[3] for c in reference.counts[:3]) > 0


def test_min_tokens_keeps_end_of_text_off_and_ends_follow():
    stub = StubModel(eos_at=6)
    # The output at q >= 6 favours end-of-text: canvas position p = 2 + i reads q = p - 1 = i + 1, so span position 5
    # is the first end-of-text.
    for params, end in [(ref.Params(max_tokens=16, steps=16, block_length=16, alg="maskgit_plus"), ("stop", 5)),
                        (ref.Params(max_tokens=16, steps=16, block_length=16, alg="entropy", min_tokens=9),
                         ("stop", 9)),
                        (ref.Params(max_tokens=16, steps=16, block_length=8, alg="topk_margin", ignore_eos=True),
                         ("length", 16))]:
        seq = run_mirror(mirror(stub), [20, 21], params)[0]
        assert seq.end == end, params
        assert not any(t in EOS for t in seq.generated()[:params.min_tokens])
        reference = run_reference(stub, [20, 21], params)
        assert reference.as_golden() == ref.result(seq)
    # Stop: the step that commits the end-of-text with everything before it committed is the last one run (commits go
    # left to right here, so that is the first step after which 6 positions are committed).
    params = ref.Params(max_tokens=16, steps=16, block_length=16, alg="maskgit_plus")
    seq = run_mirror(mirror(stub), [20, 21], params)[0]
    ts, masked, steps = ref.dream_timesteps(16, 1e-3), 16, 0
    while 16 - masked < 6:
        masked -= ref.dream_count(masked, float(ts[steps]), float(ts[steps + 1]), steps == 15)
        steps += 1
    canvas = ref.result(seq)["canvas"]
    assert seq.steps == steps and canvas[:16 - masked] == seq.generated()[:16 - masked]
    assert canvas[16 - masked:] == [None] * masked


@pytest.mark.parametrize("params", [
    ref.Params(max_tokens=16, steps=8, block_length=16, alg="origin", seed=1),
    ref.Params(max_tokens=16, steps=16, block_length=8, alg="entropy", alg_temp=0.5, seed=2),
    ref.Params(max_tokens=16, steps=16, block_length=16, alg="maskgit_plus", temperature=0.8, top_p=0.9, seed=3),
    ref.Params(max_tokens=16, steps=8, block_length=8, alg="topk_margin", temperature=1.0, top_k=5, seed=4),
])
def test_random_paths_are_seeded_and_decode_every_position(params):
    """origin, alg_temp > 0 and temperature > 0 (not golden: the engine's RNG is its own) run to an end in both
    implementations; the mirror's draws come from the sequence's counter RNG, so a seed repeats them."""
    model = peaked_model()
    sampler = mirror(model)
    params.ignore_eos = True
    first, again = (ref.result(run_mirror(sampler, [20, 21], params)[0]) for _ in range(2))
    assert first == again and first["finish_reason"] == "length" and None not in first["canvas"]
    other = ref.result(run_mirror(sampler, [20, 21], ref.Params(**{**params.__dict__, "seed": params.seed + 10}))[0])
    assert other != first
    torch.manual_seed(0)
    reference = run_reference(model, [20, 21], params)
    assert reference.finish_reason == "length" and None not in reference.canvas and MASK not in reference.token_ids


def test_steps_must_be_a_multiple_of_the_blocks():
    sampler = mirror(peaked_model())
    with pytest.raises(ValueError):
        sampler.new_sequence([20], ref.Params(max_tokens=32, steps=6, block_length=8, alg="entropy"))
    with pytest.raises(ValueError):
        run_reference(peaked_model(), [20], ref.Params(max_tokens=32, steps=6, block_length=8, alg="entropy"))


def test_params_to_ts():
    assert "alg" not in ref.Params().to_ts()
    ts = ref.Params(alg="entropy", alg_temp=0.5, eps=0.01).to_ts()
    assert (ts["alg"], ts["algTemp"], ts["eps"]) == ("entropy", 0.5, 0.01)


# --- the mirror against dream.py ----------------------------------------------------------------------------------

PROMPTS = [[20, 21, 22, 23], [30, 31], [40, 41, 42, 43, 44, 45, 46], [50]]
CASES = [  # the kinds of DREAM_CASES, smaller
    (0, ref.Params(max_tokens=16, steps=16, block_length=16, alg="maskgit_plus"), (), 1),
    (1, ref.Params(max_tokens=16, steps=8, block_length=16, alg="topk_margin"), (), 1),
    (2, ref.Params(max_tokens=8, steps=16, block_length=8, alg="entropy"), (), 1),
    (3, ref.Params(max_tokens=8, steps=1, block_length=8, alg="maskgit_plus"), (), 1),
    (0, ref.Params(max_tokens=16, steps=16, block_length=16, alg="entropy", eps=0.01), (), 1),
    (1, ref.Params(max_tokens=16, steps=8, block_length=4, alg="maskgit_plus"), (), 1),
    (2, ref.Params(max_tokens=16, steps=16, block_length=8, alg="topk_margin", min_tokens=10), (), 1),
    (3, ref.Params(max_tokens=8, steps=8, block_length=8, alg="entropy", ignore_eos=True), (), 1),
    (0, ref.Params(max_tokens=8, steps=8, block_length=8, alg="maskgit_plus"), (60, 61), 1),
    (1, ref.Params(max_tokens=12, steps=12, block_length=12, alg="topk_margin"), (), 2),
]


def test_mirror_equals_dream_reference_without_a_cache_alone_and_batched():
    model = peaked_model()
    sampler = mirror(model)
    exact = 0
    alone = []
    for prompt, params, suffix, n in CASES:
        seqs = run_mirror(sampler, PROMPTS[prompt], params, suffix, n)
        reference = [run_reference(model, PROMPTS[prompt], params, suffix) for _ in range(n)]
        margin = min([s.min_margin for s in seqs] + [r.min_margin for r in reference])
        alone.append([ref.result(s) for s in seqs])
        if margin >= ref.NEAR_TIE:
            exact += 1
            assert [r.as_golden() for r in reference] == alone[-1], params
    assert exact >= 8
    together = [[sampler.new_sequence(PROMPTS[p], params, list(suffix), i) for i in range(n)]
                for p, params, suffix, n in CASES]
    sampler.generate([s for seqs in together for s in seqs])
    assert [[ref.result(s) for s in seqs] for seqs in together] == alone


# --- cache modes ---------------------------------------------------------------------------------------------------

def test_cached_dream_steps_over_an_unchanged_canvas_equal_the_full_pass():
    """With shifted logits a cached step queries from the position before the block: over an unchanged canvas its head
    outputs equal the full pass's (prefix: reads cached [0, start - 1); dual: the block and the position before it
    hidden)."""
    sampler = ref.ReferenceSampler(peaked_model(), SPEC)
    for mode in ("prefix", "dual"):
        seqs = [sampler.new_sequence(p, ref.Params(max_tokens=8, steps=8, block_length=4, alg="entropy", cache=mode))
                for p in ([20, 21], [22], [])]
        for s in seqs[:2]:  # the second block (its first position reads the first block's last)
            s.canvas[s.gen_start:s.gen_start + 4] = [30, 31, 32, 33]
            s.block = 1
        entries = [(s, s.wanted_positions()) for s in seqs]
        feeds, row_of = ref.build_batch(entries, 0)
        full = sampler.run(feeds)
        _, present = sampler.run_cached(ref.cached_feeds(feeds))
        for s, row in zip(seqs, row_of):
            pad = int((feeds[1][row] == 0).sum())
            s.kv = [present[:, :, row, :, pad:pad + s.kept_length(), :]]
        assert seqs[0].kept_length() == (6 if mode == "prefix" else 10)  # as the engine's keptLength
        rows = ref.step_rows(seqs[0], seqs[0].wanted_positions())
        assert rows[0]["q_lo"] == 5 and rows[0]["positions"] == [0, 1, 2, 3]
        step, _ = sampler.run_cached(ref.build_step_batch(entries, 0)[0])
        np.testing.assert_allclose(step.topk_logits, full.topk_logits, atol=1e-5)
        np.testing.assert_allclose(step.entropy, full.entropy, atol=1e-5)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_dream_cache_modes_batched_equal_alone(mode):
    sampler = ref.ReferenceSampler(peaked_model(), SPEC)
    settings = [ref.Params(max_tokens=8, steps=8, block_length=8, alg="entropy", cache=mode),
                ref.Params(max_tokens=16, steps=8, block_length=8, alg="maskgit_plus", cache=mode),
                ref.Params(max_tokens=8, steps=8, block_length=4, alg="topk_margin", cache=mode)]
    suffixes = [[60, 61], [], []]
    alone = []
    for prompt, params, suffix in zip(PROMPTS, settings, suffixes):
        seq = run_mirror(sampler, prompt, params, suffix)[0]
        assert seq.refreshes <= seq.num_blocks and seq.cached_steps > 0
        assert seq.refreshes + seq.cached_steps == seq.steps
        alone.append(ref.result(seq))
    together = [sampler.new_sequence(p, s, x) for p, s, x in zip(PROMPTS, settings, suffixes)]
    sampler.generate(together)
    assert [ref.result(s) for s in together] == alone


def test_golden_fixture_shape():
    path = os.path.join(REPO, "test", "fixtures", "golden", "tiny-dream-random.json")
    if not os.path.exists(path):
        pytest.skip("no golden fixture")
    with open(path) as f:
        data = json.load(f)
    modes = [c["params"].get("cache", "none") for c in data["cases"]]
    assert modes.count("none") >= 14 and modes.count("prefix") >= 4 and modes.count("dual") >= 4
    assert sum(not c["near_tie"] for c in data["cases"]) >= 10
    for case in data["cases"]:
        assert len(case["expected"]) == case["n"]
        assert case["params"]["alg"] in ("maskgit_plus", "topk_margin", "entropy") and case["params"]["algTemp"] == 0
        assert case["params"]["temperature"] == 0
