"""ONNX export of a LLaDA model with the sampling head (docs/design.md §3).

Full logits [N, L, V] never leave the graph: the graph gathers the wanted positions, applies classifier-free
guidance over the whole vocabulary, and returns the top-K logits and ids, the softmax normaliser and the entropy.

    python3 -m dllm.export --checkpoint models/runs/tiny-llada/ckpt.pt --tokenizer models/tiny-llada/tokenizer.json \
        --out models/tiny-llada [--fp16]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import warnings

import onnx
import onnx.numpy_helper
import torch
import torch.nn as nn

from .model import LLaDA, load_checkpoint
from .tokenizer import BOS, EOS, EOT, MASK, PAD

FORMAT = "dllm-onnx/2"
OPSET = 17
TWO_GB = 2 * 1024**3
INPUT_NAMES = ["input_ids", "attention_mask", "positions", "cfg_scale", "uncond_row"]
OUTPUT_NAMES = ["topk_logits", "topk_ids", "logsumexp", "entropy"]
# The cached graph (format 2, docs/models.md): query tokens over a key/value cache.
CACHED_INPUT_NAMES = ["input_ids", "position_ids", "attention_mask", "past_kv", "positions", "cfg_scale", "uncond_row"]
CACHED_OUTPUT_NAMES = OUTPUT_NAMES + ["present_kv"]
# Every graph of a folder reads its weights from one external data file, so a second graph costs no weights.
WEIGHTS_FILE = {"fp32": "weights.data", "fp16": "weights.fp16.data"}

# LLaDA-8B-Instruct's chat format (its tokenizer_config.json chat_template), with our token names.
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def guided_head(logits: torch.Tensor, cfg_scale: torch.Tensor, uncond_row: torch.Tensor, k: int):
    """The sampling head on gathered logits [N, P, V] -> (topk_logits [N,P,K] float32, topk_ids [N,P,K],
    logsumexp [N,P] float64, entropy [N,P] float64).

    Guidance (LLaDA paper, Appendix B.3 / Ho & Salimans 2022): logits_i = u + (s_i + 1)(c_i - u) with u the
    logits of row uncond_row[i]; uncond_row[i] = i gives c_i exactly, so guided and plain rows share a batch.

    The normaliser and the entropy are computed (and returned) in float64, max-shifted: LLaDA's sampler takes the
    softmax of the logits in float64, and a float32 sum of exp(l - max) over the vocabulary drops the mass of
    thousands of tiny terms (each below half an ulp of 1), which inflates confidences near 1 by up to ~1e-5 and
    reorders near-ties. Returned as float32, log Z would still lose ~5e-7 at |log Z| ~ 10, hence float64 outputs.
    """
    logits = logits.float()
    u = logits.index_select(0, uncond_row)
    logits = u + (cfg_scale[:, None, None] + 1.0) * (logits - u)
    topk_logits, topk_ids = logits.topk(k, dim=-1)
    wide = logits.double()
    top = topk_logits[..., :1].double()  # the max, shared with topk: [N, P, 1]
    sum_exp = (wide - top).exp().sum(-1)  # >= 1 (the max contributes exactly 1): [N, P]
    logsumexp = top.squeeze(-1) + sum_exp.log()
    log_probs = wide - logsumexp.unsqueeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return topk_logits, topk_ids, logsumexp, entropy


class SamplingGraph(nn.Module):
    """What the server runs per denoising step: the model plus the sampling head."""

    def __init__(self, model: LLaDA, k: int):
        super().__init__()
        if not 1 <= k <= model.config.vocab_size:
            raise ValueError(f"topk K = {k} must be between 1 and the vocabulary size {model.config.vocab_size}")
        self.model, self.k = model, k

    def forward(self, input_ids, attention_mask, positions, cfg_scale, uncond_row):
        # input_ids, attention_mask: [N, L]; positions: [N, P]; cfg_scale: [N] float; uncond_row: [N]
        h = self.model.hidden_states(input_ids, attention_mask)  # [N, L, D]
        h = h.gather(1, positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [N, P, D]
        return guided_head(self.model.project(h), cfg_scale, uncond_row, self.k)


class CachedSamplingGraph(nn.Module):
    """The cached graph of format 2 (docs/models.md): Q query tokens at explicit absolute positions over a cache of
    keys/values (past_kv), the sampling head at `positions` (indices into the query), and the queries' own
    keys/values (present_kv), to be cached by the caller.

    Fast-dLLM (Wu et al. 2025, "Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and
    Parallel Decoding"; NVlabs/Fast-dLLM) runs LLaDA this way: a full pass (Lp = 0, the whole canvas as query) fills
    the cache at each block start, later steps of the block query the block alone (dual cache) or the block and what
    follows it (prefix cache). Keys are cached after RoPE, rotated by their absolute positions, so a cached key is
    used unchanged whatever query attends to it, and the order of keys along the cache axis does not matter.
    """

    def __init__(self, model: LLaDA, k: int):
        super().__init__()
        if not 1 <= k <= model.config.vocab_size:
            raise ValueError(f"topk K = {k} must be between 1 and the vocabulary size {model.config.vocab_size}")
        self.model, self.k = model, k

    def forward(self, input_ids, position_ids, attention_mask, past_kv, positions, cfg_scale, uncond_row):
        h, present_kv = self.model.hidden_states_cached(input_ids, position_ids, attention_mask, past_kv)  # [N, Q, D]
        h = h.gather(1, positions.unsqueeze(-1).expand(-1, -1, h.shape[-1]))  # [N, P, D]
        return (*guided_head(self.model.project(h), cfg_scale, uncond_row, self.k), present_kv)


def kv_shape(config) -> dict:
    """The cache geometry of a model: past_kv / present_kv are [layers, 2, N, kv_heads, length, head_dim]."""
    return {"layers": config.n_layers, "kv_heads": config.effective_n_kv_heads, "head_dim": config.head_dim}


def example_cached_inputs(model: LLaDA, n: int = 2, past: int = 5, q: int = 4, p: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    c = model.config
    input_ids = torch.randint(0, c.vocab_size, (n, q), generator=g)
    position_ids = torch.arange(past, past + q).repeat(n, 1)
    attention_mask = torch.ones(n, past + q, dtype=torch.int64)
    attention_mask[0, :2] = 0
    past_kv = torch.randn(c.n_layers, 2, n, c.effective_n_kv_heads, past, c.head_dim, generator=g)
    positions = torch.arange(q - p, q).repeat(n, 1)
    return input_ids, position_ids, attention_mask, past_kv, positions, torch.zeros(n), torch.arange(n)


def example_inputs(vocab_size: int, n: int = 2, length: int = 12, p: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (n, length), generator=g)
    attention_mask = torch.ones(n, length, dtype=torch.int64)
    attention_mask[0, :3] = 0
    positions = torch.arange(length - p, length).repeat(n, 1)
    return input_ids, attention_mask, positions, torch.zeros(n), torch.arange(n)


def _trace(graph: nn.Module, inputs: tuple, path: str, input_names: list[str], output_names: list[str],
           dynamic_axes: dict) -> onnx.ModelProto:
    """torch.onnx.export (TorchScript exporter, opset 17) into a scratch folder beside `path`; the loaded proto."""
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch 2.x: keep the TorchScript exporter, as on torch 1.13
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".export-tmp")
    os.makedirs(tmp, exist_ok=True)
    tmp_path = os.path.join(tmp, "model.onnx")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch 1.13's exporter warns about prim::Constant shape inference on every export; the graph is checked
            # against PyTorch by models/tests instead.
            warnings.simplefilter("ignore", UserWarning)
            torch.onnx.export(graph, inputs, tmp_path, opset_version=OPSET, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True, **kwargs)
        return onnx.load(tmp_path)  # also pulls in any external data torch wrote beside it
    finally:
        shutil.rmtree(tmp)


def full_proto(model: LLaDA, k: int, path: str) -> onnx.ModelProto:
    """The full graph (format 1's model.onnx): dynamic N, L, P."""
    model.eval()
    return _trace(SamplingGraph(model, k), example_inputs(model.config.vocab_size), path, INPUT_NAMES, OUTPUT_NAMES,
                  {"input_ids": {0: "N", 1: "L"}, "attention_mask": {0: "N", 1: "L"},
                   "positions": {0: "N", 1: "P"}, "cfg_scale": {0: "N"}, "uncond_row": {0: "N"},
                   "topk_logits": {0: "N", 1: "P"}, "topk_ids": {0: "N", 1: "P"},
                   "logsumexp": {0: "N", 1: "P"}, "entropy": {0: "N", 1: "P"}})


def cached_proto(model: LLaDA, k: int, path: str) -> onnx.ModelProto:
    """The cached graph: dynamic N, Q (query tokens), Lp (cached positions, may be 0), KV (= Lp + Q), P."""
    model.eval()
    return _trace(CachedSamplingGraph(model, k), example_cached_inputs(model), path, CACHED_INPUT_NAMES,
                  CACHED_OUTPUT_NAMES,
                  {"input_ids": {0: "N", 1: "Q"}, "position_ids": {0: "N", 1: "Q"}, "attention_mask": {0: "N", 1: "KV"},
                   "past_kv": {2: "N", 4: "Lp"}, "positions": {0: "N", 1: "P"}, "cfg_scale": {0: "N"},
                   "uncond_row": {0: "N"}, "topk_logits": {0: "N", 1: "P"}, "topk_ids": {0: "N", 1: "P"},
                   "logsumexp": {0: "N", 1: "P"}, "entropy": {0: "N", 1: "P"}, "present_kv": {2: "N", 4: "Q"}})


def export_onnx(model: LLaDA, path: str, k: int, metadata: dict[str, str], external_above: int = TWO_GB) -> None:
    """Export the full graph alone (opset 17, dynamic N, L, P); weights beyond 2 GB go to `<path>.data`."""
    save_with_metadata(full_proto(model, k, path), path, metadata, external_above)


def save_shared(graphs: list[tuple[onnx.ModelProto, str]], data_path: str, metadata: dict[str, str],
                min_bytes: int = 1024) -> None:
    """Saves graphs whose weights live once in one external data file (`data_path`, beside them).

    Initializers of at least `min_bytes` are written to the file once per distinct (type, shape, bytes), 64-byte
    aligned; every graph holding the same tensor points at the same offset. The graphs of one model are traced from
    the same modules, so their weights (transposed the same way by constant folding) coincide and the file holds one
    copy of the model, however many graphs read it.
    """
    from onnx.external_data_helper import set_external_data

    folder = os.path.dirname(os.path.abspath(data_path))
    location = os.path.basename(data_path)
    placed: dict[tuple, tuple[int, int]] = {}
    with open(data_path, "wb") as f:
        for proto, _ in graphs:
            for tensor in proto.graph.initializer:
                array = onnx.numpy_helper.to_array(tensor)
                if array.nbytes < min_bytes:
                    continue
                raw = array.tobytes()
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(raw).digest())
                if key not in placed:
                    f.write(b"\0" * (-f.tell() % 64))
                    placed[key] = (f.tell(), len(raw))
                    f.write(raw)
                offset, length = placed[key]
                name = tensor.name
                tensor.CopyFrom(onnx.numpy_helper.from_array(array, name))  # raw_data only
                set_external_data(tensor, location=location, offset=offset, length=length)
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
    for proto, path in graphs:
        if os.path.dirname(os.path.abspath(path)) != folder:
            raise ValueError(f"{path}: must be beside its weights file {data_path}")
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        stale = path + ".data"
        if os.path.exists(stale):
            os.remove(stale)
        onnx.save_model(proto, path)


def save_with_metadata(proto: onnx.ModelProto, path: str, metadata: dict[str, str], external_above: int = TWO_GB) -> None:
    """Save with metadata; weights go to one `<file>.data` external file when they exceed `external_above` bytes
    (protobuf cannot hold a model over 2 GB)."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    data_name = os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), data_name)
    if os.path.exists(data_path):
        os.remove(data_path)
    if sum(t.ByteSize() for t in proto.graph.initializer) > external_above:
        onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
    else:
        onnx.save_model(proto, path)


def to_fp16(src: str, dst: str) -> None:
    """fp16 variant of one graph file (see fp16_proto)."""
    proto = fp16_proto(onnx.load(src))
    save_with_metadata(proto, dst, {p.key: p.value for p in proto.metadata_props})


def fp16_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 variant for GPUs: float weights and compute in fp16, graph inputs and outputs stay float32.

    Converted after an fp32 export (torch 1.13 cannot trace fp16 on CPU): every float initializer and
    constant becomes float16, casts to float become casts to float16, and casts are added at the float
    inputs (cfg_scale; past_kv of the cached graph) and outputs so the I/O contract is unchanged.
    """
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for init in proto.graph.initializer:
        if init.data_type == f32:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init).astype("float16"), init.name))
    for node in proto.graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == f32:
                attr.i = f16
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == f32:
                attr.t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(attr.t).astype("float16"), attr.t.name))
    graph = proto.graph
    new_nodes = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type == f32:
            cast_name = inp.name + "_fp16"
            for node in graph.node:
                node.input[:] = [cast_name if i == inp.name else i for i in node.input]
            new_nodes.append(onnx.helper.make_node("Cast", [inp.name], [cast_name], to=f16, name=cast_name))
    nodes = new_nodes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    for out in graph.output:
        if out.type.tensor_type.elem_type == f32:
            inner = out.name + "_fp16"
            for node in graph.node:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            graph.node.append(onnx.helper.make_node("Cast", [inner], [out.name], to=f32, name=out.name + "_cast"))
    del graph.value_info[:]
    return proto


DEFAULT_GENERATION = {"max_tokens": 64, "steps": 64, "block_length": 8, "remasking": "low_confidence", "threshold": None,
                      "temperature": 0.0}


def dllm_json(model: LLaDA, k: int, name: str, fp16: bool, chat_template: str | None = LLADA_CHAT_TEMPLATE,
              eos_token_ids: tuple[int, ...] = (EOS, EOT), pad_token_id: int = PAD, bos_token_id: int | None = BOS,
              mask_token_id: int = MASK, generation_defaults: dict | None = None) -> dict:
    """The model folder's dllm.json (docs/design.md §2; format 2 adds `cached` and `weights`, docs/models.md).
    generation_defaults update DEFAULT_GENERATION (what a request leaves out). A block diffusion model's block size
    is also its block_length: it cannot decode in other blocks than it was trained with."""
    block_size = model.config.block_size
    defaults = DEFAULT_GENERATION | (generation_defaults or {}) | ({"block_length": block_size} if block_size else {})
    return {
        "format": FORMAT,
        "architecture": "block_diffusion" if block_size else "llada",
        **({"block_size": block_size} if block_size else {}),
        "name": name,
        "vocab_size": model.config.vocab_size,
        "mask_token_id": mask_token_id,
        "eos_token_ids": list(eos_token_ids),
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "max_sequence_length": model.config.max_sequence_length,
        "topk": k,
        "chat_template": chat_template,
        "generation_defaults": defaults,
        "onnx": {"fp32": "model.onnx", "fp16": "model.fp16.onnx" if fp16 else None},
        "cached": {"fp32": "model.kv.onnx", "fp16": "model.kv.fp16.onnx" if fp16 else None, **kv_shape(model.config)},
        "weights": {"fp32": WEIGHTS_FILE["fp32"], "fp16": WEIGHTS_FILE["fp16"] if fp16 else None},
        "model_config": model.config.to_dict(),
    }


def write_model_folder(model: LLaDA, out: str, tokenizer_path: str, k: int, name: str, fp16: bool = False, **spec) -> dict:
    """dllm.json, tokenizer.json, and the graphs: model.onnx (full) and model.kv.onnx (cached) reading one weights
    file, weights.data; with fp16, model.fp16.onnx and model.kv.fp16.onnx reading weights.fp16.data."""
    os.makedirs(out, exist_ok=True)
    meta = dllm_json(model, k, name, fp16, **spec)
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(out, "tokenizer.json")):
        shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.json"))
    onnx_meta = {"dllm": json.dumps(meta)} | {k2: json.dumps(v) for k2, v in meta.items() if k2 != "model_config"}
    full = full_proto(model, k, os.path.join(out, "model.onnx"))
    cached = cached_proto(model, k, os.path.join(out, "model.kv.onnx"))
    for stale in ("model.onnx.data", "model.fp16.onnx.data"):  # format 1 exports of big models
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    if fp16:
        # Converted from the fp32 protos before those are rewritten to point at their external data.
        full16 = fp16_proto(onnx.ModelProto.FromString(full.SerializeToString()))
        cached16 = fp16_proto(onnx.ModelProto.FromString(cached.SerializeToString()))
        save_shared([(full16, os.path.join(out, meta["onnx"]["fp16"])), (cached16, os.path.join(out, meta["cached"]["fp16"]))],
                    os.path.join(out, WEIGHTS_FILE["fp16"]), onnx_meta)
    save_shared([(full, os.path.join(out, "model.onnx")), (cached, os.path.join(out, "model.kv.onnx"))],
                os.path.join(out, WEIGHTS_FILE["fp32"]), onnx_meta)
    with open(os.path.join(out, "dllm.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", default="tiny-llada")
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--block-length", type=int, default=DEFAULT_GENERATION["block_length"],
                        help="generation_defaults.block_length")
    parser.add_argument("--remasking", default=DEFAULT_GENERATION["remasking"], help="generation_defaults.remasking")
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    defaults = {"block_length": args.block_length, "remasking": args.remasking}
    meta = write_model_folder(model, args.out, args.tokenizer, args.topk, args.name, args.fp16,
                              generation_defaults=defaults)
    print(f"wrote {args.out}: {meta['format']}, vocab {meta['vocab_size']}, K {meta['topk']}")


if __name__ == "__main__":
    main()
