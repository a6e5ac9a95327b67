"""Weight-only quantization of a model folder's graphs: every linear layer of the transformer becomes ONNX Runtime's
`com.microsoft.MatMulNBits` contrib op with 4- or 8-bit weights, packed block by block as the weights stream into the
folder (export.write_folder), so converting with `--quantize` holds one block of weights at a time, as without.

    python3 -m dllm.convert --checkpoint /data/LLaDA-8B-Instruct --out models/llada-8b-int4 --quantize int4
    python3 -m dllm.export --checkpoint runs/tiny-llada/ckpt.pt --tokenizer tiny-llada/tokenizer.json \
        --out /tmp/tiny-int8 --quantize int8 [--block-size 32] [--accuracy-level 4]

**The op** (onnxruntime docs/ContribOperators.md, com.microsoft.MatMulNBits): Y = A @ dequant(B)^T with A [.., K]
float, B uint8 [N, k_blocks, blob_size] (k_blocks = ceil(K / block_size), blob_size = block_size * bits / 8), the
codes of one output column's block of K consecutive inputs packed along K, low bits first (for 4 bits: the first
code in the low nibble, the second in the high nibble); scales [N, k_blocks] in A's type; zero_points optional,
2^(bits - 1) when absent (8 for 4 bits, 128 for 8 bits): dequant = (code - zero_point) * scale. Attributes K, N,
bits, block_size (a power of two >= 16) and accuracy_level (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8: with 4 the CPU
kernel quantizes A to int8 blockwise and multiplies in integers where MLAS has such a kernel, else it falls back to
a more accurate level).

**The quantization** is symmetric round-to-nearest, the rule of onnxruntime's own quantizer (MLAS
`q4_dq.cpp` `range2scale`, and `matmul_nbits_quantizer.py` `quant_slice_symmetric`): per block the value of largest
magnitude m, sign kept (the negative one on a tie), gives scale = m / -2^(bits-1), so m itself is the code 0, i.e.
-2^(bits-1) exactly, and the block uses all 2^bits levels; each weight is round(w / scale) (half to even) clipped to
[-2^(bits-1), 2^(bits-1) - 1], stored plus the default zero point, so no zero_points input is written. A block of
zeros has scale 0 and codes at the zero point. K need not be a multiple of block_size: the last block is padded with
zeros (code = zero point, weight 0), as the op defines k_blocks and as onnxruntime's quantizer pads.

**What is quantized** ("layers": "linear"): the seven linear layers of each transformer block (q/k/v projections,
attention output, the MLP's gate, up and down projections), i.e. each MatMul whose B is one of their `…weight^T`
initializers (export.bind_weights: nn.Linear traces to MatMul with the transposed weight). Biases stay float Adds.
The token embedding (a Gather) and the output head stay float, tied or untied: the head's logits feed the sampling
head's exact float64 softmax (graph.guided_head), whose normaliser, confidences and top-K order are what the sampler
ranks and commits by, so every error in the head would reach the sampler unattenuated (a linear layer's error is
averaged by the layers after it). In LLaDA-8B they are 13% of the parameters (2 x 126,464 x 4,096) but, kept
float32, about half of an int4 folder.

`dequantize` is the exact inverse of the packing, (code - zero_point) * scale in float32 as the op computes it, and
`dequantized_model` builds the PyTorch module of a quantized folder from it (the reference sampler, validation loss).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np
import onnx

from .graph import TRANSPOSED

DOMAIN = "com.microsoft"
BITS = (4, 8)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
# MLAS's blockwise kernels and dequantizer take these block lengths (MatMulNBits allows any power of two >= 16;
# onnxruntime's CPU provider fails at session start on larger ones).
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32  # onnxruntime-genai's model builder: block 32, symmetric, accuracy level 4 on CPU and WebGPU
DEFAULT_ACCURACY_LEVEL = 4
LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
_LINEAR = re.compile(r"^transformer\.blocks\.\d+\.(" + "|".join(LINEAR_LAYERS) + r")\.weight$")
_QUANTIZED = re.compile(r"^(?P<param>.+)\^Q(?P<bits>\d+)(?P<scales>\.scales)?$")


class QuantizationError(ValueError):
    """A quantization the op or a provider cannot take, named."""


@dataclass(frozen=True)
class Quantization:
    bits: int
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL

    def __post_init__(self):
        if self.bits not in BITS:
            raise QuantizationError(f"--quantize: {self.bits}-bit weights are not supported (int4 or int8)")
        if self.block_size not in BLOCK_SIZES:
            why = ("not a power of two" if self.block_size & (self.block_size - 1) or self.block_size < 1 else
                   "below MatMulNBits' minimum 16" if self.block_size < 16 else
                   "above 256, the largest block onnxruntime's CPU kernels take")
            raise QuantizationError(f"--block-size {self.block_size}: {why}; one of {', '.join(map(str, BLOCK_SIZES))}")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise QuantizationError(f"--accuracy-level {self.accuracy_level}: MatMulNBits takes 0 (unset), 1 (fp32), "
                                    "2 (fp16), 3 (bf16) or 4 (int8)")

    def to_json(self) -> dict:
        """dllm.json's `quantization` (docs/models.md)."""
        return {"bits": self.bits, "block_size": self.block_size, "accuracy_level": self.accuracy_level,
                "layers": "linear"}

    @classmethod
    def from_json(cls, value: dict | None) -> "Quantization | None":
        return None if value is None else cls(value["bits"], value["block_size"], value["accuracy_level"])

    @classmethod
    def parse(cls, name: str | None, block_size: int = DEFAULT_BLOCK_SIZE,
              accuracy_level: int = DEFAULT_ACCURACY_LEVEL) -> "Quantization | None":
        """`--quantize int4|int8` (None: no quantization)."""
        if name is None:
            return None
        match = re.fullmatch(r"int(\d+)", name)
        if match is None:
            raise QuantizationError(f"--quantize {name}: one of int4, int8")
        return cls(int(match.group(1)), block_size, accuracy_level)


def add_arguments(parser) -> None:
    """--quantize, --block-size, --accuracy-level (dllm.export and dllm.convert)."""
    parser.add_argument("--quantize", default=None, metavar="int4|int8",
                        help="linear layers as MatMulNBits with 4- or 8-bit weights (docs/models.md)")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                        help=f"weights per scale along K with --quantize (default {DEFAULT_BLOCK_SIZE})")
    parser.add_argument("--accuracy-level", type=int, default=DEFAULT_ACCURACY_LEVEL,
                        help="MatMulNBits accuracy_level with --quantize: 1 float32 compute, 4 int8 compute where the "
                             f"CPU has the kernel (default {DEFAULT_ACCURACY_LEVEL})")


def from_args(args) -> Quantization | None:
    if args.quantize is None and (args.block_size != DEFAULT_BLOCK_SIZE or args.accuracy_level != DEFAULT_ACCURACY_LEVEL):
        raise QuantizationError("--block-size and --accuracy-level need --quantize int4 or int8")
    return Quantization.parse(args.quantize, args.block_size, args.accuracy_level)


# --- packing ----------------------------------------------------------------------------------------------------


def k_blocks(k: int, block_size: int) -> int:
    return -(-k // block_size)


def quantize_rows(w: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a weight W [n, K] (output features x input features, nn.Linear's layout) -> codes uint8
    [n, k_blocks, block_size] (the zero point added) and scales float32 [n, k_blocks]."""
    n, k = w.shape
    blocks = k_blocks(k, block_size)
    w = np.asarray(w, dtype=np.float32)
    if blocks * block_size != k:
        w = np.pad(w, ((0, 0), (0, blocks * block_size - k)))
    w = w.reshape(n, blocks, block_size)
    hi, lo = w.max(axis=-1), w.min(axis=-1)
    half = 1 << (bits - 1)
    scales = (np.where(np.abs(hi) > np.abs(lo), hi, lo) / np.float32(-half)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(w / scales[..., None])
    q = np.where(scales[..., None] == 0, 0, q)
    codes = (np.clip(q, -half, half - 1) + half).astype(np.uint8)
    return codes, scales


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes [.., block_size] -> the blob [.., block_size * bits / 8]: for 4 bits, element 2i in the low nibble of
    byte i and element 2i + 1 in its high nibble."""
    if bits == 8:
        return codes
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack(blob: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of pack."""
    if bits == 8:
        return blob
    codes = np.empty(blob.shape[:-1] + (blob.shape[-1] * 2,), dtype=np.uint8)
    codes[..., 0::2] = blob & 0x0F
    codes[..., 1::2] = blob >> 4
    return codes


def dequantize(packed: np.ndarray, scales: np.ndarray, bits: int, k: int) -> np.ndarray:
    """W [N, K] float32 as MatMulNBits computes it from B [N, k_blocks, blob] and scales [N, k_blocks] (or flat):
    (code - 2^(bits-1)) * scale, the padding beyond K dropped."""
    n, blocks, _ = packed.shape
    codes = unpack(packed, bits).astype(np.float32) - np.float32(1 << (bits - 1))
    w = codes * np.asarray(scales, dtype=np.float32).reshape(n, blocks, 1)
    return w.reshape(n, -1)[:, :k]


# --- the graph rewrite ------------------------------------------------------------------------------------------


def linear_parameter(initializer: str) -> str | None:
    """`transformer.blocks.3.ff_out.weight^T` -> `transformer.blocks.3.ff_out.weight`; None for any other tensor
    (the embedding, the output head `transformer.ff_out.weight^T` or the tied `transformer.wte.weight^T`, norms)."""
    if not initializer.endswith(TRANSPOSED):
        return None
    param = initializer[: -len(TRANSPOSED)]
    return param if _LINEAR.match(param) else None


def packed_name(param: str, bits: int) -> str:
    return f"{param}^Q{bits}"


def scales_name(param: str, bits: int) -> str:
    return f"{param}^Q{bits}.scales"


def parse_name(name: str) -> tuple[str, int, bool] | None:
    """An initializer written by quantize_proto -> (parameter, bits, is the scales tensor); None otherwise."""
    match = _QUANTIZED.match(name)
    if match is None:
        return None
    return match["param"], int(match["bits"]), match["scales"] is not None


def quantize_proto(proto: onnx.ModelProto, q: Quantization) -> list[str]:
    """Rewrites a traced graph (bound weights, export.bind_weights; float32 or export.fp16_proto's float16) in place:
    each MatMul whose B is a linear layer's transposed weight becomes MatMulNBits reading `<param>^Q<bits>` (uint8
    [N, k_blocks, blob]) and `<param>^Q<bits>.scales` ([N, k_blocks], B's float type), both external and without
    data, filled by `stream` when export.write_weights writes the folder. Nothing else changes. Returns the
    parameters quantized, in graph order."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    blob = q.block_size * q.bits // 8
    replaced: dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.input[1] not in inits:
            continue
        param = linear_parameter(node.input[1])
        if param is None:
            continue
        weight = inits[node.input[1]]
        if weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) or len(weight.dims) != 2:
            raise QuantizationError(f"{param}: a {len(weight.dims)}-d {onnx.TensorProto.DataType.Name(weight.data_type)} "
                                    "weight; MatMulNBits quantizes 2-d float weights")
        k, n = weight.dims
        replaced[weight.name] = weight
        a = node.input[0]
        del node.input[:]
        node.input.extend([a, packed_name(param, q.bits), scales_name(param, q.bits)])
        node.op_type, node.domain = "MatMulNBits", DOMAIN
        node.name = (node.name or param) + f"_Q{q.bits}"
        del node.attribute[:]
        attrs = {"K": k, "N": n, "bits": q.bits, "block_size": q.block_size}
        if q.accuracy_level:  # 0 is the op's default (unset): left out, as onnxruntime's quantizer does
            attrs["accuracy_level"] = q.accuracy_level
        node.attribute.extend(onnx.helper.make_attribute(key, value) for key, value in attrs.items())
    readers = {i for node in graph.node for i in node.input}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in readers]
    added = []
    for name, weight in replaced.items():
        param = name[: -len(TRANSPOSED)]
        k, n = weight.dims
        blocks = k_blocks(k, q.block_size)
        for tensor in (onnx.helper.make_tensor_value_info(packed_name(param, q.bits), onnx.TensorProto.UINT8,
                                                          [n, blocks, blob]),
                       onnx.helper.make_tensor_value_info(scales_name(param, q.bits), weight.data_type, [n, blocks])):
            t = onnx.TensorProto(name=tensor.name, data_type=tensor.type.tensor_type.elem_type,
                                 dims=[d.dim_value for d in tensor.type.tensor_type.shape.dim])
            t.data_location = onnx.TensorProto.EXTERNAL
            added.append(t)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    if replaced and not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.add(domain=DOMAIN, version=1)
    return [name[: -len(TRANSPOSED)] for name in replaced]


# --- streaming the quantized weights ----------------------------------------------------------------------------

# The scales of the tensor last packed: its packing pass computed them, and write_weights writes the scales tensor
# right after it (quantize_proto adds each pair in that order). One tensor's scales: 1/block_size of its values.
_last_scales: dict[tuple[str, int, int], np.ndarray] = {}


def stream(tensor: onnx.TensorProto, source, f, block_elements: int) -> None:
    """Writes a quantize_proto initializer (packed codes or scales) from `source` (rows of W [N, K] as float32:
    export.ModuleWeights, convert.CheckpointWeights) into f, a few rows at a time (about block_elements weights)."""
    param, bits, is_scales = parse_name(tensor.name)
    n, k = source.shape(param)
    n_t, blocks = tensor.dims[0], tensor.dims[1]
    if is_scales:
        # The smallest power of two >= K / k_blocks: the block size whenever k_blocks > 1; with one block, any block
        # size >= K quantizes alike (zero padding never is a block's largest magnitude).
        block_size = 1 << max(0, (-(-k // max(1, blocks)) - 1).bit_length())
    else:
        block_size = tensor.dims[2] * 8 // bits
    if n_t != n or k_blocks(k, block_size) != blocks:
        raise ValueError(f"{param}: the graph wants {tensor.name} {list(tensor.dims)}, the weights have {[n, k]}")
    key = (param, bits, block_size)
    scale_type = np.float16 if tensor.data_type == onnx.TensorProto.FLOAT16 else np.float32
    if is_scales and key in _last_scales:
        f.write(memoryview(np.ascontiguousarray(_last_scales.pop(key), dtype=scale_type)).cast("B"))
        return
    _last_scales.clear()
    step = max(1, block_elements // max(1, k))
    all_scales = np.empty((n, blocks), dtype=np.float32)
    for start in range(0, n, step):
        stop = min(n, start + step)
        codes, scales = quantize_rows(source.rows(param, start, stop), bits, block_size)
        all_scales[start:stop] = scales
        if not is_scales:
            f.write(memoryview(np.ascontiguousarray(pack(codes, bits))).cast("B"))
    if is_scales:
        f.write(memoryview(np.ascontiguousarray(all_scales, dtype=scale_type)).cast("B"))
    else:
        _last_scales[key] = all_scales


# --- reading a quantized folder back ----------------------------------------------------------------------------


_NUMPY = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.UINT8: np.uint8}


def _external(tensor: onnx.TensorProto, folder: str) -> np.ndarray:
    info = {e.key: e.value for e in tensor.external_data}
    dtype = _NUMPY[tensor.data_type]
    count = int(np.prod(tensor.dims, dtype=np.int64))
    data = np.fromfile(os.path.join(folder, info["location"]), dtype=dtype, count=count,
                       offset=int(info.get("offset", 0)))
    return data.reshape(tuple(tensor.dims))


def folder_weights(folder: str, graph_file: str = "model.onnx") -> dict[str, np.ndarray]:
    """{parameter: float32 array in nn's layout} of a folder's graph, quantized weights dequantized exactly as
    MatMulNBits computes them (`dequantize`); unquantized ones as stored (transposed back)."""
    proto = onnx.load(os.path.join(folder, graph_file), load_external_data=False)
    tensors = {t.name: t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    nodes = {n.input[1]: n for n in proto.graph.node if n.op_type == "MatMulNBits"}
    out = {}
    for name, tensor in tensors.items():
        parsed = parse_name(name)
        if parsed is not None:
            param, bits, is_scales = parsed
            if is_scales:
                continue
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[name].attribute}
            scales = _external(tensors[scales_name(param, bits)], folder)
            out[param] = dequantize(_external(tensor, folder), scales, bits, attrs["K"])
        elif name.endswith(TRANSPOSED):
            out.setdefault(name[: -len(TRANSPOSED)], np.ascontiguousarray(_external(tensor, folder).T, np.float32))
        else:
            out[name] = _external(tensor, folder).astype(np.float32)
    return out


def dequantized_model(folder: str):
    """The PyTorch module of a (quantized or float) folder with the weights the graph computes with."""
    import torch

    from .model import LLaDA, ModelConfig

    with open(os.path.join(folder, "dllm.json")) as f:
        spec = json.load(f)
    model = LLaDA(ModelConfig.from_dict(spec["model_config"])).eval()
    weights = folder_weights(folder, spec["onnx"]["fp32"])
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    if missing:
        raise ValueError(f"{folder}: no weight for {missing[0]} in {spec['onnx']['fp32']}")
    model.load_state_dict({n: torch.from_numpy(np.array(weights[n])) for n in params}, strict=False)
    return model


# --- quantizing a float folder --------------------------------------------------------------------------------


class FolderWeights:
    """The float weights of a format-2 folder's graph (its external data file), as export.write_weights reads a
    source: shape, rows and columns of each parameter in nn's layout, read block by block through a short-lived
    memory map (what a block touches leaves memory with it), whether the folder stores the parameter or its
    transpose (`…^T`)."""

    def __init__(self, folder: str, graph_file: str = "model.onnx"):
        proto = onnx.load(os.path.join(folder, graph_file), load_external_data=False)
        self.folder = folder
        self.tensors = {t.name: t for t in proto.graph.initializer
                        if t.data_location == onnx.TensorProto.EXTERNAL and t.data_type == onnx.TensorProto.FLOAT}
        if any(parse_name(name) for name in self.tensors) or any(n.op_type == "MatMulNBits" for n in proto.graph.node):
            raise QuantizationError(f"{folder}: already quantized; quantize a float folder")

    def _stored(self, name: str) -> tuple[onnx.TensorProto, bool]:
        if name in self.tensors:
            return self.tensors[name], False
        if name + TRANSPOSED in self.tensors:
            return self.tensors[name + TRANSPOSED], True
        raise KeyError(f"{self.folder}: no float tensor {name}")

    def shape(self, name: str) -> tuple[int, ...]:
        tensor, transposed = self._stored(name)
        return tuple(tensor.dims)[::-1] if transposed else tuple(tensor.dims)

    def _read(self, name: str, start: int, stop: int, axis: int) -> np.ndarray:
        tensor, transposed = self._stored(name)
        info = {e.key: e.value for e in tensor.external_data}
        mm = np.memmap(os.path.join(self.folder, info["location"]), dtype=np.float32, mode="r",
                       offset=int(info.get("offset", 0)), shape=tuple(tensor.dims))
        try:
            stored = mm.T if transposed else mm
            return np.array(stored[start:stop] if axis == 0 else stored[:, start:stop])
        finally:
            del mm

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._read(name, start, stop, 0)

    def columns(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._read(name, start, stop, 1)
