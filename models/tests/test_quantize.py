"""Quantized model folders (dllm/quantize.py): the packing against a plain re-implementation of the rule, the op's
layout against onnxruntime-node, the graph rewrite, quantized folders against the dequantized PyTorch module, and the
refusals by name."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS, TINY, run_ort
from dllm import quantize
from dllm.convert import CheckpointError, convert, quantize_folder, rewrite_folder
from dllm.export import cached_proto, full_proto, write_model_folder
from dllm.graph import CACHED_INPUT_NAMES, INPUT_NAMES, CachedSamplingGraph, SamplingGraph, dllm_json
from dllm.model import LLaDA, ModelConfig
from dllm.quantize import Quantization, QuantizationError, dequantize, pack, quantize_rows, unpack
from test_convert import synthetic_checkpoint


def reference_quantize_dequantize(w: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """The symmetric rule written out block by block (onnxruntime's quant_slice_symmetric): the value of largest
    magnitude m (the negative one on a tie) is code -2^(bits-1); round half to even, clip, scale back."""
    half = 2 ** (bits - 1)
    out = np.zeros_like(w)
    for r in range(w.shape[0]):
        for start in range(0, w.shape[1], block_size):
            block = w[r, start:start + block_size]
            hi, lo = block.max(), block.min()
            m = max(hi, 0.0) if abs(max(hi, 0.0)) > abs(min(lo, 0.0)) else min(lo, 0.0)  # the zero padding counts
            scale = np.float32(m) / np.float32(-half)
            q = np.zeros_like(block) if scale == 0 else np.clip(np.round(block / scale), -half, half - 1)
            out[r, start:start + block_size] = q.astype(np.float32) * scale
    return out


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block_size,k", [(16, 64), (32, 96), (64, 96), (128, 192), (256, 256)])
def test_pack_dequantize_round_trip(bits, block_size, k):
    rng = np.random.default_rng(bits * 1000 + block_size)
    w = (rng.standard_normal((24, k)) * rng.uniform(0.001, 0.1, (24, 1))).astype(np.float32)
    w[0, :block_size] = 0.0  # an all-zero block: scale 0, codes at the zero point
    w[1, :block_size] *= 0.01
    w[1, 3], w[1, 5] = 0.5, -0.5  # a tie in magnitude: the negative one sets the scale (code 0)
    codes, scales = quantize_rows(w, bits, block_size)
    assert codes.shape == (24, -(-k // block_size), block_size) and scales.shape == codes.shape[:2]
    packed = pack(codes, bits)
    assert packed.shape[-1] == block_size * bits // 8 and packed.dtype == np.uint8
    assert np.array_equal(unpack(packed, bits), codes)
    deq = dequantize(packed, scales, bits, k)
    assert np.array_equal(deq, reference_quantize_dequantize(w, bits, block_size))
    assert np.all(deq[0, :block_size] == 0) and scales[0, 0] == 0 and np.all(codes[0, 0] == 2 ** (bits - 1))
    assert scales[1, 0] > 0 and deq[1, 5] == -0.5  # the extreme value is exact

def test_nibble_order_and_default_zero_point():
    codes = np.array([[[1, 2, 15, 0] + [8] * 12]], dtype=np.uint8)
    assert list(pack(codes, 4)[0, 0, :2]) == [0x21, 0x0F]  # first code in the low nibble
    w = dequantize(pack(codes, 4), np.array([[0.5]], np.float32), 4, 16)
    assert list(w[0, :4]) == [(1 - 8) * 0.5, (2 - 8) * 0.5, (15 - 8) * 0.5, (0 - 8) * 0.5]
    assert list(dequantize(np.array([[[0, 128, 255]]], np.uint8), np.array([[2.0]], np.float32), 8, 3)[0]) == \
        [-256.0, 0.0, 254.0]


def matmulnbits_graph(path, w, q: Quantization):
    n, k = w.shape
    codes, scales = quantize_rows(w, q.bits, q.block_size)
    attrs = dict(K=k, N=n, bits=q.bits, block_size=q.block_size)
    if q.accuracy_level:
        attrs["accuracy_level"] = q.accuracy_level
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])],
                              [numpy_helper.from_array(pack(codes, q.bits), "B"), numpy_helper.from_array(scales, "S")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
              str(path))
    return dequantize(pack(codes, q.bits), scales, q.bits, k)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block_size,k", [(32, 128), (64, 96)])
def test_onnxruntime_computes_with_the_dequantized_weights(tmp_path, bits, block_size, k):
    """The layout (codes along K, low nibble first, scales [N, k_blocks], default zero point, K padded to whole
    blocks) is the op's: onnxruntime-node's output is A @ dequantize(W)^T to float rounding with float32 compute
    (accuracy levels 0 and 1); with accuracy level 4 the CPU quantizes A to int8 per block, a visible but small error."""
    rng = np.random.default_rng(k + bits)
    w = (rng.standard_normal((40, k)) * 0.05).astype(np.float32)
    a = torch.from_numpy(rng.standard_normal((3, k)).astype(np.float32))
    for level, tolerance in ((0, 1e-5), (1, 1e-5), (4, 3e-2)):
        deq = matmulnbits_graph(tmp_path / "m.onnx", w, Quantization(bits, block_size, level))
        expected = a.double().numpy() @ deq.T.astype(np.float64)
        got = run_ort(str(tmp_path / "m.onnx"), {"A": a})["Y"]
        assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max(), (level, np.abs(got - expected).max())


def small_config(**overrides):
    return ModelConfig(**(dict(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=96, vocab_size=4096,
                                max_sequence_length=64) | overrides))


def test_graph_rewrite_replaces_each_linear_layer_and_nothing_else():
    config = small_config(weight_tying=False, include_qkv_bias=True, n_kv_heads=2)
    for trace in (full_proto, cached_proto):
        before = trace(config, 8)
        after = trace(config, 8)
        replaced = quantize.quantize_proto(after, Quantization(4, 32, 4))
        linear = [f"transformer.blocks.{i}.{name}.weight" for i in range(2) for name in quantize.LINEAR_LAYERS]
        assert sorted(replaced) == sorted(linear)
        assert len(before.graph.node) == len(after.graph.node)
        for old, new in zip(before.graph.node, after.graph.node):
            param = quantize.linear_parameter(old.input[1]) if old.op_type == "MatMul" and len(old.input) > 1 else None
            if param is None:
                assert old == new  # the embedding Gather, the head's MatMul, the biases' Adds: untouched
                continue
            assert (new.op_type, new.domain) == ("MatMulNBits", "com.microsoft")
            assert list(new.input) == [old.input[0], f"{param}^Q4", f"{param}^Q4.scales"]
            assert list(new.output) == list(old.output)
            attrs = {a.name: helper.get_attribute_value(a) for a in new.attribute}
            k, n = {t.name: tuple(t.dims) for t in before.graph.initializer}[old.input[1]]
            assert attrs == {"K": k, "N": n, "bits": 4, "block_size": 32, "accuracy_level": 4}
        heads = [n for n in after.graph.node if n.op_type == "MatMul" and "transformer.ff_out.weight^T" in n.input]
        assert len(heads) == 1, "the untied output head stays a float MatMul"
        inits = {t.name: t for t in after.graph.initializer}
        assert not any(quantize.linear_parameter(name) for name in inits)
        assert inits["transformer.wte.weight"].data_type == TensorProto.FLOAT
        assert inits["transformer.blocks.0.q_proj.bias"].data_type == TensorProto.FLOAT
        assert list(inits["transformer.blocks.1.ff_out.weight^Q4"].dims) == [64, 3, 16]  # K 96 -> 3 blocks of 32
        assert list(inits["transformer.blocks.1.ff_out.weight^Q4.scales"].dims) == [64, 3]
        assert any(o.domain == "com.microsoft" and o.version == 1 for o in after.opset_import)


def test_tied_head_stays_float_and_fp16_scales_follow_the_graph(tmp_path):
    torch.manual_seed(3)
    model = LLaDA(small_config()).eval()
    meta = write_model_folder(model, str(tmp_path), os.path.join(TINY, "tokenizer.json"), 8, "q", fp16=True,
                              quantization=Quantization(8, 32, 1))
    assert meta["quantization"] == {"bits": 8, "block_size": 32, "accuracy_level": 1, "layers": "linear"}
    for graph, scale_type in (("model.kv.onnx", TensorProto.FLOAT), ("model.kv.fp16.onnx", TensorProto.FLOAT16)):
        proto = onnx.load(str(tmp_path / graph), load_external_data=False)
        nbits = [n for n in proto.graph.node if n.op_type == "MatMulNBits"]
        assert len(nbits) == 14
        types = {t.name: t.data_type for t in proto.graph.initializer}
        assert {types[n.input[2]] for n in nbits} == {scale_type}
        assert any(n.op_type == "MatMul" and "transformer.wte.weight^T" in n.input for n in proto.graph.node)
        assert json.loads({p.key: p.value for p in proto.metadata_props}["quantization"])["bits"] == 8
    ids = torch.tensor([[6, 40, 41, 2, 2]])
    feeds = dict(input_ids=ids, attention_mask=torch.ones_like(ids), positions=torch.tensor([[3, 4]]),
                 cfg_scale=torch.zeros(1), uncond_row=torch.arange(1))
    full = run_ort(str(tmp_path / "model.onnx"), feeds)
    half = run_ort(str(tmp_path / "model.fp16.onnx"), feeds)
    np.testing.assert_allclose(half["topk_logits"], full["topk_logits"], atol=2e-2)


def feeds_for(length=9):
    ids = torch.tensor([[6, 300, 301, 900, 45, 17, 2, 2, 2][:length], [0, 0, 6, 17, 99, 23, 2, 2, 2][:length]])
    mask = (ids != 0).long()
    return dict(input_ids=ids, attention_mask=mask, positions=torch.tensor([[5, 6, 7, 8]] * 2),
                cfg_scale=torch.tensor([0.0, 0.0]), uncond_row=torch.arange(2))


def matches_dequantized(folder, k=64, atol=1e-4):
    """The folder's graphs in onnxruntime-node against the PyTorch module holding its dequantized weights."""
    model = quantize.dequantized_model(folder)
    feeds = feeds_for()
    with torch.no_grad():
        top, top_ids, lse, _ = SamplingGraph(model, k)(*(feeds[n] for n in INPUT_NAMES))
    got = run_ort(os.path.join(folder, "model.onnx"), feeds)
    np.testing.assert_allclose(got["topk_logits"], top.numpy(), atol=atol)
    np.testing.assert_allclose(got["logsumexp"], lse.numpy(), atol=atol)
    assert np.array_equal(got["topk_ids"][..., :4], top_ids[..., :4].numpy())
    positions = (feeds["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    cfg = model.config
    past = torch.zeros(cfg.n_layers, 2, 2, cfg.effective_n_kv_heads, 0, cfg.head_dim)
    cached_feeds = dict(input_ids=feeds["input_ids"], position_ids=positions, attention_mask=feeds["attention_mask"],
                        past_kv=past, positions=feeds["positions"], cfg_scale=feeds["cfg_scale"],
                        uncond_row=feeds["uncond_row"])
    with torch.no_grad():
        expected = CachedSamplingGraph(model, k)(*(cached_feeds[n] for n in CACHED_INPUT_NAMES))
    cached = run_ort(os.path.join(folder, "model.kv.onnx"), cached_feeds)
    np.testing.assert_allclose(cached["topk_logits"], expected[0].numpy(), atol=atol)
    np.testing.assert_allclose(cached["present_kv"], expected[4].numpy(), atol=atol)
    return model


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_tiny_folder_matches_the_dequantized_model(tmp_path, bits):
    """models/tiny-llada quantized (accuracy level 1: float32 compute) computes, in onnxruntime-node, what the PyTorch
    module with the dequantized weights computes; the weights it holds are those the packing implies."""
    out = str(tmp_path / f"tiny-int{bits}")
    meta = quantize_folder(TINY, out, Quantization(bits, 32, 1))
    assert meta["quantization"]["bits"] == bits and meta["name"] == "tiny-llada"
    model = matches_dequantized(out)
    original = dict(LLaDA(ModelConfig.from_dict(meta["model_config"])).named_parameters())
    float_weights = quantize.FolderWeights(TINY)
    state = model.state_dict()
    for name in original:
        w = np.concatenate([float_weights.rows(name, s, s + 50) for s in range(0, float_weights.shape(name)[0], 50)])
        if quantize.linear_parameter(name + "^T"):
            codes, scales = quantize_rows(w, bits, 32)
            assert np.array_equal(state[name].numpy(), dequantize(pack(codes, bits), scales, bits, w.shape[1]))
        else:
            assert np.array_equal(state[name].numpy(), w), name  # embedding, norms, head: as they were
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in os.listdir(out)}
    assert sizes["weights.data"] < os.path.getsize(os.path.join(TINY, "weights.data")) * (0.55 if bits == 8 else 0.47)


def test_quantized_conversion_of_a_checkpoint(tmp_path, capsys):
    """dllm.convert --quantize: an untied, grouped-query, q/k/v-bias checkpoint with K not a multiple of the block
    (MLP 96 with block 64: the last block padded), in onnxruntime against the dequantized module; the report says so."""
    synthetic_checkpoint(tmp_path / "hf", include_qkv_bias=True, n_kv_heads=2)
    meta = convert(str(tmp_path / "hf"), str(tmp_path / "out"), "q", k=8, quantization=Quantization(4, 64, 1))
    assert meta["quantization"] == {"bits": 4, "block_size": 64, "accuracy_level": 1, "layers": "linear"}
    with open(tmp_path / "out" / "dllm.json") as f:
        assert json.load(f)["quantization"]["block_size"] == 64
    assert "linear layers int4 MatMulNBits, block 64, accuracy level 1" in capsys.readouterr().out
    matches_dequantized(str(tmp_path / "out"), k=8)


def test_streaming_in_small_blocks_writes_the_same_bytes(tmp_path):
    torch.manual_seed(5)
    model = LLaDA(small_config(mlp_hidden_size=160)).eval()
    import dllm.export as export

    outs = []
    for block in (export.BLOCK_ELEMENTS, 200):
        saved, export.BLOCK_ELEMENTS = export.BLOCK_ELEMENTS, block
        try:
            out = tmp_path / str(block)
            write_model_folder(model, str(out), os.path.join(TINY, "tokenizer.json"), 8, "q",
                               quantization=Quantization(4, 32, 4))
            outs.append((out / "weights.data").read_bytes())
        finally:
            export.BLOCK_ELEMENTS = saved
    assert outs[0] == outs[1]


def test_float_folders_are_written_as_before(tmp_path):
    """Without --quantize nothing changes: dllm.json has no quantization field, and the committed tiny model written
    again from its own weights is the same bytes."""
    assert "quantization" not in dllm_json(small_config(), 8, "x", False)
    with open(os.path.join(TINY, "dllm.json")) as f:
        spec = json.load(f)
    fields = ("chat_template", "eos_token_ids", "pad_token_id", "bos_token_id", "mask_token_id", "generation_defaults")
    from dllm.export import write_folder

    write_folder(ModelConfig.from_dict(spec["model_config"]), quantize.FolderWeights(TINY), str(tmp_path), os.path.join(TINY, "tokenizer.json"),
                 spec["topk"], spec["name"], **{k: spec[k] for k in fields})
    for name in ("dllm.json", "model.onnx", "model.kv.onnx", "model.device.onnx", "weights.data"):
        assert (tmp_path / name).read_bytes() == open(os.path.join(TINY, name), "rb").read(), name


@pytest.mark.parametrize("args,message", [
    (dict(bits=3), "3-bit weights are not supported"),
    (dict(bits=4, block_size=48), "--block-size 48: not a power of two"),
    (dict(bits=4, block_size=8), "--block-size 8: below MatMulNBits' minimum 16"),
    (dict(bits=8, block_size=512), "--block-size 512: above 256"),
    (dict(bits=4, accuracy_level=5), "--accuracy-level 5"),
])
def test_refusals_by_name(args, message):
    with pytest.raises(QuantizationError, match=message):
        Quantization(**args)


def test_refusals_of_the_command_lines(tmp_path):
    with pytest.raises(QuantizationError, match="--quantize fp8: one of int4, int8"):
        Quantization.parse("fp8")
    env = dict(os.environ, PYTHONPATH=MODELS)

    def run(*argv):
        return subprocess.run([sys.executable, "-m", *argv], cwd=MODELS, env=env, capture_output=True, text=True)

    hf = tmp_path / "hf"
    synthetic_checkpoint(hf)
    r = run("dllm.convert", "--checkpoint", str(hf), "--out", str(tmp_path / "o"), "--quantize", "int4", "--block-size", "48")
    assert r.returncode != 0 and "--block-size 48: not a power of two" in r.stderr and not (tmp_path / "o").exists()
    r = run("dllm.convert", "--checkpoint", str(hf), "--out", str(tmp_path / "o"), "--quantize", "int2")
    assert r.returncode != 0 and "2-bit weights are not supported" in r.stderr
    r = run("dllm.convert", "--checkpoint", str(hf), "--out", str(tmp_path / "o"), "--block-size", "64")
    assert r.returncode != 0 and "--block-size and --accuracy-level need --quantize" in r.stderr
    r = run("dllm.convert", "--from-folder", TINY, "--quantize", "int8")
    assert r.returncode != 0 and "--from-folder with --quantize writes a new folder: give it --out" in r.stderr
    r = run("dllm.export", "--checkpoint", "x.pt", "--tokenizer", "t", "--out", str(tmp_path / "o"), "--quantize", "int4",
            "--accuracy-level", "7")
    assert r.returncode != 0 and "--accuracy-level 7" in r.stderr
    quantized = str(tmp_path / "q")
    quantize_folder(TINY, quantized, Quantization(4))
    with pytest.raises(CheckpointError, match="a quantized folder .* keeps no float weights"):
        rewrite_folder(quantized)
    with pytest.raises(CheckpointError, match="already quantized"):
        quantize_folder(quantized, str(tmp_path / "qq"), Quantization(8))
    with pytest.raises(CheckpointError, match="not over it"):
        quantize_folder(TINY, TINY, Quantization(8))


def test_logits_comparison_by_shared_ids():
    """bench_quantize.compare_logits: top-K logits compared for the ids both lists hold (an id in one list only left
    out, the overlap says how many); the same outputs compare to zero; its KL is a lower bound on the exact
    full-vocabulary KL (compare_full), and its top-K KL is that of the renormalised shared ids."""
    from dllm.bench_quantize import compare_full, compare_logits, head_outputs, summarize_full

    ref = {"topk_logits": np.array([[[3.0, 2.0, 1.0, 0.0]]]), "topk_ids": np.array([[[10, 11, 12, 13]]]),
           "logsumexp": np.array([[5.0]]), "entropy": np.array([[4.0]])}
    got = {"topk_logits": np.array([[[3.1, 1.8, 1.5, 0.5]]]), "topk_ids": np.array([[[10, 12, 11, 99]]]),
           "logsumexp": np.array([[5.25]]), "entropy": np.array([[4.5]])}
    r = compare_logits(ref, got, np.array([[2.0]]))
    assert r["overlap"] == 0.75 and r["top1"] == 1.0 and r["positions"] == 1
    assert r["logit_max_abs"] == pytest.approx(0.8) and r["logit_mean_abs"] == pytest.approx((0.1 + 0.5 + 0.8) / 3)
    assert r["logit_max_rel"] == pytest.approx(0.4) and r["logsumexp_max_abs"] == 0.25 and r["entropy_max_abs"] == 0.5
    lp, lq = np.array([3.0, 2.0, 1.0]) - 5.0, np.array([3.1, 1.5, 1.8]) - 5.25
    cp, cq = lp - np.logaddexp.reduce(lp), lq - np.logaddexp.reduce(lq)
    assert r["kl_topk_mean"] == pytest.approx(float((np.exp(cp) * (cp - cq)).sum()))
    same = compare_logits(ref, ref, np.array([[2.0]]))
    assert all(same[key] == 0 for key in same if key.startswith(("logit", "logsumexp", "entropy", "kl")))
    torch.manual_seed(0)
    full_ref = torch.randn(2, 3, 300) * 2
    full_got = full_ref + 0.3 * torch.randn(2, 3, 300)
    feeds = {"cfg_scale": np.zeros(2, np.float32), "uncond_row": np.arange(2)}
    est = compare_logits(head_outputs(full_ref, feeds, 16), head_outputs(full_got, feeds, 16),
                         full_ref.double().std(-1, unbiased=False).numpy())
    exact = summarize_full(compare_full(full_ref, full_got), np.ones((2, 3), bool))
    assert 0 < est["kl_mean"] <= exact["kl_mean"] and est["kl_max"] <= exact["kl_max"]
    assert est["logit_max_abs"] <= exact["logit_max_abs"] and est["top1"] == exact["top1"]


def test_logits_error_of_a_converted_checkpoint(tmp_path):
    """dllm.bench_quantize --logits at the tiny size: a random LLaDA-layout checkpoint converted as fp32, int8 and int4
    (accuracy level 4), each model.onnx in onnxruntime-node on the same canvases against the fp32 folder's outputs."""
    from dllm.bench_quantize import logits_markdown, logits_rows

    lg = logits_rows("tiny", str(tmp_path), ["fp32", "int8-a4", "int4-a4"], log=lambda *_: None)
    assert not os.path.exists(tmp_path / "logits-tiny")  # cleaned up without keep
    assert lg["topk"] == 64 and lg["masked"] == 32 and lg["wanted"] == 64
    for group in ("masked", "text"):
        rows, full = lg["rows"][group], lg["full"][group]
        assert rows["fp32"]["positions"] == 4 * 32
        for r in [*rows.values(), *full.values()]:
            assert all(np.isfinite(v) for v in r.values()), r
        f = rows["fp32"]
        assert (f["top1"], f["overlap"], f["logit_max_abs"], f["logsumexp_max_abs"], f["kl_mean"], f["kl_topk_mean"]) \
            == (1.0, 1.0, 0.0, 0.0, 0.0, 0.0)
        t = rows["fp32, PyTorch"]
        assert t["top1"] == 1.0 and t["overlap"] == 1.0 and t["logit_max_rel"] < 1e-4 and t["logsumexp_max_abs"] < 1e-5
        i8, i4 = rows["int8-a4"], rows["int4-a4"]
        assert 0 < i8["logit_mean_rel"] < i4["logit_mean_rel"] < 0.5 and i8["logit_max_abs"] < i4["logit_max_abs"]
        assert 0 < i8["logsumexp_max_abs"] < i4["logsumexp_max_abs"] and i8["overlap"] > i4["overlap"]
        assert 0 < i8["kl_topk_mean"] < i4["kl_topk_mean"] and 0 < i8["kl_mean"] < i4["kl_mean"]
        assert full["int8-a4, emulated"]["kl_mean"] < full["int4-a4, emulated"]["kl_mean"]
        assert rows["int4-a4"]["kl_mean"] <= full["int4-a4, emulated"]["kl_mean"] * 1.5  # a lower bound, to emulation
    assert lg["rows"]["masked"]["fp32"]["distinct_top1"] <= lg["rows"]["text"]["fp32"]["distinct_top1"]
    text = "\n".join(logits_markdown(lg))
    assert "## Logits error on a converted checkpoint (tiny: 9 M parameters" in text and "| text (128) | int4-a4 |" in text
