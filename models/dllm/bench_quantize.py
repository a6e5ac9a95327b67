"""Quantized model folders (quantize.py): quality on the default model, size, memory and speed on synthetic LLaDA
checkpoints. Writes bench/quantize.md and bench/quantize.json.

    cd models && python3 -m dllm.bench_quantize --quality --sizes 0.6b,1.5b    # the full run (hours on 2 cores)
    cd models && python3 -m dllm.bench_quantize --sizes tiny --out /tmp/q      # a quick check that it all runs
    cd models && python3 -m dllm.bench_quantize --logits small --out ../bench/quantize-logits   # logits error

**Quality** (--quality, on models/tiny-llada's trained weights): the validation masked-token loss of quality.py (its
windows, t grid and seed) for fp32, int8 and int4 (block 32), through the PyTorch module holding each folder's weights
dequantized exactly as MatMulNBits computes them (quantize.dequantized_model): what accuracy levels 0 and 1 (float32
compute) run. Accuracy level 4 also rounds each linear layer's input to int8 per block of 32 (MLAS's CompInt8 path,
`QuantizeARow_CompInt8`: scale max|a| / 127, round to nearest even); the "emulated level 4" rows apply that rounding
in PyTorch. Then greedy agreement with fp32 on quality.PROMPTS at the folder's defaults: through the reference sampler
(exact dequantized weights) and through the engine in onnxruntime-node (the real kernels, accuracy levels 1 and 4).

**Size, memory, speed** (--sizes): random-weight checkpoints in LLaDA's layout (bench_convert.write_checkpoint:
LLaDA-8B's config keys, bf16 shards, vocabulary 32,000, untied head; nothing downloaded) converted by
`python3 -m dllm.convert` as fp32 and with `--quantize int8|int4 --accuracy-level 1|4` (each conversion's peak RSS from
a trampoline, as bench_convert measures it); each folder's size; then bench/quantize.ts in a fresh process per folder
and cache mode: prompt 256 + 128 generated tokens, blocks of 32, greedy, every position decoded: tokens/s and the
serving process's peak RSS (VmHWM). Before the sizes, a probe tells which MatMulNBits kernels this CPU runs: a layer
at accuracy level 4 whose output differs from level 1's ran MLAS's int8 path (A quantized); identical, it fell back to
float32. Speed figures are only meaningful on a quiet machine: each row records the load average around it.

**Logits error** (--logits SIZE): a random-weight checkpoint of SIZE in LLaDA's layout (as above) converted by
dllm.convert (the function `python3 -m dllm.convert` runs) as fp32, int8 and int4 at accuracy levels 1 and 4; each
folder's model.onnx run in onnxruntime-node (models/tests/ort_run.mjs: the real kernels) on the same canvases
(LOGITS_ROWS rows of LOGITS_LENGTH tokens of quality.PROMPTS' text, LOGITS_MASKED of the second half's positions
masked; that half wanted) and compared with the fp32 folder's outputs (compare_logits), at the masked positions and
at the text ones apart: the top-K logits of the token ids both top-K lists hold (an id in one list only is left out;
the share in common is reported), their error also relative to the standard deviation σ of fp32's full-vocabulary
logits at the position (from the PyTorch module on the fp32 folder's weights); logsumexp and entropy; top-1
agreement; KL(fp32 || quantized) of the coarse-grained distributions (each shared token, the rest of the vocabulary
as one outcome: a lower bound on the full-vocabulary KL) and of the shared tokens renormalised. Then the whole
vocabulary through the PyTorch module with each folder's dequantized weights (compare_full: exact KL). Random weights
give far flatter logits than a trained model's, which the report says.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import quality
from .bench_convert import BASE, SIZES as CONVERT_SIZES, TRAMPOLINE, write_checkpoint
from .convert import convert as convert_checkpoint, quantize_folder
from .graph import guided_head
from .quantize import LINEAR_LAYERS, Quantization, dequantized_model, pack, quantize_rows
from .report import write_report

MODELS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(MODELS)
TINY = os.path.join(MODELS, "tiny-llada")

# LLaDA's layout at benchmark sizes (BASE: vocabulary 32,000, untied embeddings, no biases).
SIZES = {
    "tiny": {"d_model": 128, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 256},
    "small": CONVERT_SIZES["small"][0],  # 114 M
    "0.6b": CONVERT_SIZES["large"][0],  # 636 M: bench/convert.md's large checkpoint
    "1.5b": {"d_model": 2048, "n_heads": 16, "n_kv_heads": 16, "n_layers": 26, "mlp_hidden_size": 5632},  # 1.47 B
}
VARIANTS = {"fp32": None, "int8-a1": Quantization(8, 32, 1), "int8-a4": Quantization(8, 32, 4),
            "int4-a1": Quantization(4, 32, 1), "int4-a4": Quantization(4, 32, 4)}


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "unknown"
    flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown CPU")
    family = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("cpu family")), "?")
    number = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model\t")), "?")
    wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16"]
    missing = [f for f in wanted if f not in flags]
    return (f"{model} (family {family}, model {number}), {os.cpu_count()} cores; "
            f"{', '.join(f for f in wanted if f in flags)}" + (f"; without {', '.join(missing)}" if missing else ""))


# --- quality on the default model ---------------------------------------------------------------------------------


class Int8Activations(nn.Module):
    """A linear layer whose input is rounded as MatMulNBits' int8 compute (accuracy level 4) rounds it on the CPU:
    per block of `block_size` along K, scale max|a| / 127, round to nearest (even) (MLAS QuantizeARow_CompInt8)."""

    def __init__(self, linear: nn.Linear, block_size: int):
        super().__init__()
        self.linear, self.block_size = linear, block_size

    def forward(self, x):
        k = x.shape[-1]
        blocks = -(-k // self.block_size)
        padded = F.pad(x, (0, blocks * self.block_size - k)).reshape(*x.shape[:-1], blocks, self.block_size)
        amax = padded.abs().amax(-1, keepdim=True)
        scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        q = torch.round(padded / scale).clamp(-127, 127) * scale
        return self.linear(q.reshape(*x.shape[:-1], -1)[..., :k])


def with_int8_activations(model, block_size: int = 32):
    for block in model.transformer["blocks"]:
        for name in LINEAR_LAYERS:
            setattr(block, name, Int8Activations(getattr(block, name), block_size))
    return model


def engine_agreement(model_dir: str, reference: str, prompts: list[str], params: dict, cache: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(prompts, f)
    try:
        proc = subprocess.run(["node", "--import", "tsx", "bench/quantize.ts", "--model", model_dir, "--reference",
                               reference, "--prompts", f.name, "--cache", cache, "--max-tokens",
                               str(params["max_tokens"]), "--block-length", str(params["block_length"])],
                              cwd=REPO, capture_output=True, text=True, check=True)
    finally:
        os.remove(f.name)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quality_rows(work: str, corpus: str, log=print) -> dict:
    from .reference import Params, ReferenceSampler
    from .tokenizer import Tokenizer

    with open(os.path.join(TINY, "dllm.json")) as f:
        spec = json.load(f)
    tokenizer = Tokenizer.load(os.path.join(TINY, "tokenizer.json"))
    g = spec["generation_defaults"]
    params = Params(max_tokens=g["max_tokens"], steps=g["steps"], block_length=g["block_length"],
                    remasking=g["remasking"], temperature=0.0)
    folders = {"fp32": TINY}
    for bits in (8, 4):
        for level in (1, 4):
            folders[f"int{bits}-a{level}"] = os.path.join(work, f"tiny-int{bits}-a{level}")
            if not os.path.exists(os.path.join(folders[f"int{bits}-a{level}"], "dllm.json")):
                quantize_folder(TINY, folders[f"int{bits}-a{level}"], Quantization(bits, 32, level))
    sizes = {k: sum(os.path.getsize(os.path.join(d, n)) for n in ("weights.data",)) for k, d in folders.items()}
    rows, answers = [], {}
    for label, folder, emulate in (("fp32", "fp32", False), ("int8", "int8-a1", False), ("int8, emulated level 4", "int8-a1", True),
                                   ("int4", "int4-a1", False), ("int4, emulated level 4", "int4-a1", True),
                                   ("fp32, emulated level 4", "fp32", True)):
        t0 = time.time()
        model = dequantized_model(folders[folder])
        if emulate:
            with_int8_activations(model)
        loss, _ = quality.validation(model, TINY, corpus, quality.VALID_WINDOWS, quality.VALID_SEQ_LEN,
                                     quality.VALID_SEED, spec["max_sequence_length"])
        row = {"model": label, "loss": loss}
        out = quality.generate(ReferenceSampler(model, spec), tokenizer, quality.PROMPTS, params)
        answers[label] = [a["token_ids"] for a in out]
        row["distinct_bigrams"] = quality.distinct_bigrams([quality.plain(a["text"]) for a in out])["ratio"]
        rows.append(row)
        log(f"quality {label}: loss {loss['mean']:.4f} ({time.time() - t0:.0f} s)")
    ref = answers["fp32"]
    for row in rows:
        got = answers.get(row["model"])
        if got is None:
            continue
        row["reference_same"] = sum(a == b for a, b in zip(got, ref))
        row["reference_tokens"] = sum(x == y for a, b in zip(got, ref) for x, y in zip(a, b))
        row["reference_of"] = sum(len(b) for b in ref)
    engine = {}
    for name in ("int8-a1", "int8-a4", "int4-a1", "int4-a4"):
        for cache in ("none", "dual"):
            engine[f"{name} {cache}"] = engine_agreement(folders[name], TINY, quality.PROMPTS,
                                                         {"max_tokens": g["max_tokens"], "block_length": g["block_length"]},
                                                         cache)
            log(f"engine agreement {name} {cache}: {engine[f'{name} {cache}']}")
    return {"params": {"max_tokens": g["max_tokens"], "steps": g["steps"], "block_length": g["block_length"]},
            "windows": quality.VALID_WINDOWS, "length": quality.VALID_SEQ_LEN, "seed": quality.VALID_SEED,
            "rows": rows, "engine": engine, "weights_bytes": sizes}


# --- kernels, size, memory, speed ---------------------------------------------------------------------------------


def probe_kernels(work: str) -> dict:
    """For 4 and 8 bits: does accuracy level 4 run int8 compute here (its output differs from level 1's)?"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    k, n, m = 1024, 256, 8
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    a = rng.standard_normal((m, k)).astype(np.float32)
    out = {}
    for bits in (4, 8):
        codes, scales = quantize_rows(w, bits, 32)
        results = {}
        for level in (1, 4):
            node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=k, N=n, bits=bits,
                                    block_size=32, accuracy_level=level)
            graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                                      [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
                                      [numpy_helper.from_array(pack(codes, bits), "B"), numpy_helper.from_array(scales, "S")])
            path = os.path.join(work, f"probe-{bits}-{level}.onnx")
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                              helper.make_opsetid("com.microsoft", 1)]), path)
            request = {"model": path, "inputs": {"A": {"type": "float32", "dims": [m, k], "data": a.ravel().tolist()}}}
            proc = subprocess.run(["node", os.path.join(MODELS, "tests", "ort_run.mjs")], cwd=REPO, check=True,
                                  input=json.dumps(request), capture_output=True, text=True)
            results[level] = np.asarray(json.loads(proc.stdout)["Y"]["data"], dtype=np.float32)
        diff = float(np.abs(results[4] - results[1]).max() / np.abs(results[1]).max())
        out[f"int{bits}"] = {"level4_vs_level1": diff, "int8_compute": diff > 0}
    return out


def convert(checkpoint: str, out: str, q: Quantization | None, name: str) -> dict:
    """dllm.convert in a grandchild process: its peak RSS (bench_convert's trampoline), wall time, report."""
    args = [sys.executable, "-c", TRAMPOLINE, "-m", "dllm.convert", "--checkpoint", checkpoint, "--out", out,
            "--name", name]
    if q is not None:
        args += ["--quantize", f"int{q.bits}", "--block-size", str(q.block_size), "--accuracy-level", str(q.accuracy_level)]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=MODELS, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"conversion failed:\n{proc.stdout}{proc.stderr}")
    report, _, maxrss = proc.stdout.rpartition("\nru_maxrss ")
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    return {"peak_rss": int(maxrss) * 1024, "seconds": time.perf_counter() - t0, "folder_bytes": size,
            "weights_bytes": os.path.getsize(os.path.join(out, "weights.data")), "report": report.strip()}


def serve(folder: str, cache: str, prompt_tokens: int, max_tokens: int, block_length: int, threads: int) -> dict:
    before = load_average()
    proc = subprocess.run(["node", "--import", "tsx", "bench/quantize.ts", "--model", folder, "--cache", cache,
                           "--prompt-tokens", str(prompt_tokens), "--max-tokens", str(max_tokens), "--block-length",
                           str(block_length), "--threads", str(threads)], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench/quantize.ts failed:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"load_before": before, "load_after": load_average()}


def size_rows(name: str, work: str, args, log=print) -> dict:
    dims = SIZES[name]
    base = os.path.join(work, name)
    checkpoint = os.path.join(base, "hf")
    if not os.path.exists(os.path.join(checkpoint, "config.json")):
        params = write_checkpoint(checkpoint, BASE | dims, 2 if name in ("tiny", "small") else 4)
    else:
        from .export import parameter_shapes
        from .model import config_from_hf

        params = sum(int(np.prod(s)) for s in parameter_shapes(config_from_hf(BASE | dims)).values())
    log(f"{name}: {params / 1e6:.0f} M parameters")
    variants = {}
    for variant in args.variants.split(","):
        out = os.path.join(base, variant)
        shutil.rmtree(out, ignore_errors=True)
        conv = convert(checkpoint, out, VARIANTS[variant], f"synthetic-{name}-{variant}")
        log(f"  {variant}: converted, {conv['folder_bytes'] / 2**30:.3f} GiB, converter peak RSS "
            f"{conv['peak_rss'] / 2**30:.2f} GiB, {conv['seconds']:.0f} s")
        runs = {}
        for cache in args.caches.split(","):
            runs[cache] = serve(out, cache, args.prompt_tokens, args.max_tokens, args.block_length, args.threads)
            r = runs[cache]
            log(f"  {variant} {cache}: {r['tokensPerSecond']:.2f} tokens/s, peak RSS {r['peakRssBytes'] / 2**30:.2f} GiB "
                f"(load {r['load_before']} -> {r['load_after']})")
        variants[variant] = {"convert": conv, "serve": runs}
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return {"dims": dims, "parameters": params, "variants": variants}


# --- logits error on a converted real-layout checkpoint -----------------------------------------------------------

LOGITS_ROWS, LOGITS_LENGTH, LOGITS_MASKED, LOGITS_SEED = 4, 128, 32, 0


def ort_run(model_path: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One run of an ONNX graph in onnxruntime-node (models/tests/ort_run.mjs), numpy in and out."""
    types = {np.dtype(np.float32): "float32", np.dtype(np.int32): "int32", np.dtype(np.int64): "int64"}
    inputs = {name: {"type": types[a.dtype], "dims": list(a.shape), "data": a.ravel().tolist()}
              for name, a in feeds.items()}
    proc = subprocess.run(["node", os.path.join(MODELS, "tests", "ort_run.mjs")], cwd=REPO, check=True,
                          input=json.dumps({"model": model_path, "inputs": inputs}), capture_output=True, text=True)
    raw = json.loads(proc.stdout)
    return {name: np.asarray(v["data"]).reshape(v["dims"]) for name, v in raw.items() if name != "__metadata"}


def canvases(folder: str, rows: int = LOGITS_ROWS, length: int = LOGITS_LENGTH, masked: int = LOGITS_MASKED,
             seed: int = LOGITS_SEED) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """model.onnx's inputs for `rows` canvases mid-generation: bos, then quality.PROMPTS' text (each row from a
    different place in it), with `masked` mask tokens at random places in the second half; the wanted positions are
    that whole half, and the second value [N, P] tells which of them are masked (the positions the engine asks for;
    the others, text, show other distributions: under random weights every masked position predicts nearly alike).
    No padding, no guidance."""
    from .tokenizer import Tokenizer

    with open(os.path.join(folder, "dllm.json")) as f:
        spec = json.load(f)
    text = Tokenizer.load(os.path.join(folder, "tokenizer.json")).encode(" ".join(quality.PROMPTS))
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, length), np.int64)
    positions = np.tile(np.arange(length // 2, length, dtype=np.int64), (rows, 1))
    is_masked = np.zeros(positions.shape, bool)
    for r in range(rows):
        start = r * len(text) // rows
        ids[r] = [spec["bos_token_id"]] + [text[(start + i) % len(text)] for i in range(length - 1)]
        is_masked[r, rng.choice(positions.shape[1], masked, replace=False)] = True
        ids[r, positions[r][is_masked[r]]] = spec["mask_token_id"]
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "positions": positions,
             "cfg_scale": np.zeros(rows, np.float32), "uncond_row": np.arange(rows, dtype=np.int64)}
    return feeds, is_masked


def pytorch_logits(folder: str, feeds: dict[str, np.ndarray], emulate_level4: bool = False) -> torch.Tensor:
    """The full-vocabulary logits [N, P, V] (float32) at the wanted positions, from the PyTorch module holding the
    folder's weights as the graph computes with them (dequantized_model); emulate_level4 also rounds each linear
    layer's input to int8 per block of 32 as MatMulNBits' accuracy level 4 does on the CPU (with_int8_activations)."""
    model = dequantized_model(folder)
    if emulate_level4:
        with_int8_activations(model)
    t = {n: torch.from_numpy(a) for n, a in feeds.items()}
    with torch.no_grad():
        h = model.hidden_states(t["input_ids"], t["attention_mask"])
        h = h.gather(1, t["positions"].unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return model.project(h).float()


def head_outputs(logits: torch.Tensor, feeds: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """model.onnx's outputs (graph.guided_head) for full-vocabulary logits."""
    out = guided_head(logits, torch.from_numpy(feeds["cfg_scale"]), torch.from_numpy(feeds["uncond_row"]), k)
    return {n: o.numpy() for n, o in zip(("topk_logits", "topk_ids", "logsumexp", "entropy"), out)}


def compare_full(ref: torch.Tensor, got: torch.Tensor) -> dict[str, np.ndarray]:
    """Full-vocabulary logits [N, P, V] against ref's, per position [N, P]: the largest and the mean abs error (also
    relative to the standard deviation of ref's logits there), whether the top-1 tokens agree, the exact KL(ref || got).
    summarize_full() turns them into a row."""
    ref, got = ref.double(), got.double()
    err = (got - ref).abs()
    sigma = ref.std(-1, unbiased=False)
    lp, lq = ref.log_softmax(-1), got.log_softmax(-1)
    return {"err_max": err.amax(-1).numpy(), "err_mean": err.mean(-1).numpy(), "sigma": sigma.numpy(),
            "top1": (ref.argmax(-1) == got.argmax(-1)).numpy(),
            "kl": (lp.exp() * (lp - lq)).sum(-1).clamp(min=0).numpy()}


def summarize_full(stats: dict[str, np.ndarray], where: np.ndarray) -> dict:
    """compare_full's per-position values at `where` [N, P] (bool) as one row."""
    s = {n: v[where] for n, v in stats.items()}
    return {"positions": int(where.sum()), "top1": float(s["top1"].mean()), "logit_max_abs": float(s["err_max"].max()),
            "logit_mean_abs": float(s["err_mean"].mean()), "logit_max_rel": float((s["err_max"] / s["sigma"]).max()),
            "logit_mean_rel": float((s["err_mean"] / s["sigma"]).mean()), "kl_mean": float(s["kl"].mean()),
            "kl_max": float(s["kl"].max())}


def compare_logits(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], sigma: np.ndarray) -> dict:
    """`got`'s graph outputs against `ref`'s (model.onnx's topk_logits, topk_ids, logsumexp, entropy at the same
    wanted positions), sigma [N, P] the standard deviation of ref's full-vocabulary logits.

    Logits are compared for the token ids both top-K lists hold; an id in one list only (near the K-th logit, where
    the two lists' tails disagree) is left out, and `overlap` is the mean share of ref's top-K ids that got's list
    also holds. KL: with p, q the full-vocabulary probabilities (logit - logsumexp) of the shared ids S, the KL
    divergence KL(ref || got) of the distributions on S + {every other token}, a lower bound on the full-vocabulary
    KL (merging outcomes never increases it), the closer the more of the mass S holds (`topk_mass`: ref's mass on its
    own top-K); `kl_topk`: KL of the two distributions restricted to S and renormalised (the shape of the top-K, which
    the bound barely sees when the top-K holds little mass)."""
    a, ai = np.asarray(ref["topk_logits"], np.float64), np.asarray(ref["topk_ids"])
    b, bi = np.asarray(got["topk_logits"], np.float64), np.asarray(got["topk_ids"])
    lse_a, lse_b = np.asarray(ref["logsumexp"], np.float64), np.asarray(got["logsumexp"], np.float64)
    k = a.shape[-1]
    a, ai, b, bi = (x.reshape(-1, k) for x in (a, ai, b, bi))
    lse_a, lse_b, sig = lse_a.ravel(), lse_b.ravel(), np.asarray(sigma, np.float64).ravel()
    abs_err, rel_err, overlap, kl, kl_topk, mass = [], [], [], [], [], []
    for p in range(a.shape[0]):
        _, ia, ib = np.intersect1d(ai[p], bi[p], assume_unique=True, return_indices=True)
        d = np.abs(a[p, ia] - b[p, ib])
        abs_err.append(d)
        rel_err.append(d / sig[p])
        overlap.append(len(ia) / k)
        lp, lq = a[p, ia] - lse_a[p], b[p, ib] - lse_b[p]
        log_sp, log_sq = (np.logaddexp.reduce(x) if len(x) else -np.inf for x in (lp, lq))  # log of S's mass
        rest_p, rest_q = max(-np.expm1(log_sp), 0.0), max(-np.expm1(log_sq), 0.0)
        value = float((np.exp(lp) * (lp - lq)).sum())
        if rest_p > 0:
            value += rest_p * (np.log(rest_p) - np.log(rest_q)) if rest_q > 0 else np.inf
        kl.append(max(value, 0.0) if np.isfinite(value) else value)
        cp, cq = lp - log_sp, lq - log_sq
        kl_topk.append(max(float((np.exp(cp) * (cp - cq)).sum()), 0.0))
        mass.append(float(np.exp(a[p] - lse_a[p]).sum()))
    abs_err, rel_err = np.concatenate(abs_err), np.concatenate(rel_err)
    if not len(abs_err):  # no id in common anywhere: no logit to compare
        abs_err = rel_err = np.array([np.nan])
    ent = np.abs(np.asarray(ref["entropy"], np.float64) - np.asarray(got["entropy"], np.float64))
    lse = np.abs(lse_a - lse_b)
    return {"positions": int(a.shape[0]), "distinct_top1": int(len(np.unique(ai[:, 0]))),
            "top1": float(np.mean(ai[:, 0] == bi[:, 0])), "overlap": float(np.mean(overlap)),
            "logit_max_abs": float(abs_err.max()), "logit_mean_abs": float(abs_err.mean()),
            "logit_max_rel": float(rel_err.max()), "logit_mean_rel": float(rel_err.mean()),
            "logsumexp_max_abs": float(lse.max()), "logsumexp_mean_abs": float(lse.mean()),
            "entropy_max_abs": float(ent.max()), "kl_mean": float(np.mean(kl)), "kl_max": float(np.max(kl)),
            "kl_topk_mean": float(np.mean(kl_topk)), "kl_topk_max": float(np.max(kl_topk)),
            "topk_mass": float(np.mean(mass))}


def logits_rows(name: str, work: str, variants: list[str] | None = None, keep: bool = False, log=print) -> dict:
    """The logits-error section: SIZES[name] in LLaDA's layout, converted as each of `variants` (fp32 first), each
    folder's model.onnx in onnxruntime-node on canvases(), compared with the fp32 folder's (compare_logits), for the
    masked positions and the text positions apart. The row "fp32, PyTorch" is the PyTorch module on the fp32 folder's
    weights against the fp32 graph: the float floor. "full" compares the whole vocabulary through the PyTorch module
    (compare_full)."""
    variants = list(variants or VARIANTS)
    if variants[0] != "fp32":
        variants = ["fp32"] + [v for v in variants if v != "fp32"]
    t0 = time.time()
    base = os.path.join(work, f"logits-{name}")
    checkpoint = os.path.join(base, "hf")
    params = write_checkpoint(checkpoint, BASE | SIZES[name], 2)
    quiet = lambda *_: None  # noqa: E731
    folders, outputs, feeds, is_masked = {}, {}, None, None
    for variant in variants:
        folders[variant] = os.path.join(base, variant)
        shutil.rmtree(folders[variant], ignore_errors=True)
        convert_checkpoint(checkpoint, folders[variant], f"synthetic-{name}-{variant}", log=quiet, progress=quiet,
                           quantization=VARIANTS[variant])
        if feeds is None:
            feeds, is_masked = canvases(folders[variant])
        outputs[variant] = ort_run(os.path.join(folders[variant], "model.onnx"), feeds)
        log(f"logits {name} {variant}: converted and run ({time.time() - t0:.0f} s)")
    k = outputs["fp32"]["topk_logits"].shape[-1]
    reference = pytorch_logits(folders["fp32"], feeds)
    sigma = reference.double().std(-1, unbiased=False).numpy()
    torch_out = head_outputs(reference, feeds, k)
    # The whole vocabulary, which the graph's top-K does not show: the PyTorch module with each folder's weights
    # (exactly what accuracy level 1 computes with), and with level 4's rounding of the activations emulated.
    full_stats = {}
    for v in variants:
        if VARIANTS[v] is not None:
            level4 = VARIANTS[v].accuracy_level == 4
            full_stats[v + (", emulated" if level4 else "")] = compare_full(reference,
                                                                          pytorch_logits(folders[v], feeds, level4))
    groups = {"masked": is_masked, "text": ~is_masked}
    rows, full = {}, {}
    for group, where in groups.items():
        pick = lambda out: {n: a[where] for n, a in out.items()}  # noqa: E731
        ref = pick(outputs["fp32"])
        rows[group] = {"fp32, PyTorch": compare_logits(ref, pick(torch_out), sigma[where])}
        rows[group] |= {v: compare_logits(ref, pick(outputs[v]), sigma[where]) for v in variants}
        full[group] = {label: summarize_full(stats, where) for label, stats in full_stats.items()}
        for label, r in rows[group].items():
            log(f"logits {name} {group} {label}: top-1 {r['top1']:.3f}, overlap {r['overlap']:.3f}, logit err max "
                f"{r['logit_max_abs']:.2e} mean {r['logit_mean_abs']:.2e} ({r['logit_mean_rel']:.2e} sigma), "
                f"logsumexp {r['logsumexp_max_abs']:.2e}, KL >= {r['kl_mean']:.2e}, top-K KL {r['kl_topk_mean']:.2e}")
        for label, r in full[group].items():
            log(f"logits {name} {group} full vocabulary {label}: logit err max {r['logit_max_abs']:.2e} mean "
                f"{r['logit_mean_abs']:.2e}, top-1 {r['top1']:.3f}, KL {r['kl_mean']:.2e}")
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return {"size": name, "dims": SIZES[name], "parameters": params, "rows_n": int(feeds["input_ids"].shape[0]),
            "length": int(feeds["input_ids"].shape[1]), "wanted": int(feeds["positions"].shape[1]),
            "masked": int(is_masked[0].sum()), "topk": int(k), "seed": LOGITS_SEED,
            "sigma_mean": {g: float(sigma[w].mean()) for g, w in groups.items()},
            "fp32_top1_logit_mean": {g: float(outputs["fp32"]["topk_logits"][..., 0][w].mean())
                                     for g, w in groups.items()},
            "fp32_entropy_mean": {g: float(outputs["fp32"]["entropy"][w].mean()) for g, w in groups.items()},
            "rows": rows, "full": full, "seconds": time.time() - t0}


# --- the report ---------------------------------------------------------------------------------------------------


def logits_markdown(lg: dict) -> list[str]:
    d, groups = lg["dims"], list(lg["rows"])
    stat = lambda key, f=".3g": ", ".join(f"{g} {lg[key][g]:{f}}" for g in groups)  # noqa: E731
    mass = ", ".join(f"{g} {lg['rows'][g]['fp32']['topk_mass']:.2%}" for g in groups)
    lines = [f"## Logits error on a converted checkpoint ({lg['size']}: {lg['parameters'] / 1e6:,.0f} M parameters, "
             f"random weights in LLaDA's layout)", "",
             f"bench_convert.write_checkpoint's checkpoint (LLaDA-8B's config keys, bf16 shards, vocabulary "
             f"{BASE['vocab_size']:,}, untied head; d_model {d['d_model']}, {d['n_layers']} layers, MLP "
             f"{d['mlp_hidden_size']}; weights N(0, 0.02²), norms 1) converted by dllm.convert as fp32 and as each "
             "quantized folder (block 32); each folder's model.onnx run once in onnxruntime-node (the real kernels) on "
             f"the same {lg['rows_n']} canvases of {lg['length']} tokens: bos and quality.PROMPTS' text, with "
             f"{lg['masked']} of the {lg['wanted']} positions of the second half masked at random (seed {lg['seed']}); "
             "the wanted positions are that half. Rows compare with the fp32 folder's outputs, at the masked positions "
             "(those the engine asks for) and at the text positions apart.", "",
             f"Top-K logits (K = {lg['topk']}) are compared for the token ids both lists hold; an id in one list only "
             "(its logit in the other is below that list's K-th) is left out, and *overlap* is the share of fp32's "
             "top-K ids the other list also holds. *σ* is the standard deviation of fp32's full-vocabulary logits at "
             f"the position (the PyTorch module on the fp32 folder's weights; mean {stat('sigma_mean')}). "
             "*KL ≥*: KL(fp32 ‖ quantized) of the distributions over the shared ids plus one outcome for all other "
             "tokens (probabilities from the logits and logsumexp), a lower bound on the full-vocabulary KL; *top-K KL*: "
             "both distributions restricted to the shared ids and renormalised. The *fp32, PyTorch* row is the PyTorch "
             "module against the fp32 graph: the float floor.", "",
             "**Random weights make the logits much flatter than a trained model's**: fp32's entropy averages "
             f"{stat('fp32_entropy_mean', '.2f')} nats (uniform: ln {BASE['vocab_size']:,} = "
             f"{np.log(BASE['vocab_size']):.2f}), its top-K holds {mass} of the probability, and the positions predict "
             "few distinct distributions (the *distinct top-1* column: a random transformer's positions look alike, "
             "the masked ones most). So KL and top-1 agreement here are those of near-uniform distributions with "
             "near-ties, not a trained model's; the errors relative to σ depend least on it. The shared-id comparison "
             "understates the error (an id whose error pushed it out of one list is left out): the whole-vocabulary "
             "table below has it all.", "",
             "| positions | folder | top-1 agreement | distinct top-1 (fp32) | top-K overlap | logit max abs err | mean | "
             "max / σ | mean / σ | logsumexp max abs err | entropy max abs err | KL ≥ (mean) | top-K KL (mean) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for g in groups:
        for label, r in lg["rows"][g].items():
            lines.append(f"| {g} ({r['positions']}) | {label} | {r['top1']:.3f} | {r['distinct_top1']} | {r['overlap']:.3f} | "
                         f"{r['logit_max_abs']:.2e} | {r['logit_mean_abs']:.2e} | {r['logit_max_rel']:.2e} | "
                         f"{r['logit_mean_rel']:.2e} | {r['logsumexp_max_abs']:.2e} | {r['entropy_max_abs']:.2e} | "
                         f"{r['kl_mean']:.1e} | {r['kl_topk_mean']:.1e} |")
    lines += ["", "The whole vocabulary, which the graph's top-K does not show: the PyTorch module with each folder's "
              "dequantized weights (quantize.dequantized_model: what accuracy level 1 computes, to float rounding) "
              "against the fp32 folder's module, all 32,000 logits; the level-4 rows also round each linear layer's "
              "input to int8 per block of 32 as MLAS does (emulated, as in the quality section). KL exact.", "",
              "| positions | weights | top-1 agreement | logit max abs err | mean | max / σ | mean / σ | KL (mean) | KL (max) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for g in groups:
        for label, r in lg["full"][g].items():
            lines.append(f"| {g} ({r['positions']}) | {label} | {r['top1']:.3f} | {r['logit_max_abs']:.2e} | "
                         f"{r['logit_mean_abs']:.2e} | {r['logit_max_rel']:.2e} | {r['logit_mean_rel']:.2e} | "
                         f"{r['kl_mean']:.1e} | {r['kl_max']:.1e} |")
    return lines + [""]


def markdown(result: dict) -> str:
    gib = lambda n: f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"  # noqa: E731
    lines = ["# Quantized model folders: quality, size, memory, speed", "",
             "`cd models && python3 -m dllm.bench_quantize " + result["command"] + "` (models/dllm/bench_quantize.py, "
             "bench/quantize.ts). Linear layers as onnxruntime's `com.microsoft.MatMulNBits` (symmetric, block 32; "
             "docs/models.md); embeddings and the output head float.",
             f"Machine: {result['machine']}; onnxruntime-node 1.30; {result['date']}.", ""]
    if result.get("kernels"):
        lines += ["## Which kernels run", "",
                  "A MatMulNBits layer (K 1024, N 256, 8 rows) at accuracy level 4 against level 1: a difference means "
                  "MLAS's int8 path ran (A quantized to int8 per block, integer dot products); none, a float32 fallback.",
                  "", "| weights | level 4 vs level 1 (max relative) | int8 compute at level 4 |", "| --- | ---: | --- |"]
        for bits, p in result["kernels"].items():
            lines.append(f"| {bits} | {p['level4_vs_level1']:.1e} | {'yes' if p['int8_compute'] else 'no (float32)'} |")
        lines.append("")
    q = result.get("quality")
    if q:
        ref_rows = [r for r in q["rows"] if "reference_same" in r]
        lines += ["## Quality on the default model (models/tiny-llada, 3.7 M parameters)", "",
                  f"Validation masked-token loss (quality.py: {q['windows']} windows of {q['length']} tokens, seed "
                  f"{q['seed']}, t in {{0.1, 0.3, 0.5, 0.7, 0.9}}), through the PyTorch module with each folder's "
                  "weights dequantized exactly as the op computes them (float32 compute: accuracy levels 0 and 1); "
                  "the emulated level-4 rows also round each linear layer's input to int8 per block of 32 as MLAS does. "
                  f"Greedy agreement: the 16 quality.PROMPTS at the folder's defaults ({q['params']['max_tokens']} "
                  f"tokens, {q['params']['steps']} steps, blocks of {q['params']['block_length']}), completions identical "
                  "to fp32's and tokens equal at the same position, through the reference sampler (exact dequantized "
                  "weights); distinct bigrams (quality.py) of the completions. The last row is the float model with "
                  "only its activations rounded as level 4 rounds them: how far greedy text moves for a change of "
                  "loss that small.", "",
                  "| weights | loss (mean) | vs fp32 | t=0.1 | t=0.5 | t=0.9 | identical completions | equal tokens | distinct bigrams |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        base = q["rows"][0]["loss"]["mean"]
        for r in q["rows"]:
            l = r["loss"]
            agree = (f"{r['reference_same']}/16 | {r['reference_tokens']}/{r['reference_of']}" if r in ref_rows else "- | -")
            lines.append(f"| {r['model']} | {l['mean']:.4f} | {l['mean'] - base:+.4f} | {l['t=0.1']:.4f} | "
                         f"{l['t=0.5']:.4f} | {l['t=0.9']:.4f} | {agree} | {r.get('distinct_bigrams', 0):.3f} |")
        lines += ["", "The same agreement through the engine in onnxruntime-node (the real kernels):", "",
                  "| folder | cache | identical completions | equal tokens |", "| --- | --- | ---: | ---: |"]
        for key, e in q["engine"].items():
            name, cache = key.split()
            lines.append(f"| {name} | {cache} | {e['same']}/{e['prompts']} | {e['tokens']}/{e['of']} |")
        sizes = q["weights_bytes"]
        lines += ["", "weights.data: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items() if k in
                                                   ("fp32", "int8-a1", "int4-a1")) +
                  " (tied embedding: tiny-llada stores it and its transpose in float, 6.3 MiB of the 17 MiB).", ""]
    lg = result.get("logits")
    if lg:
        lines += logits_markdown(lg)
    for name, s in result.get("sizes", {}).items():
        d = s["dims"]
        lines += [f"## {name}: {s['parameters'] / 1e6:,.0f} M parameters (d_model {d['d_model']}, {d['n_layers']} layers, "
                  f"MLP {d['mlp_hidden_size']}, vocabulary {BASE['vocab_size']}, untied)", "",
                  f"Prompt {result['prompt_tokens']} + {result['max_tokens']} generated tokens, blocks of "
                  f"{result['block_length']}, steps = tokens, greedy, {result['threads']} threads; one process per row.", "",
                  "| folder | folder size | vs fp32 | converter peak RSS | cache | tokens/s | vs fp32 | serving peak RSS | vs fp32 | load avg before -> after |",
                  "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
        fp32 = s["variants"].get("fp32")
        ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"  # noqa: E731
        for variant, v in s["variants"].items():
            c = v["convert"]
            for cache, r in v["serve"].items():
                ref = fp32["serve"].get(cache) if fp32 else None
                lines.append(" | ".join([
                    f"| {variant}", gib(c["folder_bytes"]),
                    ratio(c["folder_bytes"], fp32["convert"]["folder_bytes"]) if fp32 else "-", gib(c["peak_rss"]), cache,
                    f"{r['tokensPerSecond']:.2f}", ratio(r["tokensPerSecond"], ref["tokensPerSecond"]) if ref else "-",
                    gib(r["peakRssBytes"]), ratio(r["peakRssBytes"], ref["peakRssBytes"]) if ref else "-",
                    f"{r['load_before']} -> {r['load_after']} |"]))
        lines.append("")
    if result.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in result["notes"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", action="store_true", help="the tiny-llada quality section")
    parser.add_argument("--sizes", default="", help=f"comma-separated, of {', '.join(SIZES)} ('' for none)")
    parser.add_argument("--logits", default="", metavar="SIZE", choices=["", *SIZES],
                        help=f"the logits-error section on a converted checkpoint of this size ({', '.join(SIZES)})")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--caches", default="none,dual")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--corpus", default=os.path.join(MODELS, ".cache", "corpus"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "dllm-bench-quantize"))
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints and folders in --work")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "quantize"))
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    given = list(argv if argv is not None else sys.argv[1:])
    shown = [a for i, a in enumerate(given) if not (a.startswith("--out") or (i and given[i - 1] == "--out")
                                                      or a.startswith("--note") or (i and given[i - 1] == "--note"))]
    command = " ".join(shown)
    result = {"command": command, "machine": cpu_flags(), "date": time.strftime("%Y-%m-%d"),
              "load_average_start": load_average(), "prompt_tokens": args.prompt_tokens, "max_tokens": args.max_tokens,
              "block_length": args.block_length, "threads": args.threads, "notes": args.note}
    result["kernels"] = probe_kernels(args.work)
    print(f"kernels: {result['kernels']}", flush=True)
    if args.quality:
        result["quality"] = quality_rows(args.work, args.corpus)
    if args.logits:
        result["logits"] = logits_rows(args.logits, args.work, args.variants.split(","), args.keep)
    result["sizes"] = {name: size_rows(name, args.work, args) for name in filter(None, args.sizes.split(","))}
    result["load_average_end"] = load_average()
    write_report(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
