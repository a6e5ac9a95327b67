"""ONNX export of a LLaDA model with the sampling head: the graphs of graph.py (the folder and graph contract)
traced into ONNX, their weights written, the folder's files.

The graphs are traced from a weightless module and the weights streamed into one external data file (below), so
exporting holds one block of weights at a time, however large the model (convert.py uses the same path).

    python3 -m dllm.export --checkpoint models/runs/tiny-llada/ckpt.pt --tokenizer models/tiny-llada/tokenizer.json \
        --out models/tiny-llada [--fp16]
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import shutil
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.shape_inference
import torch
import torch.nn as nn

from . import quantize
from .graph import (CACHED_INPUT_NAMES, CACHED_OUTPUT_NAMES, DEFAULT_GENERATION, DEVICE_HEAD_NAMES, DEVICE_INPUT_NAMES,
                    DEVICE_OUTPUT_NAMES, INPUT_NAMES, OPSET, OUTPUT_NAMES, TRANSPOSED, WEIGHTS_FILE, CachedSamplingGraph,
                    DeviceSamplingGraph, SamplingGraph, dllm_json, example_cached_inputs, example_device_inputs,
                    example_inputs)
from .model import LLaDA, ModelConfig, load_checkpoint

TWO_GB = 2 * 1024**3


# --- tracing without weights ------------------------------------------------------------------------------------
#
# The graph depends on the config alone, so it is traced from a module that holds no weights: built on the meta
# device (shapes, no memory), each parameter replaced by a one-number placeholder broadcast to its shape. The
# trace then records, where the module reads a parameter, an Expand of that placeholder; `bind_weights` turns each
# into an initializer named after the parameter, stored in an external data file that `write_weights` fills
# tensor by tensor from the checkpoint. The model is therefore never in memory: not as a state dict, not as a
# module, not as a protobuf (onnxruntime-genai's model builder streams weights into its graphs for the same reason;
# it builds the graph op by op, we keep one description of the architecture, model.py, and trace it).

_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.arange, torch.tensor}


class _OnMeta(torch.overrides.TorchFunctionMode):
    """Tensor factories create meta tensors, so a module built inside holds shapes but no memory (what torch 2's
    `with torch.device("meta")` does; torch 1.13 has TorchFunctionMode but not that context)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _FACTORIES:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


class _Placeholder(nn.Module):
    """A parameter's stand-in while tracing: one number (distinct per parameter, so the exporter's merging of equal
    parameters leaves them apart) broadcast to the parameter's shape."""

    def __init__(self, shape: torch.Size):
        super().__init__()
        self.shape = shape

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original.expand(self.shape)


def weightless(config: ModelConfig) -> LLaDA:
    """The module of `config` with placeholders for weights: a few KB whatever the model's size."""
    from torch.nn.utils import parametrize

    with _OnMeta():
        model = LLaDA(config)
    for i, (name, p) in enumerate(list(model.named_parameters())):
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        setattr(module, attr, nn.Parameter(torch.full((1,), float(i + 1)), requires_grad=False))
        parametrize.register_parametrization(module, attr, _Placeholder(p.shape), unsafe=True)
    return model.eval()


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """{parameter name: shape} of the module of `config`, without building its weights."""
    with _OnMeta():
        return {name: tuple(p.shape) for name, p in LLaDA(config).state_dict().items()}


def _parameter_of(initializer: str) -> str | None:
    """`model.transformer.wte.parametrizations.weight.original` -> `transformer.wte.weight` (None: not a weight)."""
    name = initializer[len("model."):] if initializer.startswith("model.") else initializer
    if not name.endswith(".original") or ".parametrizations." not in name:
        return None
    return name[: -len(".original")].replace(".parametrizations.", ".")


def _trace(graph: nn.Module, inputs: tuple, input_names: list[str], output_names: list[str],
           dynamic_axes: dict) -> onnx.ModelProto:
    """torch.onnx.export (TorchScript exporter, opset 17) of a weightless graph module, weights bound."""
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch 2.x: keep the TorchScript exporter, as on torch 1.13
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # torch 1.13's exporter warns about prim::Constant shape inference on every export; the graph is checked
        # against PyTorch by models/tests instead.
        warnings.simplefilter("ignore", UserWarning)
        # The placeholders stay graph inputs of unknown value (export_params=False) and nothing is folded: as known
        # initializers, constant folding and the exporter's shape inference would evaluate each placeholder's
        # Expand into a full-size constant. ONNX Runtime folds the remaining constant subgraphs (e.g. the rotary
        # frequencies) when it loads the graph.
        torch.onnx.export(graph, inputs, buffer, opset_version=OPSET, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=False,
                          export_params=False, **kwargs)
    return bind_weights(onnx.load_from_string(buffer.getvalue()), parameter_shapes(graph.model.config))


def bind_weights(proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Each placeholder Expand becomes an initializer named after its parameter (`transformer.blocks.0.q_proj.weight`),
    and a Transpose of it (nn.Linear's x @ W^T) an initializer holding the transposed parameter (`…weight^T`), as
    constant folding would have stored it. The initializers have shapes but no data: write_weights fills them."""
    graph = proto.graph
    placeholders = {i.name: _parameter_of(i.name) for i in graph.input if _parameter_of(i.name)}
    nodes = list(graph.node)  # protobuf hands out a new wrapper per access: index nodes by position
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    rename, dropped, bound = {}, set(), {}
    for index, node in enumerate(nodes):
        if node.op_type != "Expand" or node.input[0] not in placeholders:
            continue
        param = placeholders[node.input[0]]
        dropped.add(index)
        rename[node.output[0]] = param
        bound[param] = shapes[param]
        for u in consumers.get(node.output[0], []):
            user = nodes[u]
            perm = [a.ints for a in user.attribute if a.name == "perm"]
            if user.op_type == "Transpose" and len(shapes[param]) == 2 and list(perm[0] if perm else [1, 0]) == [1, 0]:
                dropped.add(u)
                rename[user.output[0]] = param + TRANSPOSED
                bound[param + TRANSPOSED] = shapes[param][::-1]
    kept = [n for i, n in enumerate(nodes) if i not in dropped]
    for node in kept:
        node.input[:] = [rename.get(i, i) for i in node.input]
    del graph.node[:]
    graph.node.extend(kept)
    inputs = [i for i in graph.input if i.name not in placeholders]
    del graph.input[:]
    graph.input.extend(inputs)
    for name, shape in bound.items():
        tensor = graph.initializer.add(name=name, data_type=onnx.TensorProto.FLOAT, dims=shape)
        tensor.data_location = onnx.TensorProto.EXTERNAL
    _drop_unused(graph)  # the Expands' shape computations
    return proto


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Removes nodes and initializers nothing reads."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        kept = [n for n in graph.node if any(o in used for o in n.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)


def _empty_batch(inputs: tuple[torch.Tensor, ...], past_kv: int | None = None) -> tuple[torch.Tensor, ...]:
    """The example inputs with no rows (N = 0; past_kv, input 3 of the cached graph, has N on axis 2). The graph is
    the same (N is a dynamic axis), but every product in the traced forward pass has zero rows, so none reads a
    weight: with rows, each product would copy its broadcast placeholder into a full-size matrix, and the tracer
    keeps many of those alive (about 40% of the float32 model in our measurements)."""
    return tuple(t[:, :, :0] if i == past_kv else t[:0] for i, t in enumerate(inputs))


def full_proto(config: ModelConfig, k: int) -> onnx.ModelProto:
    """The full graph (format 1's model.onnx): dynamic N, L, P."""
    return _trace(SamplingGraph(weightless(config), k), _empty_batch(example_inputs(config.vocab_size)), INPUT_NAMES,
                  OUTPUT_NAMES,
                  {"input_ids": {0: "N", 1: "L"}, "attention_mask": {0: "N", 1: "L"},
                   "positions": {0: "N", 1: "P"}, "cfg_scale": {0: "N"}, "uncond_row": {0: "N"},
                   "topk_logits": {0: "N", 1: "P"}, "topk_ids": {0: "N", 1: "P"},
                   "logsumexp": {0: "N", 1: "P"}, "entropy": {0: "N", 1: "P"}})


def cached_proto(config: ModelConfig, k: int) -> onnx.ModelProto:
    """The cached graph: dynamic N, Q (query tokens), Lp (cached positions, may be 0), KV (= Lp + Q), P."""
    return _trace(CachedSamplingGraph(weightless(config), k), _empty_batch(example_cached_inputs(config), past_kv=3),
                  CACHED_INPUT_NAMES,
                  CACHED_OUTPUT_NAMES,
                  {"input_ids": {0: "N", 1: "Q"}, "position_ids": {0: "N", 1: "Q"}, "attention_mask": {0: "N", 1: "KV"},
                   "past_kv": {2: "N", 4: "Lp"}, "positions": {0: "N", 1: "P"}, "cfg_scale": {0: "N"},
                   "uncond_row": {0: "N"}, "topk_logits": {0: "N", 1: "P"}, "topk_ids": {0: "N", 1: "P"},
                   "logsumexp": {0: "N", 1: "P"}, "entropy": {0: "N", 1: "P"}, "present_kv": {2: "N", 4: "Q"}})


def device_proto(config: ModelConfig, k: int) -> onnx.ModelProto:
    """The device graph: dynamic N (query rows), M (cache rows), Q, Lp, KV (= Lp + Q), P."""
    inputs = example_device_inputs(config)
    empty = tuple(t[:, :, :0] if i == 3 else t[:0] for i, t in enumerate(inputs))  # _empty_batch, M = N = 0
    return _trace(DeviceSamplingGraph(weightless(config), k), empty, DEVICE_INPUT_NAMES, DEVICE_OUTPUT_NAMES,
                  {"input_ids": {0: "N", 1: "Q"}, "position_ids": {0: "N", 1: "Q"}, "attention_mask": {0: "N", 1: "KV"},
                   "past_kv": {2: "M", 4: "Lp"}, "past_rows": {0: "N"}, "positions": {0: "N", 1: "P"},
                   "cfg_scale": {0: "N"}, "uncond_row": {0: "N"},
                   **{name: {0: "N", 1: "P"} for name in DEVICE_HEAD_NAMES}, "present_kv": {2: "N", 4: "KV"}})


# --- streaming the weights ----------------------------------------------------------------------------------------

BLOCK_ELEMENTS = 1 << 22  # 4 Mi values (16 MiB as float32) per block: what writing holds, whatever the tensor


class ModuleWeights:
    """The weights of a PyTorch module in memory (our own training runs), as write_weights reads them."""

    def __init__(self, model: LLaDA):
        self.state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.state[name].shape)

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self.state[name][start:stop]

    def columns(self, name: str, start: int, stop: int) -> np.ndarray:
        return self.state[name][:, start:stop]


def write_weights(protos: list[onnx.ModelProto], source, data_path: str, progress=None) -> int:
    """Fills the bound initializers of `protos` (bind_weights; float32 or float16 after fp16_proto) from `source`
    (ModuleWeights or convert.CheckpointWeights: shape, rows, columns) into one external data file, each distinct
    (name, type) once and 64-byte aligned, block by block: memory holds one block, never a tensor. Returns the
    file's size. progress(i, n, bytes written) is called after each of the n tensors written."""
    location = os.path.basename(data_path)
    placed: dict[tuple[str, int], tuple[int, int]] = {}
    count = len({(t.name, t.data_type) for p in protos for t in p.graph.initializer
                 if t.data_location == onnx.TensorProto.EXTERNAL})
    with open(data_path, "wb") as f:
        for proto in protos:
            for tensor in proto.graph.initializer:
                if tensor.data_location != onnx.TensorProto.EXTERNAL:
                    continue
                key = (tensor.name, tensor.data_type)
                if key not in placed:
                    f.write(b"\0" * (-f.tell() % 64))
                    start = f.tell()
                    _stream(tensor, source, f)
                    placed[key] = (start, f.tell() - start)
                    if progress is not None:
                        progress(len(placed), count, f.tell())
                offset, length = placed[key]
                del tensor.external_data[:]
                for field, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                    tensor.external_data.add(key=field, value=value)
        return f.tell()


def _stream(tensor: onnx.TensorProto, source, f) -> None:
    if quantize.parse_name(tensor.name) is not None:  # MatMulNBits' packed weights and scales (quantize.py)
        quantize.stream(tensor, source, f, BLOCK_ELEMENTS)
        return
    transposed = tensor.name.endswith(TRANSPOSED)
    name = tensor.name[: -len(TRANSPOSED)] if transposed else tensor.name
    shape = tuple(tensor.dims)
    expected = source.shape(name)[::-1] if transposed else source.shape(name)
    if shape != tuple(expected):
        raise ValueError(f"{name}: the graph wants shape {list(shape)}, the weights have {list(source.shape(name))}")
    dtype = np.float16 if tensor.data_type == onnx.TensorProto.FLOAT16 else np.float32
    rows = shape[0] if shape else 1
    step = max(1, BLOCK_ELEMENTS // max(1, int(np.prod(shape[1:], dtype=np.int64))))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        block = source.columns(name, start, stop).T if transposed else source.rows(name, start, stop)
        with np.errstate(over="ignore"):  # checked on the next line, with the tensor named
            out = np.ascontiguousarray(block, dtype=dtype)
        if dtype == np.float16 and not np.isfinite(out).all() and np.isfinite(block).all():
            raise ValueError(f"{name}: values beyond float16's range (|x| > 65504); convert without --fp16")
        f.write(memoryview(out).cast("B"))


# --- the fp16 graph: float16 products, float32 islands ----------------------------------------------------------

MATRIX_PRODUCTS = {"MatMul", "Gemm"}
ANY_INPUT_TYPE = {"Shape", "Size", "Cast"}  # read any element type: no cast is put in front of them


def fp16_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 variant for GPUs, with mixed precision as autocast and mixed-precision inference do it: the matrix
    products (and so every weight they read) run in float16; what the PyTorch module computes in float32 stays in
    float32. The graph's float inputs and outputs stay float32, so the I/O contract is unchanged.

    Which nodes stay float32 ("islands") follows the module's own casts, which the trace keeps: every `.float()`
    (RMSNorm's statistics, the attention softmax, the sampling head) is a Cast to float in the fp32 graph. A node
    runs in float32 if it is such a Cast, reads a float32 island tensor, or depends on no weight at all (position
    ids -> rotary angles -> cos/sin, the padding bias; these are computed from the integer inputs); the islands end
    at the next matrix product, whose operands are cast to float16. Pure constants (no input, no weight) are
    computed in float32 and cast to what their reader runs in. Everything else, i.e. the weight-bearing stream
    between islands (embedding, projections, SwiGLU, residual adds), runs in float16.

    Without this, native float16 (the CUDA provider; the CPU provider upcasts silently) gives rotary angles off by
    up to ~0.8 rad at positions near 2048 (float16's spacing there is 2) and overflows RMSNorm's x^2 to infinity for
    any residual channel above 256, zeroing that token's normalised vector (tests/test_export.py emulates both).
    """
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    graph = proto.graph
    typed = onnx.shape_inference.infer_shapes(proto).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*typed.value_info, *typed.input, *typed.output]}
    elem.update({t.name: t.data_type for t in graph.initializer})
    weights = {t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL and t.data_type == f32}
    inputs = {i.name for i in graph.input}
    on_weights, on_inputs = set(weights), set(inputs)
    island = {name for name in inputs if elem.get(name) == f32}
    old = list(graph.node)  # protobuf hands out a new wrapper per access: index nodes by position
    precision = []  # per node: f32 | f16
    for node in old:
        w = any(i in on_weights for i in node.input)
        x = any(i in on_inputs for i in node.input)
        if w:
            on_weights.update(node.output)
        if x:
            on_inputs.update(node.output)
        cast_to_float = node.op_type == "Cast" and onnx.helper.get_attribute_value(node.attribute[0]) == f32
        if not w and not x:
            precision.append(f32)  # a constant: neutral, its readers cast it
        elif cast_to_float or (node.op_type not in MATRIX_PRODUCTS and (not w or any(i in island for i in node.input))):
            precision.append(f32)
            island.update(o for o in node.output if elem.get(o) == f32)
        else:
            precision.append(f16)
    # Weights read only by float32 nodes (RMSNorm's gains) stay float32; all others are stored in float16.
    readers: dict[str, set[int]] = {}
    for node, p in zip(old, precision):
        for i in node.input:
            readers.setdefault(i, set()).add(p)
    for t in graph.initializer:
        if t.name in weights and f16 in readers.get(t.name, set()):
            t.data_type = f16
            elem[t.name] = f16
    half_outputs = {o for n, p in zip(old, precision) if p == f16 for o in n.output if elem.get(o) == f32}
    for node, p in zip(old, precision):
        if p != f16:
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == f32:
                attr.t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))

    def current(name: str) -> int:  # the element type of a float tensor after conversion
        return f16 if name in half_outputs or elem.get(name) == f16 else elem.get(name, 0)

    nodes, casts = [], {}

    def cast(name: str, to: int) -> str:
        if (name, to) not in casts:
            casts[(name, to)] = f"{name}_as_{'fp16' if to == f16 else 'fp32'}"
            nodes.append(onnx.helper.make_node("Cast", [name], [casts[(name, to)]], to=to, name=casts[(name, to)]))
        return casts[(name, to)]

    for node, want in zip(old, precision):
        if node.op_type not in ANY_INPUT_TYPE:
            node.input[:] = [cast(i, want) if i and current(i) in (f32, f16) and current(i) != want else i
                             for i in node.input]
        nodes.append(node)
    for out in graph.output:
        if current(out.name) == f16:
            inner = out.name + "_fp16"
            for node in nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            nodes.append(onnx.helper.make_node("Cast", [inner], [out.name], to=f32, name=out.name + "_cast"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return proto


def save_graph(proto: onnx.ModelProto, path: str, metadata: dict[str, str]) -> None:
    """The graph file alone (its weights are in the external data file write_weights filled), with metadata."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save_model(proto, path)


def export_onnx(model: LLaDA, path: str, k: int, metadata: dict[str, str], external_above: int = TWO_GB) -> None:
    """Export the full graph alone (opset 17, dynamic N, L, P) from a module in memory; weights beyond
    `external_above` bytes go to `<path>.data` (protobuf cannot hold a model over 2 GB), else into the file."""
    proto = full_proto(model.config, k)
    data_path = path + ".data"
    size = write_weights([proto], ModuleWeights(model), data_path)
    save_graph(proto, path, metadata)
    if size <= external_above:
        save_graph(onnx.load(path), path, metadata)  # onnx.load pulls the external data in
        os.remove(data_path)


def write_folder(config: ModelConfig, source, out: str, tokenizer_path: str, k: int, name: str, fp16: bool = False,
                 progress=None, quantization: quantize.Quantization | None = None, **spec) -> dict:
    """dllm.json, tokenizer.json, and the graphs: model.onnx (full), model.kv.onnx (cached) and model.device.onnx
    (device) reading one weights file, weights.data; with fp16, the same three as *.fp16.onnx reading
    weights.fp16.data. The graphs
    are traced from `config` alone and the weights streamed from `source` (ModuleWeights, convert.CheckpointWeights);
    progress(precision, i, n, bytes written) follows the writing of each weights file. With `quantization`, every
    graph's linear layers are MatMulNBits (quantize.quantize_proto; the fp16 graphs after fp16_proto, with float16
    scales), their weights packed as they stream, and dllm.json says so (`quantization`)."""
    os.makedirs(out, exist_ok=True)
    meta = dllm_json(config, k, name, fp16, quantization=None if quantization is None else quantization.to_json(), **spec)
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(out, "tokenizer.json")):
        shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.json"))
    onnx_meta = {"dllm": json.dumps(meta)} | {k2: json.dumps(v) for k2, v in meta.items() if k2 != "model_config"}
    for stale in ("model.onnx.data", "model.fp16.onnx.data"):  # format 1 exports of big models
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    graphs = {"onnx": full_proto(config, k), "cached": cached_proto(config, k), "device": device_proto(config, k)}
    variants = [("fp32", graphs)]
    if fp16:
        variants.append(("fp16", {key: fp16_proto(onnx.ModelProto.FromString(g.SerializeToString())) for key, g in graphs.items()}))
    if quantization is not None:
        for _, protos in variants:
            for proto in protos.values():
                quantize.quantize_proto(proto, quantization)
    for precision, protos in variants:
        write_weights(list(protos.values()), source, os.path.join(out, WEIGHTS_FILE[precision]),
                      None if progress is None else lambda i, n, written, p=precision: progress(p, i, n, written))
        for key, proto in protos.items():
            save_graph(proto, os.path.join(out, meta[key][precision]), onnx_meta)
    with open(os.path.join(out, "dllm.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def write_model_folder(model: LLaDA, out: str, tokenizer_path: str, k: int, name: str, fp16: bool = False,
                       quantization: quantize.Quantization | None = None, **spec) -> dict:
    """write_folder for a module in memory (our training runs)."""
    return write_folder(model.config, ModuleWeights(model), out, tokenizer_path, k, name, fp16,
                        quantization=quantization, **spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="tiny-llada")
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--block-length", type=int, help="generation_defaults.block_length (default: the "
                        "architecture's: 8, or the whole span for a shifted-logits model, as Dream decodes)")
    parser.add_argument("--remasking", default=DEFAULT_GENERATION["remasking"], help="generation_defaults.remasking")
    for penalty in ("frequency", "presence"):
        parser.add_argument(f"--{penalty}-penalty", type=float, default=0.0,
                            help=f"generation_defaults.{penalty}_penalty, in [-2, 2] (OpenAI's; src/engine/penalties.ts)")
    quantize.add_arguments(parser)
    args = parser.parse_args()
    for penalty in ("frequency_penalty", "presence_penalty"):
        if not -2 <= getattr(args, penalty) <= 2:
            parser.error(f"--{penalty.replace('_', '-')} must be in [-2, 2], got {getattr(args, penalty)}")
    try:
        quantization = quantize.from_args(args)
    except quantize.QuantizationError as e:
        parser.error(str(e))
    model, _ = load_checkpoint(args.checkpoint)
    defaults = {"remasking": args.remasking} | ({} if args.block_length is None else {"block_length": args.block_length})
    defaults |= {k: getattr(args, k) for k in ("frequency_penalty", "presence_penalty") if getattr(args, k) != 0}
    meta = write_model_folder(model, args.out, args.tokenizer, args.topk, args.name, args.fp16,
                              quantization=quantization, generation_defaults=defaults)
    print(f"wrote {args.out}: {meta['format']}, vocab {meta['vocab_size']}, K {meta['topk']}"
          + (f", int{quantization.bits} linear layers" if quantization else ""))


if __name__ == "__main__":
    main()
