"""Hugging Face LLaDA checkpoint folder -> dllm-serve model folder (docs/design.md §2).

Reads config.json, the *.safetensors weights (one file or sharded with model.safetensors.index.json),
tokenizer.json and tokenizer_config.json (chat template, special tokens), loads them into our LLaDA module
through `hf_state_dict_to_ours` and exports the ONNX graph with the sampling head.

    python3 -m dllm.convert --checkpoint /data/LLaDA-8B-Instruct --out models/llada-8b-instruct --fp16

The weights are read with our own safetensors reader (the format is an 8-byte header length, a JSON header,
then raw little-endian tensors), so nothing beyond torch, numpy and onnx is needed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil

import numpy as np
import torch

from .export import write_model_folder
from .model import LLaDA, config_from_hf, hf_state_dict_to_ours

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
                      "I64": np.int64, "I32": np.int32}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be converted; the message names the file or tensor."""


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """One .safetensors file -> {name: float32 tensor} (bf16 widened exactly by shifting into float32's high bits)."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise CheckpointError(f"{path}: unreadable safetensors header ({e})") from e
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = torch.from_numpy(array.astype(np.float32) if array.dtype != np.float32 else array.copy())
    return tensors


def load_hf_weights(folder: str) -> dict[str, torch.Tensor]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors weights found")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise CheckpointError(f"{path}: listed in the index but missing")
        state.update(read_safetensors(path))
    return state


def read_json(folder: str, name: str, required: bool = True) -> dict | None:
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        if required:
            raise CheckpointError(f"{path}: missing")
        return None
    with open(path) as f:
        return json.load(f)


def token_id(tokenizer: dict, content: str | dict | None) -> int | None:
    """Id of a special token given by its text (tokenizer_config.json style), or None."""
    if isinstance(content, dict):
        content = content.get("content")
    if content is None:
        return None
    for added in tokenizer.get("added_tokens", []):
        if added["content"] == content:
            return added["id"]
    return tokenizer.get("model", {}).get("vocab", {}).get(content)


def load_model(folder: str) -> LLaDA:
    hf_config = read_json(folder, "config.json")
    try:
        config = config_from_hf(hf_config)
    except KeyError as e:
        raise CheckpointError(f"{os.path.join(folder, 'config.json')}: missing field {e}") from e
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    model = LLaDA(config)
    ours = hf_state_dict_to_ours(load_hf_weights(folder))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise CheckpointError(f"{folder}: tensor {missing[0]} missing from the checkpoint ({len(missing)} missing)")
    unexpected = sorted(set(ours) - set(expected))
    if unexpected:
        raise CheckpointError(f"{folder}: unexpected tensor {unexpected[0]} (is this a LLaDA checkpoint?)")
    for name, tensor in ours.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{folder}: tensor {name} has shape {list(tensor.shape)}, "
                                  f"config.json implies {list(expected[name].shape)}")
    model.load_state_dict(ours)
    return model


def convert(checkpoint: str, out: str, name: str, k: int = 64, fp16: bool = False) -> dict:
    hf_config = read_json(checkpoint, "config.json")
    tokenizer = read_json(checkpoint, "tokenizer.json")
    tok_config = read_json(checkpoint, "tokenizer_config.json", required=False) or {}
    model = load_model(checkpoint)
    mask = hf_config.get("mask_token_id", token_id(tokenizer, "<|mdm_mask|>"))
    if mask is None:
        raise CheckpointError(f"{checkpoint}/config.json: no mask_token_id and no <|mdm_mask|> token in tokenizer.json")
    eos = [hf_config.get("eos_token_id"), token_id(tokenizer, tok_config.get("eos_token")),
           token_id(tokenizer, "<|endoftext|>"), token_id(tokenizer, "<|eot_id|>")]
    eos_ids = tuple(sorted({i for i in eos if isinstance(i, int)}))
    if not eos_ids:
        raise CheckpointError(f"{checkpoint}: no end-of-sequence token found in config.json or tokenizer files")
    pad = hf_config.get("pad_token_id", token_id(tokenizer, tok_config.get("pad_token")))
    bos = token_id(tokenizer, tok_config.get("bos_token")) if "bos_token" in tok_config else hf_config.get("bos_token_id")
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(os.path.join(checkpoint, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    return write_model_folder(model, out, os.path.join(out, "tokenizer.json"), k, name, fp16,
                              chat_template=tok_config.get("chat_template"), eos_token_ids=eos_ids,
                              pad_token_id=pad if pad is not None else eos_ids[0], bos_token_id=bos, mask_token_id=mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="Hugging Face LLaDA folder (config.json, *.safetensors, tokenizer.json)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args()
    meta = convert(args.checkpoint, args.out, args.name or os.path.basename(os.path.normpath(args.checkpoint)), args.topk, args.fp16)
    print(f"wrote {args.out}: vocab {meta['vocab_size']}, mask {meta['mask_token_id']}, eos {meta['eos_token_ids']}")


if __name__ == "__main__":
    main()
