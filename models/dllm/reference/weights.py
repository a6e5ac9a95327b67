"""Weights: the PyTorch model recovered from a folder's model.onnx (or a checkpoint), a sampler over it, and the
sha256 of the files."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch

from ..graph import INPUT_NAMES, OPSET, OUTPUT_NAMES, TRANSPOSED, SamplingGraph, example_inputs
from ..model import LLaDA, ModelConfig, load_checkpoint
from .batching import ReferenceSampler

def sha256(path: str, *more: str) -> str:
    """sha256 of the files' bytes one after the other."""
    h = hashlib.sha256()
    for name in (path, *more):
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_sha256(model_dir: str, spec: dict) -> str:
    """sha256 of model.onnx followed by its weights file (format 2 keeps the weights outside the graph)."""
    weights = (spec.get("weights") or {}).get("fp32")
    return sha256(os.path.join(model_dir, spec["onnx"]["fp32"]), *([os.path.join(model_dir, weights)] if weights else []))


def model_from_onnx(model_dir: str, spec: dict) -> LLaDA:
    """The PyTorch model holding exactly the weights of the folder's model.onnx.

    Graphs from the streaming exporter (docs/models.md) name every weight after its parameter (`name`, or `name^T`
    stored transposed: export.bind_weights). Older ones carry the exporter's counters (constant folding renamed and
    transposed the weights), so there the mapping is recovered by exporting, as they were exported, a model of the
    same config whose parameters are consecutive integers: each initializer then names the parameter it came from,
    and whether it was transposed.
    """
    import tempfile

    import onnx
    from onnx import numpy_helper

    model = LLaDA(ModelConfig.from_dict(spec["model_config"])).eval()
    params = dict(model.named_parameters())
    path = os.path.join(model_dir, spec["onnx"]["fp32"])
    named = {t.name: t for t in onnx.load(path).graph.initializer}
    if all(n in named or n + TRANSPOSED in named for n in params):
        state = {n: torch.from_numpy(numpy_helper.to_array(named[n]).copy()) if n in named else
                 torch.from_numpy(numpy_helper.to_array(named[n + TRANSPOSED]).T.copy()) for n in params}
        model.load_state_dict(state, strict=False)
        return model
    start, owner = 0, []
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(torch.arange(start, start + p.numel(), dtype=torch.float32).view_as(p))
            owner.append((start, start + p.numel(), name))
            start += p.numel()
    if start >= 2**24:
        raise ValueError("model too large to recover its ONNX weight mapping with float32 integers; use --checkpoint")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        # The exporter as it was before the streaming one: the module with its weights, constant folding on.
        torch.onnx.export(SamplingGraph(model, spec["topk"]), example_inputs(model.config.vocab_size),
                          os.path.join(tmp, "probe.onnx"), opset_version=OPSET, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, do_constant_folding=True,
                          dynamic_axes={n: {0: "N", 1: "L"} for n in ("input_ids", "attention_mask")})
        probe = [numpy_helper.to_array(t) for t in onnx.load(os.path.join(tmp, "probe.onnx")).graph.initializer]
    real = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer]
    # Initializer names carry exporter counters that differ between exports; their order and shapes do not.
    if [a.shape for a in probe] != [a.shape for a in real]:
        raise ValueError(f"{path}: initializers differ from an export of model_config; use --checkpoint")
    state = {}
    for values, weights in zip(probe, real):
        first = float(values.reshape(-1)[0]) if values.size else -1.0
        match = [(a, n) for a, b, n in owner if a <= first < b and first.is_integer()]
        if not match:
            continue
        a, name = match[0]
        target = params[name]
        expected = torch.arange(a, a + target.numel(), dtype=torch.float32).view_as(target).numpy()
        if values.shape == expected.shape and np.array_equal(values, expected):
            state[name] = torch.from_numpy(weights.copy())
        elif values.shape == expected.T.shape and np.array_equal(values, expected.T):
            state[name] = torch.from_numpy(weights.T.copy())
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"{model_dir}: could not find these weights in the ONNX graph: {missing[:5]}; use --checkpoint")
    model.load_state_dict(state, strict=False)
    return model


def load(model_dir: str, checkpoint: str | None = None) -> tuple[ReferenceSampler, dict]:
    """The folder's spec and a sampler over its weights: from the ONNX file itself, or from a PyTorch checkpoint."""
    with open(os.path.join(model_dir, "dllm.json")) as f:
        spec = json.load(f)
    model = load_checkpoint(checkpoint)[0] if checkpoint else model_from_onnx(model_dir, spec)
    return ReferenceSampler(model, spec), spec
