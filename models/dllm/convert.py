"""Hugging Face LLaDA or Dream checkpoint folder -> dllm-serve model folder (docs/design.md §2), streaming.

The family comes from config.json's model_type: "llada" (LLaDA), "Dream" (Dream 7B, DiffuCoder, Dream-Coder: the
Qwen2 layout with shifted logits, read by dream_checkpoint.py). Reads config.json (every flag mapped, or refused by
name: model.config_from_hf, dream_checkpoint.config_from_dream), the *.safetensors weights (one file or shards with
model.safetensors.index.json; headers first, tensors later, block by block through memory maps: safetensors.py),
the tokenizer files and the chat template. The graphs are traced from the config alone and the weights streamed
into the external data files (export.write_folder), so peak memory is set by one block of weights plus the
exporter, not by the model (docs/deploy.md has the measurements).

    python3 -m dllm.convert --checkpoint /data/LLaDA-8B-Instruct --out models/llada-8b-instruct --fp16
    python3 -m dllm.convert --checkpoint /data/Dream-v0-Instruct-7B --out models/dream-v0-instruct-7b --fp16
    python3 -m dllm.convert --from-folder models/tiny-llada     # a folder of an earlier exporter, rewritten in place
    python3 -m dllm.convert --from-folder models/tiny-llada --out /tmp/tiny-int8 --quantize int8   # a quantized copy
    python3 -m dllm.convert --checkpoint /data/LLaDA-8B-Instruct --out models/llada-8b-int4 --quantize int4 \
        [--block-size 32] [--accuracy-level 4]     # linear layers as MatMulNBits (quantize.py)

It prints a report: what it read (architecture, dimensions, dtype, shards, special ids, chat template source), what
it wrote (files, sizes, precision), peak memory and time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

from . import dream_checkpoint, quantize, safetensors
from .export import parameter_shapes, write_folder, write_model_folder
from .hf_checkpoint import CheckpointError, CheckpointFolder, chat_template, read_json, token_id
from .model import ModelConfig, config_from_hf, hf_state_dict_to_ours
from .reference.weights import model_from_onnx

__all__ = ["CheckpointError", "CheckpointWeights", "Progress", "chat_template", "convert", "read_json",
           "rewrite_folder", "token_id"]


def llada_to_ours(hf_name: str) -> str:
    """LLaDA's one name mapping (model.hf_state_dict_to_ours) for one tensor name."""
    return next(iter(hf_state_dict_to_ours({hf_name: None})))


class CheckpointWeights:
    """A checkpoint's tensors under our parameter names (`to_ours`: the family's name mapping, by default LLaDA's
    model.hf_state_dict_to_ours), checked against the shapes `config` implies; read block by block as float32 for
    export.write_weights. `label` names one of our parameters in messages; `family` is named for a stray tensor."""

    def __init__(self, folder: str, config: ModelConfig, to_ours=None, label=str, family: str = "LLaDA"):
        try:
            self.checkpoint = safetensors.Checkpoint(folder)
        except safetensors.SafetensorsError as e:
            raise CheckpointError(str(e)) from e
        to_ours = to_ours or llada_to_ours
        self.hf_name = {}
        for hf in self.checkpoint.tensors:
            ours = to_ours(hf)
            self.hf_name[ours if ours is not None else hf] = hf
        expected = parameter_shapes(config)
        missing = sorted(set(expected) - set(self.hf_name))
        if missing:
            raise CheckpointError(f"{folder}: tensor {label(missing[0])} missing from the checkpoint "
                                  f"({len(missing)} missing)")
        unexpected = sorted(set(self.hf_name) - set(expected), key=lambda n: self.hf_name[n])
        if unexpected:
            raise CheckpointError(f"{folder}: unexpected tensor {self.hf_name[unexpected[0]]} "
                                  f"(is this a {family} checkpoint?)")
        for name, shape in expected.items():
            info = self.checkpoint.tensors[self.hf_name[name]]
            if info.shape != shape:
                raise CheckpointError(f"{folder}: tensor {label(name)} has shape {list(info.shape)}, "
                                      f"config.json implies {list(shape)}")
            if info.dtype not in safetensors.FLOAT_DTYPES:
                raise CheckpointError(f"{info.file}: tensor {self.hf_name[name]} has dtype {info.dtype}, not a float")

    def shape(self, name: str) -> tuple[int, ...]:
        return self.checkpoint.tensors[self.hf_name[name]].shape

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        return self.checkpoint.rows(self.hf_name[name], start, stop)

    def columns(self, name: str, start: int, stop: int) -> np.ndarray:
        return self.checkpoint.columns(self.hf_name[name], start, stop)


def peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM, the high-water mark of its own address space
    (ru_maxrss would also count the parent it was forked from, which Linux carries across fork and exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: KiB there too on most systems


def map_config(folder: str, hf_config: dict, mapping) -> ModelConfig:
    """config.json -> ModelConfig through a family's mapping; its refusals become CheckpointErrors."""
    try:
        return mapping(hf_config)
    except KeyError as e:
        raise CheckpointError(f"{os.path.join(folder, 'config.json')}: missing field {e}") from e
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def read_checkpoint(folder: str) -> CheckpointFolder:
    """The checkpoint's family from config.json's model_type, and its reader."""
    hf_config = read_json(folder, "config.json")
    if dream_checkpoint.is_dream(hf_config):
        config = map_config(folder, hf_config, dream_checkpoint.config_from_dream)
        return dream_checkpoint.read(folder, hf_config, config)
    model_type, archs = hf_config.get("model_type"), list(hf_config.get("architectures") or [])
    if model_type != "llada" and "LLaDAModelLM" not in archs:
        raise CheckpointError(f"{os.path.join(folder, 'config.json')}: unknown architecture {model_type!r} {archs}; "
                              "expected model_type 'llada' (LLaDA) or 'Dream' (Dream, DiffuCoder, Dream-Coder)")
    return read_llada(folder, hf_config, map_config(folder, hf_config, config_from_hf))


def read_llada(folder: str, hf_config: dict, config: ModelConfig) -> CheckpointFolder:
    """A LLaDA folder: tokenizer.json as it is, special ids from config.json and the tokenizer files."""
    tokenizer = read_json(folder, "tokenizer.json")
    tok_config = read_json(folder, "tokenizer_config.json", required=False) or {}
    mask = hf_config.get("mask_token_id", token_id(tokenizer, "<|mdm_mask|>"))
    if mask is None:
        raise CheckpointError(f"{folder}/config.json: no mask_token_id and no <|mdm_mask|> token in tokenizer.json")
    eos = [hf_config.get("eos_token_id"), token_id(tokenizer, tok_config.get("eos_token")),
           token_id(tokenizer, "<|endoftext|>"), token_id(tokenizer, "<|eot_id|>")]
    eos_ids = tuple(sorted({i for i in eos if isinstance(i, int)}))
    if not eos_ids:
        raise CheckpointError(f"{folder}: no end-of-sequence token found in config.json or tokenizer files")
    pad = hf_config.get("pad_token_id", token_id(tokenizer, tok_config.get("pad_token")))
    bos = (token_id(tokenizer, tok_config.get("bos_token")) if "bos_token" in tok_config
           else hf_config.get("bos_token_id"))
    template, template_source = chat_template(folder, tok_config)
    c = config
    return CheckpointFolder(
        family="LLaDA", architecture="LLaDA (LLaDALlamaBlock)", config=config,
        to_ours=llada_to_ours, label=str,
        tokenizer=tokenizer, tokenizer_file=os.path.join(folder, "tokenizer.json"),
        mask_token_id=mask, eos_token_ids=eos_ids, pad_token_id=pad if pad is not None else eos_ids[0],
        bos_token_id=bos, chat_template=template, chat_template_source=template_source,
        vocabulary=f"{c.vocab_size} tokens"
        + (f"; embedding rows {c.embedding_size}: the {c.embedding_size - c.vocab_size} padding rows beyond the "
           f"vocabulary are left out of the logits and the softmax" if (c.embedding_size or 0) > c.vocab_size else ""))


class Progress:
    """Where the writing of the weights is (tensor i of n, bytes written, elapsed): on a terminal one line rewritten in
    place, in a log a line every few seconds and at the end of each weights file."""

    def __init__(self, stream=sys.stderr, every_s: float = 5.0):
        self.stream, self.every_s = stream, every_s
        self.started = self.printed = time.perf_counter()

    def __call__(self, precision: str, i: int, n: int, written: int) -> None:
        now = time.perf_counter()
        line = f"  writing {precision}: tensor {i} of {n}, {written / 2**30:.2f} GiB, {now - self.started:.0f} s"
        if self.stream.isatty():
            self.stream.write("\r" + line + ("\n" if i == n else ""))
        elif i == n or now - self.printed >= self.every_s:
            self.stream.write(line + "\n")
            self.printed = now
        self.stream.flush()


def convert(checkpoint: str, out: str, name: str, k: int = 64, fp16: bool = False, log=print, progress=None,
            quantization: quantize.Quantization | None = None) -> dict:
    started = time.perf_counter()
    source = read_checkpoint(checkpoint)
    c = config = source.config
    weights = CheckpointWeights(checkpoint, config, source.to_ours, source.label, source.family)
    params = sum(int(np.prod(s)) for s in parameter_shapes(c).values())
    files = weights.checkpoint.files
    log(f"read {checkpoint}")
    log(f"  architecture  {source.architecture}: {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads "
        f"({c.effective_n_kv_heads} kv heads{', grouped-query' if c.effective_n_kv_heads < c.n_heads else ''}), "
        f"head dim {c.head_dim}, MLP {c.mlp_hidden_size}, rope theta {c.rope_theta:g}, "
        f"{'tied' if c.weight_tying else 'untied'} embeddings"
        + "".join(f", {flag}" for flag in ("include_bias", "include_qkv_bias", "input_emb_norm", "scale_logits",
                                           "shift_logits") if getattr(c, flag)))
    log(f"  vocabulary    {source.vocabulary}")
    log(f"  weights       {params / 1e9:.3f} B parameters, {'/'.join(weights.checkpoint.dtypes())}, "
        f"{weights.checkpoint.nbytes() / 2**30:.2f} GiB in {len(files)} file{'s' * (len(files) > 1)}"
        + (" (sharded, model.safetensors.index.json)" if os.path.exists(os.path.join(checkpoint, safetensors.INDEX)) else ""))
    log(f"  special ids   mask {source.mask_token_id}, eos {list(source.eos_token_ids)}, pad {source.pad_token_id}, "
        f"bos {source.bos_token_id}")
    log(f"  chat template {source.chat_template_source}")
    for heading, text in source.report:
        log(f"  {heading:<13} {text}")
    os.makedirs(out, exist_ok=True)
    source.write_tokenizer(os.path.join(out, "tokenizer.json"))
    try:
        meta = write_folder(config, weights, out, os.path.join(out, "tokenizer.json"), k, name, fp16,
                            progress=progress or Progress(), quantization=quantization,
                            chat_template=source.chat_template,
                            eos_token_ids=source.eos_token_ids, pad_token_id=source.pad_token_id,
                            bos_token_id=source.bos_token_id, mask_token_id=source.mask_token_id,
                            **({"generation_defaults": source.generation_defaults}
                               if source.generation_defaults is not None else {}))
    except ValueError as e:  # e.g. a weight beyond float16's range
        raise CheckpointError(str(e)) from e
    finally:
        weights.checkpoint.close()
    log(f"wrote {out}")
    for precision in ("fp32", "fp16"):
        if meta["onnx"][precision]:
            names = [meta[key][precision] for key in ("onnx", "cached", "device", "weights")]
            sizes = ", ".join(f"{n} {os.path.getsize(os.path.join(out, n)) / 2**20:,.1f} MiB" for n in names)
            what = "float32" if precision == "fp32" else \
                "float16 products and weights, float32 RoPE, norm statistics, softmax and head"
            if quantization is not None:
                what += (f"; linear layers int{quantization.bits} MatMulNBits, block {quantization.block_size}, "
                         f"accuracy level {quantization.accuracy_level}, {'float32' if precision == 'fp32' else 'float16'}"
                         " scales; embeddings and head float")
            log(f"  {precision:<13} {sizes} ({what})")
    log(f"  dllm.json     format {meta['format']}, architecture {meta['architecture']}, top-K {k}")
    log(f"peak memory {peak_rss() / 2**30:.2f} GiB (peak RSS), {time.perf_counter() - started:.1f} s")
    return meta


def rewrite_folder(folder: str) -> dict:
    """A folder written by an earlier exporter, written again by this one from its own weights (recovered exactly
    from model.onnx) and dllm.json: same weights, same generation settings, the current set of graphs."""
    with open(os.path.join(folder, "dllm.json")) as f:
        spec = json.load(f)
    if spec.get("quantization") is not None:
        raise CheckpointError(f"{folder}: a quantized folder (dllm.json quantization) keeps no float weights to "
                              "rewrite; convert it again from its checkpoint")
    model = model_from_onnx(folder, spec)
    fields = ("chat_template", "eos_token_ids", "pad_token_id", "bos_token_id", "mask_token_id", "generation_defaults")
    return write_model_folder(model, folder, os.path.join(folder, "tokenizer.json"), spec["topk"], spec["name"],
                              spec["onnx"]["fp16"] is not None, **{key: spec[key] for key in fields})


def quantize_folder(folder: str, out: str, quantization: quantize.Quantization, progress=None) -> dict:
    """A float model folder (format 2) written again into `out` with its linear layers quantized: the same graphs,
    weights read from its weights.data block by block, its dllm.json fields kept (fp16 graphs too if it has them)."""
    if os.path.abspath(folder) == os.path.abspath(out):
        raise CheckpointError(f"{out}: write the quantized folder beside {folder}, not over it")
    with open(os.path.join(folder, "dllm.json")) as f:
        spec = json.load(f)
    if spec.get("quantization") is not None:
        raise CheckpointError(f"{folder}: already quantized (dllm.json quantization)")
    if spec.get("format") != "dllm-onnx/2":
        raise CheckpointError(f"{folder}: format {spec.get('format')}; rewrite it first (dllm.convert --from-folder)")
    fields = ("chat_template", "eos_token_ids", "pad_token_id", "bos_token_id", "mask_token_id", "generation_defaults")
    return write_folder(ModelConfig.from_dict(spec["model_config"]), quantize.FolderWeights(folder, spec["onnx"]["fp32"]), out,
                        os.path.join(folder, "tokenizer.json"), spec["topk"], spec["name"],
                        spec["onnx"].get("fp16") is not None, progress=progress, quantization=quantization,
                        **{key: spec[key] for key in fields})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="Hugging Face LLaDA or Dream folder (config.json, *.safetensors, the "
                        "tokenizer files)")
    source.add_argument("--from-folder", help="rewrite this model folder in place with the current exporter (its "
                        "weights recovered from model.onnx, its dllm.json fields kept): adds graphs newer than it; "
                        "with --quantize and --out, write a quantized copy of it there instead")
    parser.add_argument("--out")
    parser.add_argument("--name", default=None)
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--fp16", action="store_true")
    quantize.add_arguments(parser)
    args = parser.parse_args()
    try:
        quantization = quantize.from_args(args)
    except quantize.QuantizationError as e:
        parser.error(str(e))
    if args.from_folder and quantization is not None:
        if args.out is None:
            parser.error("--from-folder with --quantize writes a new folder: give it --out")
        try:
            meta = quantize_folder(args.from_folder, args.out, quantization)
        except (CheckpointError, quantize.QuantizationError) as e:
            raise SystemExit(f"cannot quantize: {e}") from None
        size = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
        print(f"wrote {args.out}: int{quantization.bits} linear layers, block {quantization.block_size}, accuracy "
              f"level {quantization.accuracy_level}, {size / 2**20:,.1f} MiB ({meta['name']})")
        return
    if args.from_folder:
        try:
            meta = rewrite_folder(args.from_folder)
        except CheckpointError as e:
            raise SystemExit(f"cannot rewrite: {e}") from None
        print(f"rewrote {args.from_folder}: graphs {', '.join(meta[k]['fp32'] for k in ('onnx', 'cached', 'device'))}")
        return
    if args.out is None:
        parser.error("--checkpoint needs --out")
    try:
        convert(args.checkpoint, args.out, args.name or os.path.basename(os.path.normpath(args.checkpoint)),
                args.topk, args.fp16, quantization=quantization)
    except CheckpointError as e:
        raise SystemExit(f"cannot convert: {e}") from None


if __name__ == "__main__":
    main()
