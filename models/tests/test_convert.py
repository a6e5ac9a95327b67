"""convert.py on a synthetic Hugging Face LLaDA checkpoint: the real layout and names, tiny random dimensions."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY, run_ort
from dllm.convert import CheckpointError, convert
from dllm.export import INPUT_NAMES, SamplingGraph
from dllm.model import LLaDA, config_from_hf

HF_CONFIG = {
    "architectures": ["LLaDAModelLM"], "model_type": "llada", "activation_type": "silu", "block_type": "llama",
    "layer_norm_type": "rms", "rope": True, "alibi": False, "d_model": 64, "n_heads": 4, "n_kv_heads": 4,
    "n_layers": 2, "mlp_hidden_size": 96, "mlp_ratio": 4, "vocab_size": 4096, "embedding_size": 4096,
    "max_sequence_length": 128, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "weight_tying": False,
    "include_bias": False, "mask_token_id": 2, "eos_token_id": 1, "pad_token_id": 1,
}


def write_safetensors(path, tensors, dtype="F32"):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        if dtype == "BF16":  # round-to-nearest-even is not needed: test weights are exactly representable
            raw = (t.float().numpy().view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            raw = t.float().numpy().astype(np.float32).tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def synthetic_checkpoint(folder, dtype="F32", shards=1):
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(7)
    model = LLaDA(config_from_hf(HF_CONFIG)).eval()
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
        json.dump(HF_CONFIG, f)
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
    assert sorted(os.listdir(tmp_path / "out")) == ["dllm.json", "model.kv.onnx", "model.onnx", "tokenizer.json", "weights.data"]
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
