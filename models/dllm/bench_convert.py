"""Peak memory of converting a checkpoint: synthetic LLaDA checkpoints of two sizes, bf16, sharded, in the real
layout (names, config keys, index), each converted with `--fp16` by `python3 -m dllm.convert`, whose peak resident
set size (ru_maxrss) is the figure. Writes bench/convert.md.

    cd models && python3 -m dllm.bench_convert --work /tmp/bench-convert    # needs ~6 GB free there; cleans up

The checkpoints are written tensor by tensor (random normal weights, std 0.02, rounded to bf16), so building them
holds one tensor, not a model. Run it on a quiet machine: peak RSS does not depend on load, the times do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

from . import safetensors
from .export import parameter_shapes
from .model import config_from_hf

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(MODELS)

# LLaDA-8B-Instruct's config.json keys, at small sizes (vocabulary 32,000, untied embeddings, no biases).
BASE = {
    "architectures": ["LLaDAModelLM"], "model_type": "llada", "activation_type": "silu", "block_type": "llama",
    "layer_norm_type": "rms", "rope": True, "alibi": False, "alibi_bias_max": 8.0, "attention_dropout": 0.0,
    "attention_layer_norm": False, "attention_layer_norm_with_affine": True, "bias_for_layer_norm": False,
    "block_group_size": 1, "embedding_dropout": 0.0, "flash_attention": False, "include_bias": False,
    "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta", "init_fn": "mitchell",
    "init_std": 0.02, "input_emb_norm": False, "layer_norm_with_affine": True, "mlp_ratio": 4,
    "multi_query_attention": None, "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-5,
    "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False, "use_cache": False,
    "weight_tying": False, "vocab_size": 32000, "embedding_size": 32000, "max_sequence_length": 4096,
    "mask_token_id": 2, "eos_token_id": 1, "pad_token_id": 1,
}
SIZES = {  # name: (dims, shards)
    "small": ({"d_model": 768, "n_heads": 12, "n_kv_heads": 12, "n_layers": 10, "mlp_hidden_size": 1792}, 2),
    "large": ({"d_model": 1536, "n_heads": 12, "n_kv_heads": 12, "n_layers": 19, "mlp_hidden_size": 4096}, 4),
}


def write_checkpoint(folder: str, hf_config: dict, shards: int, seed: int = 0) -> int:
    """A LLaDA checkpoint folder (config, tokenizer files, bf16 shards + index); returns its parameter count."""
    os.makedirs(folder, exist_ok=True)
    shapes = {"model." + k: v for k, v in parameter_shapes(config_from_hf(hf_config)).items()}
    names = list(shapes)
    rng = np.random.default_rng(seed)
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        safetensors.write(os.path.join(folder, fname), [(n, shapes[n]) for n in part],
                          lambda n: (rng.standard_normal(shapes[n], dtype=np.float32) * 0.02
                                     if len(shapes[n]) > 1 else np.ones(shapes[n], np.float32)), "BF16")
        weight_map.update({n: fname for n in part})
    with open(os.path.join(folder, safetensors.INDEX), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config, f)
    shutil.copyfile(os.path.join(MODELS, "tiny-llada", "tokenizer.json"), os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|eot_id|>"}, f)
    return sum(int(np.prod(s)) for s in shapes.values())


# Linux carries a process's RSS high-water mark across fork and exec (the child's mm starts as a copy of the
# parent's, hiwater included, and exec folds the old mm's into ru_maxrss), so a converter started straight from
# this process, which has held whole tensors while writing the checkpoint, would report at least this process's
# peak. A small trampoline in between forks the converter from a fresh address space and reports its ru_maxrss,
# as /usr/bin/time does.
TRAMPOLINE = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable] + sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stdout.write(f"\\nru_maxrss {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(checkpoint: str, out: str) -> tuple[int, float, str]:
    """Converts in a grandchild process: (its peak RSS in bytes, wall seconds, its report)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", TRAMPOLINE, "-m", "dllm.convert", "--checkpoint", checkpoint,
                           "--out", out, "--fp16"], cwd=MODELS, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"conversion failed:\n{proc.stdout}{proc.stderr}")
    report, _, maxrss = proc.stdout.rpartition("\nru_maxrss ")
    return int(maxrss) * 1024, wall, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/bench-convert")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "convert.md"))
    args = parser.parse_args()
    rows, reports = [], []
    for name, (dims, shards) in SIZES.items():
        checkpoint, out = os.path.join(args.work, name, "hf"), os.path.join(args.work, name, "out")
        try:
            params = write_checkpoint(checkpoint, BASE | dims, shards)
            size = sum(os.path.getsize(os.path.join(checkpoint, f)) for f in os.listdir(checkpoint))
            rss, wall, report = measure(checkpoint, out)
            written = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        finally:
            shutil.rmtree(os.path.join(args.work, name), ignore_errors=True)
        rows.append((name, params, dims, shards, size, rss, wall, written))
        reports.append(report)
        print(f"{name}: {params / 1e6:.0f} M parameters, peak RSS {rss / 2**30:.2f} GiB, {wall:.0f} s", flush=True)
    small, large = rows[0][5], rows[-1][5]
    lines = [
        "# Converting a checkpoint: peak memory",
        "",
        "`cd models && python3 -m dllm.bench_convert` (models/dllm/bench_convert.py): synthetic LLaDA checkpoints in the",
        "real layout (LLaDA-8B-Instruct's config keys, `model.transformer.*` names, bf16 shards with",
        "`model.safetensors.index.json`), each converted with `python3 -m dllm.convert --fp16` (fp32 and fp16 graphs) in",
        "a grandchild process; peak RSS is that process's `ru_maxrss`, from `wait4` in a trampoline that forked it",
        "(Linux carries RSS high-water marks across fork and exec, so the benchmark's own memory must not be its parent).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| checkpoint | parameters | dims (d_model, layers, heads, MLP, vocab) | bf16 files | written (fp32 + fp16) | peak RSS | time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, params, dims, shards, size, rss, wall, written in rows:
        lines.append(f"| {name} | {params / 1e6:.0f} M | {dims['d_model']}, {dims['n_layers']}, {dims['n_heads']}, "
                     f"{dims['mlp_hidden_size']}, {BASE['vocab_size']} | {size / 2**30:.2f} GiB in {shards} shards | "
                     f"{written / 2**30:.2f} GiB | **{rss / 2**30:.2f} GiB** | {wall:.0f} s |")
    lines += ["", f"Peak RSS, large / small: **{large / small:.2f}x** for {rows[-1][1] / rows[0][1]:.1f}x the parameters.",
              "", "The converter's own report for the large checkpoint:", "", "```", reports[-1].rstrip(), "```", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
