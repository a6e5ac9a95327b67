"""Block diffusion (BD3-LM): the training view, the graphs and the reference sampler's exact cache agree."""

import os

import numpy as np
import pytest
import torch

from conftest import TINY, run_ort
from dllm.export import write_model_folder
from dllm.graph import OUTPUT_NAMES
from dllm.model import PADDING_KEY_BIAS, LLaDA, ModelConfig
from dllm.reference import Params, ReferenceSampler, block_starts, result
from dllm.train import block_causal_training_bias, noisy_hidden_states

BLOCK = 4


def small_bd3(seed=0):
    torch.manual_seed(seed)
    return LLaDA(ModelConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=4096,
                             max_sequence_length=64, block_size=BLOCK)).eval()


def test_training_mask_is_bd3s():
    allowed = block_causal_training_bias(6, 2)[0, 0] == 0  # blocks {0,1} {2,3} {4,5}; [x_t, x_0]
    noisy_to_noisy, noisy_to_clean = allowed[:6, :6], allowed[:6, 6:]
    clean_to_noisy, clean_to_clean = allowed[6:, :6], allowed[6:, 6:]
    block = torch.arange(6) // 2
    assert torch.equal(noisy_to_noisy, block[:, None] == block[None, :])
    assert torch.equal(noisy_to_clean, block[None, :] < block[:, None])
    assert not clean_to_noisy.any()
    assert torch.equal(clean_to_clean, block[None, :] <= block[:, None])
    assert block_causal_training_bias(6, 2).min() == PADDING_KEY_BIAS


def test_training_view_equals_inference_view():
    """What the trainer optimises for noisy block b (one pass over [x_t, x_0]) is what the sampler computes for it
    over a canvas of the clean blocks before b and the noisy block b."""
    model = small_bd3()
    torch.manual_seed(1)
    clean = torch.randint(10, 4000, (2, 12))
    noisy = torch.where(torch.rand(clean.shape) < 0.5, torch.full_like(clean, 2), clean)
    with torch.no_grad():
        trained = noisy_hidden_states(model, noisy, clean)
        for b in range(3):
            lo, hi = b * BLOCK, (b + 1) * BLOCK
            canvas = torch.cat((clean[:, :lo], noisy[:, lo:hi]), dim=1)
            seen = model.hidden_states(canvas, torch.ones_like(canvas))[:, lo:hi]
            torch.testing.assert_close(trained[:, lo:hi], seen, atol=1e-5, rtol=1e-5)


def test_later_blocks_do_not_change_earlier_ones():
    model = small_bd3()
    a = torch.tensor([[6, 100, 200, 300, 400, 500, 2, 2, 2, 2]])
    b = a.clone()
    b[0, 8:] = torch.tensor([900, 901])  # block 2 only
    with torch.no_grad():
        ha = model.hidden_states(a, torch.ones_like(a))
        hb = model.hidden_states(b, torch.ones_like(b))
    torch.testing.assert_close(ha[:, :8], hb[:, :8])
    assert not torch.allclose(ha[:, 8:], hb[:, 8:])


@pytest.mark.parametrize("gen_start,max_tokens,expected", [
    (8, 8, [8, 12, 16]),         # the prompt ends on a block boundary
    (6, 8, [6, 8, 12, 14]),      # the first block completes the prompt's last one; the last is cut at max_tokens
    (5, 3, [5, 8]),
    (7, 1, [7, 8]),
    (5, 1, [5, 6]),
])
def test_block_starts_are_counted_from_position_zero(gen_start, max_tokens, expected):
    assert block_starts(gen_start, Params(max_tokens=max_tokens, steps=max_tokens, block_length=BLOCK), BLOCK) == expected


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    model = small_bd3()
    out = tmp_path_factory.mktemp("bd3")
    meta = write_model_folder(model, str(out), os.path.join(TINY, "tokenizer.json"), k=16, name="small-bd3")
    return model, str(out), meta


def test_folder_declares_the_architecture(folder):
    _, _, meta = folder
    assert meta["architecture"] == "block_diffusion" and meta["block_size"] == BLOCK
    assert meta["generation_defaults"]["block_length"] == BLOCK
    assert meta["model_config"]["block_size"] == BLOCK


def test_onnx_graphs_apply_the_block_causal_rule(folder):
    """Full graph, cached graph over a prefilled cache, and PyTorch agree; the cached step needs only the blocks
    before the current one."""
    model, out, _ = folder
    row = [6, 11, 300, 44, 51, 60, 2, 2, 2, 2]  # model blocks [0,4) [4,8) [8,10): current block [4, 8)
    length, start, end = len(row), 4, 8
    ids = torch.tensor([row])
    full = run_ort(os.path.join(out, "model.onnx"), dict(
        input_ids=ids, attention_mask=torch.ones(1, length, dtype=torch.int64), positions=torch.arange(6, 8)[None],
        cfg_scale=torch.zeros(1), uncond_row=torch.zeros(1, dtype=torch.int64)))
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids))[0, 6:8]
    np.testing.assert_allclose(full["topk_logits"][0, :, 0], logits.max(-1).values.numpy(), atol=1e-4)
    kv = os.path.join(out, "model.kv.onnx")
    prefill = run_ort(kv, dict(
        input_ids=ids[:, :start], position_ids=torch.arange(start)[None], attention_mask=torch.ones(1, start, dtype=torch.int64),
        past_kv=torch.zeros(2, 2, 1, 4, 0, 16), positions=torch.zeros(1, 1, dtype=torch.int64), cfg_scale=torch.zeros(1),
        uncond_row=torch.zeros(1, dtype=torch.int64)))
    step = run_ort(kv, dict(
        input_ids=ids[:, start:end], position_ids=torch.arange(start, end)[None],
        attention_mask=torch.ones(1, end, dtype=torch.int64),
        past_kv=torch.tensor(prefill["present_kv"], dtype=torch.float32), positions=torch.arange(2, 4)[None],
        cfg_scale=torch.zeros(1), uncond_row=torch.zeros(1, dtype=torch.int64)))
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(step[name], full[name], atol=1e-5, err_msg=name)


CASES = [
    Params(max_tokens=12, steps=12, block_length=BLOCK),
    Params(max_tokens=10, steps=5, block_length=BLOCK),
    Params(max_tokens=12, steps=12, block_length=BLOCK, threshold=0.3),
    Params(max_tokens=8, steps=8, block_length=BLOCK, remasking="margin"),
    Params(max_tokens=12, steps=12, block_length=BLOCK, temperature=0.9, seed=5),
]
PROMPTS = [[100, 200, 300], [7, 8, 9, 10, 11, 12, 13], [500]]


@pytest.mark.parametrize("params", CASES, ids=lambda p: f"{p.remasking}-{p.threshold}-{p.temperature}-{p.steps}")
def test_reference_cache_is_exact(folder, params):
    """The block cache (prefill once, append each completed block) gives the tokens of no cache, alone and batched
    with prompts of other lengths (other block alignments)."""
    model, _, meta = folder
    sampler = ReferenceSampler(model, meta)
    outputs = {}
    for mode in ("none", "prefix"):
        p = Params(**{**params.__dict__, "cache": mode})
        alone = []
        for prompt in PROMPTS:
            seq = sampler.new_sequence(prompt, p)
            sampler.generate([seq])
            alone.append(result(seq))
        batch = [sampler.new_sequence(prompt, p) for prompt in PROMPTS]
        sampler.generate(batch)
        assert [result(s) for s in batch] == alone
        outputs[mode] = alone
        if mode == "prefix":
            assert all(s.refreshes == 1 for s in batch)  # one prefill, then only cached steps
    assert outputs["none"] == outputs["prefix"]


def test_reference_refuses_what_the_model_cannot_do(folder):
    model, _, meta = folder
    sampler = ReferenceSampler(model, meta)
    for params, suffix in [(Params(block_length=8), []), (Params(block_length=BLOCK, cfg_scale=1.0), []),
                           (Params(block_length=BLOCK, cache="dual"), []), (Params(block_length=BLOCK), [5, 6])]:
        with pytest.raises(ValueError):
            sampler.new_sequence([100], params, suffix)
