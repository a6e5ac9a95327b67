"""The Python reference sampler (dllm.reference): RNG pinned to the TypeScript values, schedule and commit
rules, end-of-text stop, infill, batching invariance, and weights recovered from an exported ONNX graph."""

import json
import os

import numpy as np
import pytest
import torch

from dllm import reference as ref
from dllm.export import export_onnx
from dllm.graph import guided_head
from dllm.model import LLaDA, ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = {"name": "t", "mask_token_id": 2, "eos_token_ids": [1, 5], "pad_token_id": 0, "bos_token_id": 6, "topk": 8}


def tiny_model(vocab=64) -> LLaDA:
    torch.manual_seed(0)
    return LLaDA(ModelConfig(d_model=32, n_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=vocab,
                             max_sequence_length=128)).eval()


class StubGraph:
    """Position q (from the row's first real token) predicts token 10 + q % 20, or end-of-text from eos_at on;
    confidence falls with q, so commits go left to right."""

    def __init__(self, eos_at=None, vocab=64):
        self.eos_at, self.vocab = eos_at, vocab

    def __call__(self, input_ids, attention_mask, positions, cfg_scale, uncond_row):
        n, p = positions.shape
        pad = (attention_mask == 0).sum(1, keepdim=True)
        q = positions - pad
        logits = torch.full((n, p, self.vocab), -5.0)
        token = torch.where(q >= (self.eos_at if self.eos_at is not None else 10**9), torch.ones_like(q), 10 + q % 20)
        logits.scatter_(2, token.unsqueeze(-1), (5.0 - 0.05 * q.float()).unsqueeze(-1))
        return guided_head(logits, cfg_scale, uncond_row, 8)


def stub_sampler(eos_at=None) -> ref.ReferenceSampler:
    sampler = ref.ReferenceSampler(tiny_model(), SPEC)
    sampler.graph = StubGraph(eos_at)
    return sampler


def test_rng_matches_typescript_values():
    # The same numbers are pinned in test/engine/rng.test.ts.
    assert ref.CounterRng(12345).draw(5).tolist() == [0.38943238043641737, 0.4576326490778496, 0.3338784749893068,
                                                       0.6815598506514412, 0.5461809082081363]
    big = ref.CounterRng(2**40 + 7)
    assert [big.next(), big.next()] == [0.25966469112474055, 0.26206631445689943]
    u = ref.CounterRng(3).draw(10000)
    assert u.min() > 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02


def test_schedule_and_commit_rules():
    assert ref.transfer_schedule(10, 4) == [3, 3, 2, 2]
    assert ref.transfer_schedule(4, 8) == [1, 1, 1, 1]
    assert ref.select_commits([0.5, 0.9, 0.5, 0.1], ("fixed", 2)) == [1, 0]
    assert ref.select_commits([0.5, 0.95, 0.92, 0.1], ("threshold", 0.9)) == [1, 2]
    assert ref.select_commits([0.5, 0.3], ("threshold", 0.9)) == [0]
    assert ref.select_commits([0.9, 0.76, 0.8, 0.1], ("factor", 1.0)) == [0, 2, 1]


def test_fixed_schedule_blocks_and_length():
    sampler = stub_sampler()
    seq = sampler.new_sequence([20, 21], ref.Params(max_tokens=16, steps=8, block_length=8))
    sampler.generate([seq])
    assert seq.steps == 8 and seq.end == ("length", 16)
    assert seq.canvas[:3] == [6, 20, 21]
    assert seq.generated() == [10 + q % 20 for q in range(3, 19)]


def test_end_of_text_stops_early_and_infill_keeps_suffix():
    sampler = stub_sampler(eos_at=9)
    seq = sampler.new_sequence([20, 21], ref.Params(max_tokens=32, steps=32, block_length=8), suffix_ids=[40, 41])
    sampler.generate([seq])
    assert seq.end == ("stop", 6)  # canvas index 9 = span position 6 (BOS + 2 prompt tokens)
    assert seq.steps == 7
    assert seq.canvas[-2:] == [40, 41]


def test_min_tokens_holds_end_of_text_off_and_ignore_eos_decodes_every_position():
    # The same rules as the TypeScript engine (test/engine/request_fields.test.ts, same stub graph shape).
    sampler = stub_sampler(eos_at=9)
    seq = sampler.new_sequence([20, 21], ref.Params(max_tokens=32, steps=32, block_length=8, min_tokens=12))
    sampler.generate([seq])
    assert seq.end == ("stop", 12)
    assert not any(t in (1, 5) for t in seq.generated()[:12])
    seq = sampler.new_sequence([20, 21], ref.Params(max_tokens=16, steps=16, block_length=8, ignore_eos=True))
    sampler.generate([seq])
    assert seq.end == ("length", 16)
    assert seq.generated()[6:] == [1] * 10


def test_penalized_row_is_the_penalised_softmax_when_the_head_holds_the_whole_vocabulary():
    """The same check as test/engine/penalties.test.ts: every token among the K, so re-sorting and the corrected
    logsumexp and entropy must equal the penalised full softmax computed directly."""
    logits = np.array([[[2, 1.5, 1, 0, -1], [3, 2.875, 0.5, 0.25, -2]]], dtype=np.float32)
    ids = np.array([[[10, 11, 12, 13, 14], [12, 10, 14, 11, 13]]])
    lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    probs = np.exp(logits - lse[..., None])
    head = ref.Head(logits, ids, lse, -(probs * np.log(probs)).sum(-1))
    counts = {10: 2, 12: 1, 99: 4}
    for frequency, presence in ((0.5, 0.25), (0.0, 1.5), (-0.5, 0.0)):
        out = ref.penalized_row(head, 0, counts, frequency, presence)
        for pos in range(2):
            penalised = [float(l) - (counts[i] * frequency + presence if i in counts else 0.0)
                         for l, i in zip(logits[0, pos], ids[0, pos])]
            order = sorted(range(5), key=lambda i: (-penalised[i], i))
            assert out.topk_ids[0, pos].tolist() == [int(ids[0, pos, i]) for i in order]
            values = np.array(penalised)
            want_lse = np.log(np.exp(values).sum())
            q = np.exp(values - want_lse)
            assert out.logsumexp[0, pos] == pytest.approx(want_lse, abs=1e-12)
            assert out.entropy[0, pos] == pytest.approx(-(q * np.log(q)).sum(), abs=1e-12)


def test_a_presence_penalty_moves_a_sequence_off_the_token_it_committed():
    """The stub predicts one token per position; with a presence penalty larger than its lead over the runner-up the
    sequence takes other tokens once a token is committed, without one it repeats the stub's choices."""
    sampler = stub_sampler()
    plain = sampler.new_sequence([20, 21], ref.Params(max_tokens=8, steps=8, block_length=8))
    sampler.generate([plain])
    penalised = sampler.new_sequence([20, 21], ref.Params(max_tokens=8, steps=8, block_length=8, presence_penalty=2.0,
                                                         frequency_penalty=0.5))
    sampler.generate([penalised])
    assert plain.generated() == penalised.generated()  # every position's token differs already: nothing repeats
    repeat = StubRepeat()
    sampler.graph = repeat
    runs = {}
    for presence in (0.0, 20.0):
        seq = sampler.new_sequence([20, 21], ref.Params(max_tokens=6, steps=6, block_length=6, presence_penalty=presence))
        sampler.generate([seq])
        runs[presence] = seq.generated()
    assert runs[0.0] == [40] * 6
    assert len(set(runs[20.0])) == 6  # each committed token pushed below every uncommitted one


class StubRepeat:
    """Every position predicts token 40 best, then 41, 42, ... with falling logits (a model that loops)."""

    def __call__(self, input_ids, attention_mask, positions, cfg_scale, uncond_row):
        n, p = positions.shape
        logits = torch.full((n, p, 64), -20.0)
        logits[:, :, 40:56] = torch.linspace(5.0, 0.0, 16)
        return guided_head(logits, cfg_scale, uncond_row, 8)


def test_batching_does_not_change_greedy_results():
    sampler = ref.ReferenceSampler(tiny_model(), SPEC)
    prompts = [[20], [21, 22, 23, 24, 25, 26, 27], [30, 31, 32]]
    settings = [ref.Params(max_tokens=8, steps=8, block_length=4), ref.Params(max_tokens=16, steps=8, block_length=8),
                ref.Params(max_tokens=8, steps=8, block_length=8, cfg_scale=1.0)]
    alone = []
    for prompt, params in zip(prompts, settings):
        seq = sampler.new_sequence(prompt, params)
        sampler.generate([seq])
        alone.append(ref.result(seq)["token_ids"])
    together = [sampler.new_sequence(p, s) for p, s in zip(prompts, settings)]
    sampler.generate(together)
    assert [ref.result(s)["token_ids"] for s in together] == alone


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    sampler = ref.ReferenceSampler(tiny_model(), SPEC)
    params = ref.Params(max_tokens=8, steps=8, block_length=8, temperature=1.0, seed=5, remasking="random")

    def run(p):
        seq = sampler.new_sequence([20, 21], p)
        sampler.generate([seq])
        return seq.generated()

    assert run(params) == run(params)
    assert run(params) != run(ref.Params(**{**params.__dict__, "seed": 6}))


def test_weights_recovered_from_onnx(tmp_path):
    model = tiny_model()
    with torch.no_grad():  # as after training: no two norm weights equal (the exporter merges equal initializers)
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.add_(torch.rand_like(p))
    export_onnx(model, str(tmp_path / "model.onnx"), 8, {})
    spec = {**SPEC, "onnx": {"fp32": "model.onnx"}, "model_config": model.config.to_dict()}
    recovered = ref.model_from_onnx(str(tmp_path), spec)
    for name, p in model.state_dict().items():
        assert torch.equal(recovered.state_dict()[name], p), name


def test_golden_fixture_shape():
    path = os.path.join(REPO, "test", "fixtures", "golden", "tiny-llada.json")
    if not os.path.exists(path):
        pytest.skip("no golden fixture")
    with open(path) as f:
        data = json.load(f)
    assert len(data["cases"]) >= 10
    for case in data["cases"]:
        assert len(case["expected"]) == case["n"]
        assert set(case["params"]) >= {"maxTokens", "steps", "blockLength", "remasking", "temperature", "seed"}


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cache_modes_batched_equal_alone_and_refresh_at_block_starts(mode):
    """Fast-dLLM's prefix / dual cache in the reference: a full pass at each block start, cached steps after it;
    left padding of cached steps (past and query) changes nothing."""
    sampler = ref.ReferenceSampler(tiny_model(), SPEC)
    prompts = [[20], [21, 22, 23, 24, 25, 26, 27], [30, 31, 32]]
    settings = [ref.Params(max_tokens=8, steps=8, block_length=4, cache=mode),
                ref.Params(max_tokens=16, steps=8, block_length=8, cache=mode),
                ref.Params(max_tokens=8, steps=8, block_length=8, cfg_scale=1.0, cache=mode)]
    alone = []
    for prompt, params in zip(prompts, settings):
        seq = sampler.new_sequence(prompt, params, suffix_ids=[40, 41] if len(prompt) == 1 else [])
        sampler.generate([seq])
        alone.append(ref.result(seq)["token_ids"])
        blocks = seq.num_blocks
        assert seq.refreshes + seq.cached_steps == seq.steps and seq.refreshes <= blocks and seq.cached_steps > 0
    together = [sampler.new_sequence(p, s, suffix_ids=[40, 41] if len(p) == 1 else []) for p, s in zip(prompts, settings)]
    sampler.generate(together)
    assert [ref.result(s)["token_ids"] for s in together] == alone


def test_cached_steps_over_an_unchanged_canvas_equal_the_full_pass():
    """Where nothing changed since the refresh, a cached step is exact: the head outputs of prefix and dual steps
    equal those of the full graph (keys cached after RoPE with absolute positions)."""
    model = tiny_model()
    sampler = ref.ReferenceSampler(model, SPEC)
    for mode in ("prefix", "dual"):
        seqs = [sampler.new_sequence(p, ref.Params(max_tokens=8, steps=8, block_length=4, cache=mode)) for p in ([20, 21], [22])]
        entries = [(s, s.wanted_positions()) for s in seqs]
        feeds, row_of = ref.build_batch(entries, 0)
        full = sampler.run(feeds)
        _, present = sampler.run_cached(ref.cached_feeds(feeds))
        for s, row in zip(seqs, row_of):
            pad = int((feeds[1][row] == 0).sum())
            s.kv = [present[:, :, row, :, pad:, :]]
            if mode == "prefix":
                s.kv = [s.kv[0][..., :s.block_range()[0], :]]
        step, _ = sampler.run_cached(ref.build_step_batch(entries, 0)[0])
        np.testing.assert_allclose(step.topk_logits, full.topk_logits, atol=1e-5)
        np.testing.assert_allclose(step.logsumexp, full.logsumexp, atol=1e-5)


def test_weights_recovered_from_a_format_2_folder(tmp_path):
    from dllm.export import write_model_folder

    model = tiny_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.add_(torch.rand_like(p))
    spec = write_model_folder(model, str(tmp_path), os.path.join(REPO, "models", "tiny-llada", "tokenizer.json"), 8, "t")
    recovered = ref.model_from_onnx(str(tmp_path), spec)
    for name, p in model.state_dict().items():
        assert torch.equal(recovered.state_dict()[name], p), name
    assert ref.model_sha256(str(tmp_path), spec) != ref.sha256(str(tmp_path / "model.onnx")), "the hash covers the weights"


def test_weights_recovered_from_a_folder_exported_before_issue_13():
    """The committed tiny model's graph names weights by exporter counters (constant folding); they are recovered by
    re-exporting as it was exported, and the recovered module reproduces the graph."""
    from conftest import TINY, run_ort
    from dllm.graph import INPUT_NAMES, SamplingGraph

    with open(os.path.join(TINY, "dllm.json")) as f:
        spec = json.load(f)
    model = ref.model_from_onnx(TINY, spec)
    feeds = dict(input_ids=torch.tensor([[6, 464, 2, 2, 2]]), attention_mask=torch.ones(1, 5, dtype=torch.int64),
                 positions=torch.tensor([[2, 3, 4]]), cfg_scale=torch.zeros(1), uncond_row=torch.zeros(1, dtype=torch.int64))
    with torch.no_grad():
        expected = SamplingGraph(model, spec["topk"])(*(feeds[n] for n in INPUT_NAMES))
    got = run_ort(os.path.join(TINY, "model.onnx"), feeds)
    np.testing.assert_allclose(got["topk_logits"], expected[0].numpy(), atol=1e-4)
