"""The device graph (graph.DeviceSamplingGraph, docs/models.md): the cached graph in the form a GPU keeps its cache
in. Its head works in float32 and leaves the float64 finish to the server (src/engine/device_head.ts, mirrored by
`finish` below); its cache input and output are rows of kept blocks; and under WebGPU every node but the shape
computations runs on the GPU (the test runs on Mesa's lavapipe where there is no GPU: scripts/test.sh installs it)."""

import json
import os
import shutil
import subprocess

import numpy as np
import onnx
import pytest
import torch

from conftest import MODELS, REPO, TINY, run_ort
from dllm.reference.weights import model_from_onnx

BD3 = os.path.join(MODELS, "tiny-bd3")


def spec_of(folder):
    with open(os.path.join(folder, "dllm.json")) as f:
        return json.load(f)


def finish(out):
    """src/engine/device_head.ts: log Z and the entropy, in float64, from the device head's float32 sums."""
    top = out["topk_logits"][..., 0].astype(np.float64)
    s = out["top_count"].astype(np.float64) + out["sum_exp_rest"].astype(np.float64)
    return top + np.log(s), np.log(s) - out["sum_exp_shifted"].astype(np.float64) / s


def canvas_feeds(folder, rows=3, length=48, seed=0):
    """Left-padded random canvases (a third of the positions masked), every position asked for, no past."""
    spec = spec_of(folder)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, spec["vocab_size"], (rows, length), generator=g)
    ids[torch.rand(rows, length, generator=g) < 0.33] = spec["mask_token_id"]
    mask = torch.ones(rows, length, dtype=torch.int64)
    for r in range(rows):
        mask[r, : 5 * r] = 0
        ids[r, : 5 * r] = spec["pad_token_id"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    c = spec["cached"]
    past = torch.zeros(c["layers"], 2, rows, c["kv_heads"], 0, c["head_dim"])
    positions = torch.arange(length).repeat(rows, 1)
    cfg, uncond = torch.zeros(rows), torch.arange(rows)
    kv = dict(input_ids=ids, position_ids=position_ids, attention_mask=mask, past_kv=past, positions=positions,
              cfg_scale=cfg, uncond_row=uncond)
    device = dict(kv, position_ids=position_ids.int(), attention_mask=mask.float(), positions=positions.int(),
                  past_rows=torch.arange(rows))
    return kv, device


@pytest.mark.parametrize("folder", [TINY, BD3])
def test_head_matches_the_float64_head(folder):
    # The same trained weights and inputs through the cached graph (float64 head) and the device graph (float32
    # sums finished in float64): the same top-K, and confidences exp(l - log Z) within 1e-6.
    kv, device = canvas_feeds(folder)
    exact = run_ort(os.path.join(folder, "model.kv.onnx"), kv)
    out = run_ort(os.path.join(folder, "model.device.onnx"), device)
    assert np.array_equal(out["topk_ids"], exact["topk_ids"])
    assert np.array_equal(out["topk_logits"], exact["topk_logits"])
    logsumexp, entropy = finish(out)
    confidence = np.exp(out["topk_logits"].astype(np.float64) - logsumexp[..., None])
    reference = np.exp(exact["topk_logits"].astype(np.float64) - exact["logsumexp"][..., None])
    assert np.abs(confidence - reference).max() < 1e-6
    assert np.abs(entropy - exact["entropy"]).max() < 1e-5
    # The keys/values of a full pass are the cached graph's present_kv.
    assert np.allclose(out["present_kv"], exact["present_kv"], atol=1e-6)


def test_head_handles_ties_at_the_top():
    # Two tokens sharing the best logit: both count in the normaliser (top_count 2), as the float64 head counts them.
    from dllm.graph import device_head, guided_head

    logits = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(1))
    logits[0, 1, 7] = logits[0, 1, 9] = logits[0, 1].max() + 1
    cfg, uncond = torch.zeros(2), torch.arange(2)
    _, _, lse, entropy = guided_head(logits, cfg, uncond, 5)
    out = {k: v.numpy() for k, v in zip(["topk_logits", "topk_ids", "top_count", "sum_exp_rest", "sum_exp_shifted"],
                                        device_head(logits, cfg, uncond, 5))}
    assert out["top_count"][0, 1] == 2 and out["top_count"][1, 1] == 1
    got_lse, got_entropy = finish(out)
    assert np.abs(got_lse - lse.numpy()).max() < 1e-6
    assert np.abs(got_entropy - entropy.numpy()).max() < 1e-5


def test_cache_rows_are_picked_and_grown_in_the_graph():
    # A cached step reading rows of a kept block in another order (past_rows) computes what the cached graph
    # computes from the same rows stacked on the host, and its present_kv is those rows followed by the queries'.
    kv, device = canvas_feeds(TINY, rows=2, length=24)
    block = run_ort(os.path.join(TINY, "model.device.onnx"), device)["present_kv"]  # [layers, 2, 2, Hk, 24, Dh]
    spec = spec_of(TINY)
    g = torch.Generator().manual_seed(3)
    q = 6
    ids = torch.randint(7, spec["vocab_size"], (2, q), generator=g)
    position_ids = torch.arange(24, 24 + q).repeat(2, 1)
    mask = torch.ones(2, 24 + q, dtype=torch.int64)
    mask[0, :5] = 0  # row 0 reads block row 1, whose first 5 slots are padding
    positions = torch.tensor([[1, 3], [0, 5]])
    swapped = torch.from_numpy(block[:, :, [1, 0]].astype(np.float32))
    common = dict(input_ids=ids, positions=positions, cfg_scale=torch.zeros(2), uncond_row=torch.arange(2))
    exact = run_ort(os.path.join(TINY, "model.kv.onnx"), dict(common, position_ids=position_ids, attention_mask=mask,
                                                               past_kv=swapped))
    out = run_ort(os.path.join(TINY, "model.device.onnx"), dict(
        common, position_ids=position_ids.int(), attention_mask=mask.float(), positions=positions.int(),
        past_kv=torch.from_numpy(block.astype(np.float32)), past_rows=torch.tensor([1, 0])))
    assert np.array_equal(out["topk_ids"], exact["topk_ids"])
    assert np.allclose(out["topk_logits"], exact["topk_logits"], atol=1e-5)
    assert out["present_kv"].shape[4] == 24 + q
    assert np.array_equal(out["present_kv"][..., :24, :], swapped.numpy())
    assert np.allclose(out["present_kv"][..., 24:, :], exact["present_kv"], atol=1e-6)


# --- placement under WebGPU -------------------------------------------------------------------------------------

SHAPE_READERS = {"Shape", "Size"}


def shape_computations(graph: onnx.GraphProto) -> set[str]:
    """Nodes that compute shapes, not tensors: reading only shapes and constants (forward), or read only for their
    shape (backward: every consumer a Shape node, or another such node). ONNX Runtime keeps these on the CPU on
    purpose (the shape values are needed there to size the GPU's work)."""
    initializers = {t.name for t in graph.initializer}
    shape_values: set[str] = set()
    names: set[str] = set()
    for node in graph.node:  # graphs are stored in topological order
        inputs = [i for i in node.input if i]
        if node.op_type in SHAPE_READERS | {"Constant"} or (
                inputs and all(i in shape_values or (i in initializers and _small(graph, i)) for i in inputs)):
            shape_values.update(node.output)
            names.add(node.name)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if node.name in names:
                continue
            readers = [c for o in node.output for c in consumers.get(o, [])]
            if readers and all(c.op_type in SHAPE_READERS or c.name in names for c in readers):
                names.add(node.name)
                changed = True
    return names


def _small(graph, name):
    tensor = next(t for t in graph.initializer if t.name == name)
    return int(np.prod(tensor.dims)) <= 64 and tensor.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def placement(model_path, tmp_path):
    optimized = str(tmp_path / "optimized.onnx")
    proc = subprocess.run(["node", os.path.join(MODELS, "tests", "ort_placement.mjs"), model_path, "webgpu", optimized],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"WebGPU could not open {model_path} (is lavapipe installed?): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout), onnx.load(optimized, load_external_data=False).graph


@pytest.mark.parametrize("folder", [TINY, BD3])
def test_every_compute_node_runs_on_webgpu(folder, tmp_path):
    placed, graph = placement(os.path.join(folder, "model.device.onnx"), tmp_path)
    assert len(placed.get("WebGpuExecutionProvider", [])) > 100
    on_cpu = set(placed.get("CPUExecutionProvider", []))
    allowed = shape_computations(graph)
    ops = {n.name: n.op_type for n in graph.node}
    assert sorted((ops.get(n), n) for n in on_cpu - allowed) == []
    # The matrix products, attention, norms and the head are among the GPU's nodes.
    on_gpu = {ops.get(n) for n in placed["WebGpuExecutionProvider"]}
    assert {"TopK", "Exp", "ReduceSum"} <= on_gpu and on_gpu & {"MatMul", "MatMulNBits", "Gemm", "FusedMatMul"}


def test_the_float64_head_would_not(tmp_path):
    # The classifier is not vacuous: the cached graph's float64 head lands on the CPU under WebGPU and is caught.
    placed, graph = placement(os.path.join(TINY, "model.kv.onnx"), tmp_path)
    ops = {n.name: n.op_type for n in graph.node}
    left = {ops.get(n) for n in set(placed["CPUExecutionProvider"]) - shape_computations(graph)}
    assert {"Exp", "ReduceSum", "Log"} <= left


def test_a_folder_from_before_the_device_graph_gets_it(tmp_path):
    # `python3 -m dllm.convert --from-folder`: the folder written again from its own weights and dllm.json, which
    # reproduces today's folder byte for byte, device graph included.
    from dllm.convert import rewrite_folder

    folder = tmp_path / "old"
    shutil.copytree(TINY, folder)
    os.remove(folder / "model.device.onnx")
    spec = spec_of(folder)
    del spec["device"]
    with open(folder / "dllm.json", "w") as f:
        json.dump(spec, f)
    meta = rewrite_folder(str(folder))
    assert meta["device"] == {"fp32": "model.device.onnx", "fp16": None}
    for name in ("dllm.json", "model.onnx", "model.kv.onnx", "model.device.onnx", "weights.data"):
        with open(folder / name, "rb") as a, open(os.path.join(TINY, name), "rb") as b:
            assert a.read() == b.read(), name
