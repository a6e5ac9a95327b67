import os

import numpy as np
import onnx
import pytest
import torch

from conftest import TINY, run_ort
from dllm.export import write_model_folder
from dllm.graph import (CACHED_INPUT_NAMES, CACHED_OUTPUT_NAMES, INPUT_NAMES, OUTPUT_NAMES, CachedSamplingGraph,
                        SamplingGraph, guided_head)
from dllm.model import LLaDA, ModelConfig


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    config = dict(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=4096, max_sequence_length=64)
    return LLaDA(ModelConfig(**(config | overrides))).eval()


def left_padded(rows, pad=0):
    """Token lists -> input_ids, attention_mask, left padded to the longest."""
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), pad, dtype=torch.int64)
    mask = torch.zeros((len(rows), length), dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = torch.tensor(row)
        mask[i, length - len(row):] = 1
    return ids, mask


def feeds_for(rows, span, cfg=None, uncond=None):
    """Rows whose last `span` tokens are the positions asked for."""
    ids, mask = left_padded(rows)
    n, length = ids.shape
    positions = torch.arange(length - span, length).repeat(n, 1)
    cfg_scale = torch.tensor(cfg if cfg is not None else [0.0] * n, dtype=torch.float32)
    uncond_row = torch.tensor(uncond if uncond is not None else list(range(n)), dtype=torch.int64)
    return dict(input_ids=ids, attention_mask=mask, positions=positions, cfg_scale=cfg_scale, uncond_row=uncond_row)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_model()
    out = tmp_path_factory.mktemp("small")
    write_model_folder(model, str(out), os.path.join(TINY, "tokenizer.json"), k=16, name="small")
    return model, str(out / "model.onnx")


ROWS = [[6, 11, 300, 2, 2, 2, 2], [6, 900, 17, 44, 51, 2, 2, 2, 2, 2, 2], [6, 2, 2, 2, 2]]


@pytest.mark.parametrize("rows", [ROWS[:1], ROWS], ids=["batch1", "batch3-left-padded"])
def test_onnx_matches_pytorch(exported, rows):
    model, path = exported
    feeds = feeds_for(rows, span=4)
    with torch.no_grad():
        expected = SamplingGraph(model, 16)(*(feeds[n] for n in INPUT_NAMES))
    got = run_ort(path, feeds)
    assert np.array_equal(got["topk_ids"][..., 0], expected[1][..., 0].numpy())
    np.testing.assert_allclose(got["topk_logits"], expected[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(got["logsumexp"], expected[2].numpy(), atol=1e-4)
    np.testing.assert_allclose(got["entropy"], expected[3].numpy(), atol=1e-4)


def test_padded_row_equals_row_alone(exported):
    _, path = exported
    together = run_ort(path, feeds_for(ROWS, span=4))
    for i, row in enumerate(ROWS):
        alone = run_ort(path, feeds_for([row], span=4))
        for name in OUTPUT_NAMES:
            np.testing.assert_allclose(together[name][i], alone[name][0], atol=1e-5, err_msg=f"row {i} {name}")


def test_guidance_over_full_vocabulary(exported):
    model, path = exported
    cond, uncond = ROWS[1], [6] + [2] * (len(ROWS[1]) - 1)  # prompt replaced by masks
    feeds = feeds_for([cond, uncond, ROWS[0]], span=4, cfg=[1.5, 0.0, 0.0], uncond=[1, 1, 2])
    got = run_ort(path, feeds)
    with torch.no_grad():
        logits = model(feeds["input_ids"], feeds["attention_mask"])
    pos = feeds["positions"]
    c, u, plain = (logits[i, pos[i]] for i in range(3))
    guided = u + 2.5 * (c - u)
    np.testing.assert_allclose(got["topk_logits"][0], guided.topk(16).values.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["logsumexp"][0], guided.logsumexp(-1).numpy(), atol=1e-4)
    np.testing.assert_allclose(got["topk_logits"][2], plain.topk(16).values.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["topk_logits"][1], u.topk(16).values.numpy(), atol=1e-4)


def test_head_entropy_and_logsumexp_are_exact():
    logits = torch.randn(2, 3, 50)
    top, ids, lse, ent = guided_head(logits, torch.zeros(2), torch.arange(2), 50)
    wide = logits.double()
    p = wide.softmax(-1)
    assert lse.dtype == ent.dtype == torch.float64
    torch.testing.assert_close(lse, wide.logsumexp(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, -(p * p.log()).sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(top.double().exp().sum(-1), lse.exp(), rtol=1e-12, atol=0)  # K = V covers all mass


def test_k_larger_than_vocabulary_is_refused():
    with pytest.raises(ValueError, match="vocabulary size"):
        SamplingGraph(small_model(), 4097)


def test_metadata_and_dynamic_axes(exported):
    _, path = exported
    proto = onnx.load(path)
    assert proto.opset_import[0].version == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"dllm-onnx/2"' in meta["format"] and meta["mask_token_id"] == "2"
    assert [i.name for i in proto.graph.input] == INPUT_NAMES
    assert [o.name for o in proto.graph.output] == OUTPUT_NAMES
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["N", "L"]


def test_committed_tiny_model_runs_in_onnxruntime():
    feeds = feeds_for([[6, 464, 2, 2, 2]], span=3)
    got = run_ort(os.path.join(TINY, "model.onnx"), feeds)
    assert got["topk_ids"].shape == (1, 3, 64)
    assert np.all(np.diff(got["topk_logits"], axis=-1) <= 0)


def test_external_data_above_threshold(tmp_path):
    model = small_model()
    path = str(tmp_path / "model.onnx")
    from dllm.export import export_onnx

    export_onnx(model, path, 16, {"format": '"dllm-onnx/1"'}, external_above=0)
    assert os.path.getsize(tmp_path / "model.onnx.data") > 4 * model.num_parameters() * 0.9
    assert os.path.getsize(path) < 100_000
    feeds = feeds_for(ROWS, span=4)
    with torch.no_grad():
        expected = SamplingGraph(model, 16)(*(feeds[n] for n in INPUT_NAMES))
    np.testing.assert_allclose(run_ort(path, feeds)["topk_logits"], expected[0].numpy(), atol=1e-4)


def test_fp16_variant_keeps_the_contract(tmp_path):
    model = small_model()
    write_model_folder(model, str(tmp_path), os.path.join(TINY, "tokenizer.json"), k=16, name="small", fp16=True)
    proto = onnx.load(str(tmp_path / "model.fp16.onnx"))
    matrices = [i for i in proto.graph.initializer if len(i.dims) == 2]
    assert matrices and all(i.data_type == onnx.TensorProto.FLOAT16 for i in matrices)
    assert [o.type.tensor_type.elem_type for o in proto.graph.output][0] == onnx.TensorProto.FLOAT
    feeds = feeds_for(ROWS, span=4)
    fp32 = run_ort(str(tmp_path / "model.onnx"), feeds)
    fp16 = run_ort(str(tmp_path / "model.fp16.onnx"), feeds)
    assert np.isfinite(fp16["topk_logits"]).all()
    np.testing.assert_allclose(fp16["topk_logits"], fp32["topk_logits"], atol=2e-2)
    np.testing.assert_allclose(fp16["logsumexp"], fp32["logsumexp"], atol=2e-2)


class HeadOnly(torch.nn.Module):
    """The sampling head alone, fed logits directly, so a crafted logit vector can go through ONNX Runtime."""

    def forward(self, logits, cfg_scale, uncond_row):
        return guided_head(logits, cfg_scale, uncond_row, 4)


def test_exact_head_on_crafted_logits(tmp_path):
    """One near-certain position among 4096 logits: the mass of the 4095 small ones (each far below half an ulp of
    1 in float32) must reach the confidence. float64 reference: p = 1 / (1 + 4095 e^-20), i.e. 1 - 8.4e-6."""
    vocab = 4096
    logits = torch.zeros(1, 3, vocab)
    logits[0, 0, 7] = 20.0  # near certain
    logits[0, 1, :] = torch.linspace(-30.0, 5.0, vocab)  # a spread
    logits[0, 2, 100], logits[0, 2, 200] = 12.0, 12.0 - 1e-3  # a near-tie among near-certain tokens
    path = str(tmp_path / "head.onnx")
    torch.onnx.export(HeadOnly(), (logits, torch.zeros(1), torch.zeros(1, dtype=torch.int64)), path, opset_version=17,
                      input_names=["logits", "cfg_scale", "uncond_row"],
                      output_names=["topk_logits", "topk_ids", "logsumexp", "entropy"])
    got = run_ort(path, {"logits": logits, "cfg_scale": torch.zeros(1), "uncond_row": torch.zeros(1, dtype=torch.int64)})

    wide = logits.double().numpy()[0]
    lse = np.log(np.exp(wide - wide.max(-1, keepdims=True)).sum(-1)) + wide.max(-1)
    probs = np.exp(wide - lse[:, None])
    entropy = -(probs * np.log(probs)).sum(-1)
    confidence = np.exp(got["topk_logits"][0].astype(np.float64) - got["logsumexp"][0][:, None])
    expected = np.take_along_axis(probs, got["topk_ids"][0].astype(np.int64), -1)
    assert abs(confidence[0, 0] - 1 / (1 + 4095 * np.exp(-20.0))) < 1e-9
    np.testing.assert_allclose(confidence, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(got["logsumexp"][0], lse, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["entropy"][0], entropy, rtol=0, atol=1e-9)


class Float32Normaliser(torch.nn.Module):
    def forward(self, logits):
        return logits.logsumexp(-1)


def test_float32_normaliser_in_onnx_runtime_is_inexact(tmp_path):
    """Why the head is float64: ONNX Runtime's float32 ReduceLogSumExp (the earlier head) loses the small mass."""
    logits = torch.zeros(1, 1, 4096)
    logits[0, 0, 7] = 20.0
    path = str(tmp_path / "lse32.onnx")
    torch.onnx.export(Float32Normaliser(), (logits,), path, opset_version=17, input_names=["logits"], output_names=["lse"])
    error = abs(run_ort(path, {"logits": logits})["lse"][0, 0] - (20.0 + np.log1p(4095 * np.exp(-20.0))))
    assert error > 1e-6


# --- the cached graph (format 2, docs/models.md) ---------------------------------------------------------------

def cached_full_feeds(rows, span):
    """A full pass as cached-graph feeds: the whole left-padded canvas is the query, nothing cached."""
    f = feeds_for(rows, span)
    n = f["input_ids"].shape[0]
    return dict(input_ids=f["input_ids"], position_ids=(f["attention_mask"].cumsum(-1) - 1).clamp(min=0),
                attention_mask=f["attention_mask"], past_kv=torch.zeros(2, 2, n, 4, 0, 16), positions=f["positions"],
                cfg_scale=f["cfg_scale"], uncond_row=f["uncond_row"])


def test_folder_holds_each_weight_once(exported, tmp_path):
    model, path = exported
    folder = os.path.dirname(path)
    names = sorted(os.listdir(folder))
    assert {"model.onnx", "model.kv.onnx", "weights.data", "dllm.json"} <= set(names)
    data = os.path.getsize(os.path.join(folder, "weights.data"))
    single = tmp_path / "single.onnx"
    from dllm.export import export_onnx
    export_onnx(model, str(single), 16, {})
    assert data <= os.path.getsize(single) + 64 * 32, "the two graphs share one copy of the weights"
    for graph in ("model.onnx", "model.kv.onnx"):
        assert os.path.getsize(os.path.join(folder, graph)) < 200_000
        proto = onnx.load(os.path.join(folder, graph), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external and all(e.value == "weights.data" for t in external for e in t.external_data if e.key == "location")
    proto = onnx.load(os.path.join(folder, "model.kv.onnx"), load_external_data=False)
    assert [i.name for i in proto.graph.input] == CACHED_INPUT_NAMES
    assert [o.name for o in proto.graph.output] == CACHED_OUTPUT_NAMES
    import json
    spec = json.load(open(os.path.join(folder, "dllm.json")))
    assert spec["cached"] == {"fp32": "model.kv.onnx", "fp16": None, "layers": 2, "kv_heads": 4, "head_dim": 16}


def test_cached_graph_full_pass_equals_full_graph(exported):
    model, path = exported
    kv_path = os.path.join(os.path.dirname(path), "model.kv.onnx")
    got = run_ort(kv_path, cached_full_feeds(ROWS, span=4))
    full = run_ort(path, feeds_for(ROWS, span=4))
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], full[name], atol=1e-5, err_msg=name)
    f = cached_full_feeds(ROWS, span=4)
    with torch.no_grad():
        expected = CachedSamplingGraph(model, 16)(*(f[n] for n in CACHED_INPUT_NAMES))
    assert got["present_kv"].shape == (2, 2, 3, 4, 11, 16)
    np.testing.assert_allclose(got["present_kv"], expected[4].numpy(), atol=1e-5)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_cached_step_over_its_own_refresh_is_exact(exported, mode):
    """A step over keys/values cached from the same canvas computes the full pass (RoPE: keys cached rotated by their
    absolute positions; dual: the block's cached entries masked, its fresh ones from the query)."""
    _, path = exported
    kv_path = os.path.join(os.path.dirname(path), "model.kv.onnx")
    row = [6, 900, 17, 44, 51, 2, 2, 2, 2, 30, 31]  # prompt 5, block [5, 9), suffix 2
    start, end, length = 5, 9, len(row)
    present = torch.tensor(run_ort(kv_path, cached_full_feeds([row], span=4))["present_kv"], dtype=torch.float32)
    if mode == "prefix":
        query, past, mask_past = row[start:], present[..., :start, :], [1] * start
    else:
        query, past, mask_past = row[start:end], present, [1] * start + [0] * (end - start) + [1] * (length - end)
    q = len(query)
    feeds = dict(input_ids=torch.tensor([query]), position_ids=torch.arange(start, start + q)[None],
                 attention_mask=torch.tensor([mask_past + [1] * q]), past_kv=past.contiguous(),
                 positions=torch.arange(0, 4)[None], cfg_scale=torch.zeros(1), uncond_row=torch.zeros(1, dtype=torch.int64))
    step = run_ort(kv_path, feeds)
    full = run_ort(path, dict(input_ids=torch.tensor([row]), attention_mask=torch.ones(1, length, dtype=torch.int64),
                              positions=torch.arange(start, end)[None], cfg_scale=torch.zeros(1),
                              uncond_row=torch.zeros(1, dtype=torch.int64)))
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(step[name], full[name], atol=1e-5, err_msg=name)


def test_fp16_cached_graph(tmp_path):
    model = small_model()
    write_model_folder(model, str(tmp_path), os.path.join(TINY, "tokenizer.json"), k=16, name="small", fp16=True)
    assert os.path.getsize(tmp_path / "weights.fp16.data") < 0.6 * os.path.getsize(tmp_path / "weights.data")
    f = cached_full_feeds(ROWS, span=4)
    fp32 = run_ort(str(tmp_path / "model.kv.onnx"), f)
    fp16 = run_ort(str(tmp_path / "model.kv.fp16.onnx"), f)
    np.testing.assert_allclose(fp16["topk_logits"], fp32["topk_logits"], atol=2e-2)
    np.testing.assert_allclose(fp16["present_kv"], fp32["present_kv"], atol=2e-2)


# --- the fp16 graph's float32 islands ----------------------------------------------------------------------------

# Ops of RoPE (Cos, Sin), RMSNorm's statistics (Pow, ReduceMean, Sqrt), the attention softmax and the head (TopK and
# the normaliser's Exp, ReduceSum, Log): LLaDA computes them in float32, so must the fp16 graph.
FLOAT32_OPS = {"Cos", "Sin", "Pow", "ReduceMean", "Sqrt", "Softmax", "TopK", "Exp", "ReduceSum", "Log"}


@pytest.fixture(scope="module")
def fp16_folder(tmp_path_factory):
    model = small_model(n_kv_heads=2)
    out = tmp_path_factory.mktemp("fp16")
    write_model_folder(model, str(out), os.path.join(TINY, "tokenizer.json"), k=16, name="small", fp16=True)
    return model, str(out)


@pytest.mark.parametrize("graph", ["model.fp16.onnx", "model.kv.fp16.onnx"])
def test_fp16_graph_keeps_float32_islands(fp16_folder, graph):
    """Inspects the exported graph: every op of the islands reads float32 (or the head's float64), every product
    with a weight reads float16, and the weight matrices are stored in float16."""
    _, folder = fp16_folder
    proto = onnx.load(os.path.join(folder, graph), load_external_data=False)
    typed = onnx.shape_inference.infer_shapes(proto).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*typed.value_info, *typed.input, *typed.output]}
    elem.update({t.name: t.data_type for t in proto.graph.initializer})
    weights = {t.name for t in proto.graph.initializer if len(t.dims) == 2}
    assert weights and all(elem[w] == onnx.TensorProto.FLOAT16 for w in weights)
    f16, floats = onnx.TensorProto.FLOAT16, (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    seen = {}
    for node in proto.graph.node:
        types = [elem[i] for i in node.input if i and elem.get(i) in floats]
        if node.op_type in FLOAT32_OPS:
            assert types and f16 not in types, f"{node.name} ({node.op_type}) reads float16"
            seen[node.op_type] = seen.get(node.op_type, 0) + 1
        if node.op_type == "MatMul" and weights & set(node.input):
            assert types == [f16, f16], node.name
            seen["MatMul"] = seen.get("MatMul", 0) + 1
    layers = 2
    assert seen["ReduceMean"] == seen["Pow"] == 2 * layers + 1  # attn_norm, ff_norm per layer, ln_f
    assert seen["Softmax"] == layers and seen["TopK"] == 1 and seen["Cos"] == seen["Sin"] == 1
    assert seen["MatMul"] == 7 * layers + 1  # q, k, v, out, gate, up, down per layer; the output head


def test_fp16_graph_under_native_float16_arithmetic(tmp_path):
    """Emulated native float16 (tests/emulate_fp16.py: what the CUDA provider computes) on inputs that break a plain
    float16 graph: positions up to 1151 (float16's spacing there is 1, so rotary angles are off by up to half a
    radian) and a token whose embedding has a channel of 300 (x^2 = 90000 overflows float16, and RMSNorm then
    zeroes that token's vector). The control, the fp32 graph run entirely in float16, gets both wrong; the fp16
    graph, with its float32 islands, matches float32 PyTorch to float16's precision."""
    import emulate_fp16

    torch.manual_seed(0)
    model = LLaDA(ModelConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=128, vocab_size=512,
                              max_sequence_length=2048, init_std=0.2)).eval()
    with torch.no_grad():
        model.transformer["wte"].weight[7, 3] = 300.0
    write_model_folder(model, str(tmp_path), os.path.join(TINY, "tokenizer.json"), k=8, name="small", fp16=True)
    length = 1152
    ids = torch.randint(8, 512, (1, length), generator=torch.Generator().manual_seed(1))
    ids[0, -3] = 7
    feeds = dict(input_ids=ids, attention_mask=torch.ones(1, length, dtype=torch.int64),
                 positions=torch.arange(length - 8, length)[None], cfg_scale=torch.zeros(1),
                 uncond_row=torch.zeros(1, dtype=torch.int64))
    with torch.no_grad():
        top, top_ids, _, _ = SamplingGraph(model, 8)(*(feeds[n] for n in INPUT_NAMES))
    arrays = {k: v.numpy() for k, v in feeds.items()}
    ours = emulate_fp16.run(str(tmp_path / "model.fp16.onnx"), arrays)
    plain = emulate_fp16.run(str(tmp_path / "model.onnx"), arrays, naive=True)
    scale = np.abs(top.numpy()[..., :1])
    assert np.array_equal(ours["topk_ids"][..., 0], top_ids[..., 0].numpy())
    assert np.abs(ours["topk_logits"] - top.numpy()).max() / scale.max() < 1e-2
    np.testing.assert_allclose(ours["topk_logits"], top.numpy(), rtol=0, atol=float(1e-2 * scale.max()))
    # The control: a plain float16 graph loses the spiked token and misranks others.
    assert not np.array_equal(plain["topk_ids"][..., 0], top_ids[..., 0].numpy())
    assert np.abs(plain["topk_logits"][0, 5] - top.numpy()[0, 5]).max() > 0.5 * scale[0, 5, 0]
