"""convert.py on a synthetic Hugging Face LLaDA checkpoint: the real layout and names, tiny random dimensions."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY, run_ort
from dllm import safetensors
from dllm.convert import CheckpointError, convert
from dllm.graph import CACHED_INPUT_NAMES, INPUT_NAMES, CachedSamplingGraph, SamplingGraph
from dllm.model import LLaDA, config_from_hf

HF_CONFIG = {
    "architectures": ["LLaDAModelLM"], "model_type": "llada", "activation_type": "silu", "block_type": "llama",
    "layer_norm_type": "rms", "rope": True, "alibi": False, "d_model": 64, "n_heads": 4, "n_kv_heads": 4,
    "n_layers": 2, "mlp_hidden_size": 96, "mlp_ratio": 4, "vocab_size": 4096, "embedding_size": 4096,
    "max_sequence_length": 128, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "weight_tying": False,
    "include_bias": False, "mask_token_id": 2, "eos_token_id": 1, "pad_token_id": 1,
}


def write_safetensors(path, state, dtype="F32"):
    safetensors.write(str(path), [(n, tuple(t.shape)) for n, t in state.items()], lambda n: state[n].float().numpy(),
                      dtype)


def synthetic_checkpoint(folder, dtype="F32", shards=1, **config):
    """A checkpoint in LLaDA's layout from a random model of HF_CONFIG | config; returns the PyTorch model."""
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(7)
    model = LLaDA(config_from_hf(HF_CONFIG | config)).eval()
    with torch.no_grad():  # norm gains and biases away from their init (1 and 0), so a dropped one shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.rand_like(p) * 0.5)
    if dtype == "BF16":  # make every weight exactly representable in bf16
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    state = {"model." + k: v for k, v in model.state_dict().items()}
    names = sorted(state)
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors"
        write_safetensors(os.path.join(folder, fname), {n: state[n] for n in part}, dtype)
        weight_map.update({n: fname for n in part})
    if shards > 1:
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(HF_CONFIG | config, f)
    shutil.copyfile(os.path.join(TINY, "tokenizer.json"), os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|eot_id|>", "chat_template": "{{ messages }}"}, f)
    return model


@pytest.mark.parametrize("dtype,shards", [("F32", 1), ("BF16", 3)])
def test_converted_onnx_matches_pytorch(tmp_path, dtype, shards):
    model = synthetic_checkpoint(tmp_path / "hf", dtype, shards)
    meta = convert(str(tmp_path / "hf"), str(tmp_path / "out"), "synthetic", k=8)
    assert (meta["mask_token_id"], meta["eos_token_ids"], meta["bos_token_id"]) == (2, [1, 5], 6)
    assert meta["chat_template"] == "{{ messages }}"
    # Format 2: the full and the cached graph, both reading one weights file.
    assert sorted(os.listdir(tmp_path / "out")) == ["dllm.json", "model.device.onnx", "model.kv.onnx", "model.onnx", "tokenizer.json", "weights.data"]
    assert meta["format"] == "dllm-onnx/2" and meta["cached"]["layers"] == 2
    ids = torch.tensor([[0, 6, 77, 2, 2], [6, 12, 13, 2, 2]])
    feeds = dict(input_ids=ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1], [1] * 5]),
                 positions=torch.tensor([[3, 4], [3, 4]]), cfg_scale=torch.zeros(2), uncond_row=torch.arange(2))
    with torch.no_grad():
        top, top_ids, lse, _ = SamplingGraph(model, 8)(*(feeds[n] for n in INPUT_NAMES))
    got = run_ort(str(tmp_path / "out" / "model.onnx"), feeds)
    assert np.array_equal(got["topk_ids"][..., 0], top_ids[..., 0].numpy())
    cached = run_ort(str(tmp_path / "out" / "model.kv.onnx"), dict(
        input_ids=ids, position_ids=(feeds["attention_mask"].cumsum(-1) - 1).clamp(min=0),
        attention_mask=feeds["attention_mask"], past_kv=torch.zeros(2, 2, 2, 4, 0, 16), positions=feeds["positions"],
        cfg_scale=feeds["cfg_scale"], uncond_row=feeds["uncond_row"]))
    np.testing.assert_allclose(cached["topk_logits"], got["topk_logits"], atol=1e-5)
    np.testing.assert_allclose(got["topk_logits"], top.numpy(), atol=1e-4)


def test_missing_file_is_named(tmp_path):
    synthetic_checkpoint(tmp_path / "hf")
    os.remove(tmp_path / "hf" / "tokenizer.json")
    with pytest.raises(CheckpointError, match="tokenizer.json: missing"):
        convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x")


def test_missing_weights_are_named(tmp_path):
    synthetic_checkpoint(tmp_path / "hf")
    os.remove(tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x")


def test_wrong_tensor_shape_is_named(tmp_path):
    model = synthetic_checkpoint(tmp_path / "hf")
    state = {"model." + k: v for k, v in model.state_dict().items()}
    state["model.transformer.blocks.1.q_proj.weight"] = torch.zeros(64, 32)
    write_safetensors(tmp_path / "hf" / "model.safetensors", state)
    with pytest.raises(CheckpointError, match=r"transformer\.blocks\.1\.q_proj\.weight has shape \[64, 32\]"):
        convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x")


def test_unknown_architecture_is_refused(tmp_path):
    synthetic_checkpoint(tmp_path / "hf")
    with open(tmp_path / "hf" / "config.json", "w") as f:
        json.dump(HF_CONFIG | {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, f)
    with pytest.raises(CheckpointError, match="config.json: unknown architecture 'llama'"):
        convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x")


def test_missing_tensor_is_named(tmp_path):
    model = synthetic_checkpoint(tmp_path / "hf")
    state = {"model." + k: v for k, v in model.state_dict().items() if "ln_f" not in k}
    write_safetensors(tmp_path / "hf" / "model.safetensors", state)
    with pytest.raises(CheckpointError, match=r"tensor transformer\.ln_f\.weight missing"):
        convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x")


def logits_match(model, out, k=8):
    """The converted graphs (full, and cached with nothing cached) against the PyTorch module: top-K logits within
    1e-4, the same top-1 ids; returns the ONNX outputs."""
    ids = torch.tensor([[0, 6, 77, 2, 2, 9], [6, 12, 13, 2, 2, 2]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6])
    feeds = dict(input_ids=ids, attention_mask=mask, positions=torch.tensor([[3, 4], [3, 5]]), cfg_scale=torch.zeros(2),
                 uncond_row=torch.arange(2))
    with torch.no_grad():
        top, top_ids, lse, _ = SamplingGraph(model, k)(*(feeds[n] for n in INPUT_NAMES))
    got = run_ort(str(out / "model.onnx"), feeds)
    np.testing.assert_allclose(got["topk_logits"], top.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["logsumexp"], lse.numpy(), atol=1e-4)
    assert np.array_equal(got["topk_ids"][..., 0], top_ids[..., 0].numpy())
    c = model.config
    cached_feeds = dict(input_ids=ids, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), attention_mask=mask,
                        past_kv=torch.zeros(c.n_layers, 2, 2, c.effective_n_kv_heads, 0, c.head_dim),
                        positions=feeds["positions"], cfg_scale=feeds["cfg_scale"], uncond_row=feeds["uncond_row"])
    cached = run_ort(str(out / "model.kv.onnx"), cached_feeds)
    with torch.no_grad():
        expected = CachedSamplingGraph(model, k)(*(cached_feeds[n] for n in CACHED_INPUT_NAMES))
    np.testing.assert_allclose(cached["topk_logits"], top.numpy(), atol=1e-4)
    np.testing.assert_allclose(cached["present_kv"], expected[4].numpy(), atol=1e-4)
    return got


@pytest.mark.parametrize("config", [{"n_kv_heads": 2}, {"n_kv_heads": None, "multi_query_attention": True}],
                         ids=["gqa", "mqa"])
def test_grouped_query_attention(tmp_path, config):
    """Grouped-query checkpoints (Dream, LLaDA-MoE and most newer models have them) convert and run in ONNX Runtime."""
    model = synthetic_checkpoint(tmp_path / "hf", **config)
    assert model.config.effective_n_kv_heads == (2 if "n_kv_heads" in config and config["n_kv_heads"] else 1)
    meta = convert(str(tmp_path / "hf"), str(tmp_path / "out"), "gqa", k=8, log=lambda _: None)
    assert meta["cached"]["kv_heads"] == model.config.effective_n_kv_heads
    logits_match(model, tmp_path / "out")


def test_flags_that_change_the_computation_are_honoured(tmp_path):
    """scale_logits (logits / sqrt(d_model)), input_emb_norm (embeddings * sqrt(d_model)) and include_qkv_bias were
    once ignored; the module computes them and the graphs follow."""
    flags = {"scale_logits": True, "input_emb_norm": True, "include_qkv_bias": True}
    model = synthetic_checkpoint(tmp_path / "hf", **flags)
    assert model.transformer["blocks"][0].q_proj.bias is not None
    convert(str(tmp_path / "hf"), str(tmp_path / "out"), "f", k=8, log=lambda _: None)
    got = logits_match(model, tmp_path / "out")
    plain = LLaDA(config_from_hf(HF_CONFIG | {"include_qkv_bias": True})).eval()
    plain.load_state_dict(model.state_dict())
    ids = torch.tensor([[0, 6, 77, 2, 2, 9], [6, 12, 13, 2, 2, 2]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6])
    with torch.no_grad():
        unflagged = plain(ids, mask)[0, 3].topk(8).values.numpy()
    assert np.abs(got["topk_logits"][0, 0] - unflagged).max() > 0.1, "the flags change the logits"


@pytest.mark.parametrize("field,value", [
    ("attention_layer_norm", True), ("layer_norm_with_affine", False), ("bias_for_layer_norm", True),
    ("clip_qkv", 8.0), ("activation_type", "swiglu"), ("alibi", True), ("rope_scaling", {"type": "linear"}),
])
def test_unsupported_flags_are_refused_by_name(tmp_path, field, value):
    synthetic_checkpoint(tmp_path / "hf")
    with open(tmp_path / "hf" / "config.json", "w") as f:
        json.dump(HF_CONFIG | {field: value}, f)
    with pytest.raises(CheckpointError, match=field):
        convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x", log=lambda _: None)


def test_chat_template_jinja_and_the_report(tmp_path):
    """Newer tokenizers save the template as chat_template.jinja; it is read (and preferred, as transformers
    does). The report says what was read and written."""
    synthetic_checkpoint(tmp_path / "hf", "BF16", 2, embedding_size=4224)
    (tmp_path / "hf" / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    lines = []
    meta = convert(str(tmp_path / "hf"), str(tmp_path / "out"), "r", k=8, fp16=True, log=lines.append)
    assert meta["chat_template"] == "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    report = "\n".join(lines)
    for expected in ("2 layers, d_model 64, 4 heads (4 kv heads)", "BF16", "in 2 files (sharded",
                     "mask 2, eos [1, 5], pad 1, bos 6", "chat template chat_template.jinja",
                     "the 128 padding rows beyond the vocabulary are left out", "weights.fp16.data",
                     "float32 RoPE, norm statistics, softmax and head", "peak memory"):
        assert expected in report, expected
    os.remove(tmp_path / "hf" / "chat_template.jinja")
    meta = convert(str(tmp_path / "hf"), str(tmp_path / "out2"), "r", k=8, log=lines.append)
    assert meta["chat_template"] == "{{ messages }}" and "chat template tokenizer_config.json" in "\n".join(lines)


def test_weights_beyond_float16_are_refused_with_fp16(tmp_path):
    model = synthetic_checkpoint(tmp_path / "hf")
    state = {"model." + k: v for k, v in model.state_dict().items()}
    state["model.transformer.blocks.0.up_proj.weight"][3, 4] = 1e5
    write_safetensors(tmp_path / "hf" / "model.safetensors", state)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.up_proj\.weight: values beyond float16"):
        convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x", fp16=True, log=lambda _: None)


def greedy(step, prompt, length, mask=2):
    """LLaDA's low-confidence remasking at temperature 0, one token per step: commit the most confident masked
    position each step. `step(feeds)` -> (topk_logits, topk_ids, logsumexp)."""
    canvas = list(prompt) + [mask] * length
    for _ in range(length):
        masked = [i for i, t in enumerate(canvas) if t == mask]
        top, ids, lse = step(dict(input_ids=torch.tensor([canvas]), attention_mask=torch.ones(1, len(canvas), dtype=torch.int64),
                                  positions=torch.tensor([masked]), cfg_scale=torch.zeros(1),
                                  uncond_row=torch.zeros(1, dtype=torch.int64)))
        confidence = np.asarray(top)[0, :, 0] - np.asarray(lse)[0]
        j = int(np.argmax(confidence))
        canvas[masked[j]] = int(np.asarray(ids)[0, j, 0])
    return canvas[len(prompt):]


def test_greedy_generation_equals_pytorch(tmp_path):
    model = synthetic_checkpoint(tmp_path / "hf", "BF16", 3)
    convert(str(tmp_path / "hf"), str(tmp_path / "out"), "g", k=8, log=lambda _: None)

    def onnx_step(feeds):
        got = run_ort(str(tmp_path / "out" / "model.onnx"), feeds)
        return got["topk_logits"], got["topk_ids"], got["logsumexp"]

    def torch_step(feeds):
        with torch.no_grad():
            top, ids, lse, _ = SamplingGraph(model, 8)(*(feeds[n] for n in INPUT_NAMES))
        return top.numpy(), ids.numpy(), lse.numpy()

    prompt = [6, 300, 17, 44]
    assert greedy(onnx_step, prompt, 6) == greedy(torch_step, prompt, 6)


def test_conversion_shows_its_progress(tmp_path):
    # In a log (not a terminal): a line every few seconds and one at the end of each weights file, tensor i of n.
    import io

    from dllm.convert import Progress

    synthetic_checkpoint(tmp_path / "hf")
    log = io.StringIO()
    convert(str(tmp_path / "hf"), str(tmp_path / "out"), "x", fp16=True, log=lambda *_: None,
            progress=Progress(log, every_s=3600))
    lines = log.getvalue().splitlines()
    assert len(lines) == 2, lines  # nothing in between within the hour: only each file's last tensor
    for line, precision in zip(lines, ("fp32", "fp16")):
        i, n = map(int, line.split("tensor ")[1].split(",")[0].split(" of "))
        assert line.startswith(f"  writing {precision}: ") and i == n > 5 and line.endswith(" s")
