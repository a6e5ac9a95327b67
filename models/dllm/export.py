"""ONNX export of a LLaDA model with the sampling head (design.md §3).

Full logits [N, L, V] never leave the graph: the graph gathers the wanted positions, applies classifier-free
guidance over the whole vocabulary, and returns the top-K logits and ids, the softmax normaliser and the entropy.

    python3 -m dllm.export --checkpoint models/runs/tiny-llada/ckpt.pt --tokenizer models/tiny-llada/tokenizer.json \
        --out models/tiny-llada [--fp16]
"""

from __future__ import annotations

import argparse
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

FORMAT = "dllm-onnx/1"
OPSET = 17
TWO_GB = 2 * 1024**3
INPUT_NAMES = ["input_ids", "attention_mask", "positions", "cfg_scale", "uncond_row"]
OUTPUT_NAMES = ["topk_logits", "topk_ids", "logsumexp", "entropy"]

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


def example_inputs(vocab_size: int, n: int = 2, length: int = 12, p: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (n, length), generator=g)
    attention_mask = torch.ones(n, length, dtype=torch.int64)
    attention_mask[0, :3] = 0
    positions = torch.arange(length - p, length).repeat(n, 1)
    return input_ids, attention_mask, positions, torch.zeros(n), torch.arange(n)


def export_onnx(model: LLaDA, path: str, k: int, metadata: dict[str, str], external_above: int = TWO_GB) -> None:
    """Export opset 17 with dynamic N, L, P; weights beyond 2 GB go to `<path>.data` (external data)."""
    model.eval()
    graph = SamplingGraph(model, k)
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch 2.x: keep the TorchScript exporter, as on torch 1.13
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".export-tmp")
    os.makedirs(tmp, exist_ok=True)
    tmp_path = os.path.join(tmp, "model.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        # torch 1.13's exporter warns about prim::Constant shape inference on every export; the graph is checked
        # against PyTorch by models/tests instead.
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            graph, example_inputs(model.config.vocab_size), tmp_path, opset_version=OPSET,
            input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_axes={"input_ids": {0: "N", 1: "L"}, "attention_mask": {0: "N", 1: "L"},
                          "positions": {0: "N", 1: "P"}, "cfg_scale": {0: "N"}, "uncond_row": {0: "N"},
                          "topk_logits": {0: "N", 1: "P"}, "topk_ids": {0: "N", 1: "P"},
                          "logsumexp": {0: "N", 1: "P"}, "entropy": {0: "N", 1: "P"}},
            do_constant_folding=True, **kwargs)
    proto = onnx.load(tmp_path)  # also pulls in any external data torch wrote beside it
    save_with_metadata(proto, path, metadata, external_above)
    shutil.rmtree(tmp)


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
    """fp16 variant for GPUs: float weights and compute in fp16, graph inputs and outputs stay float32.

    Converted after an fp32 export (torch 1.13 cannot trace fp16 on CPU): every float initializer and
    constant becomes float16, casts to float become casts to float16, and casts are added at the float
    input (cfg_scale) and outputs so the I/O contract is unchanged.
    """
    proto = onnx.load(src)
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
    save_with_metadata(proto, dst, {p.key: p.value for p in proto.metadata_props})


def dllm_json(model: LLaDA, k: int, name: str, fp16: bool, chat_template: str | None = LLADA_CHAT_TEMPLATE,
              eos_token_ids: tuple[int, ...] = (EOS, EOT), pad_token_id: int = PAD, bos_token_id: int | None = BOS,
              mask_token_id: int = MASK) -> dict:
    """The model folder's dllm.json (design.md §2)."""
    return {
        "format": FORMAT,
        "architecture": "llada",
        "name": name,
        "vocab_size": model.config.vocab_size,
        "mask_token_id": mask_token_id,
        "eos_token_ids": list(eos_token_ids),
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "max_sequence_length": model.config.max_sequence_length,
        "topk": k,
        "chat_template": chat_template,
        "generation_defaults": {"max_tokens": 64, "steps": 64, "block_length": 8, "remasking": "low_confidence",
                                "threshold": None, "temperature": 0.0},
        "onnx": {"fp32": "model.onnx", "fp16": "model.fp16.onnx" if fp16 else None},
        "model_config": model.config.to_dict(),
    }


def write_model_folder(model: LLaDA, out: str, tokenizer_path: str, k: int, name: str, fp16: bool = False, **spec) -> dict:
    os.makedirs(out, exist_ok=True)
    meta = dllm_json(model, k, name, fp16, **spec)
    if os.path.abspath(tokenizer_path) != os.path.abspath(os.path.join(out, "tokenizer.json")):
        shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.json"))
    onnx_meta = {"dllm": json.dumps(meta)} | {k2: json.dumps(v) for k2, v in meta.items() if k2 != "model_config"}
    export_onnx(model, os.path.join(out, "model.onnx"), k, onnx_meta)
    if fp16:
        to_fp16(os.path.join(out, "model.onnx"), os.path.join(out, "model.fp16.onnx"))
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
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    meta = write_model_folder(model, args.out, args.tokenizer, args.topk, args.name, args.fp16)
    print(f"wrote {args.out}: {meta['format']}, vocab {meta['vocab_size']}, K {meta['topk']}")


if __name__ == "__main__":
    main()
