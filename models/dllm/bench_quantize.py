"""Quantized model folders (quantize.py): quality on the default model, size, memory and speed on synthetic LLaDA
checkpoints. Writes bench/quantize.md and bench/quantize.json.

    cd models && python3 -m dllm.bench_quantize --quality --sizes 0.6b,1.5b    # the full run (hours on 2 cores)
    cd models && python3 -m dllm.bench_quantize --sizes tiny --out /tmp/q      # a quick check that it all runs

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
from .convert import quantize_folder
from .quantize import LINEAR_LAYERS, Quantization, dequantized_model, pack, quantize_rows

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


# --- the report ---------------------------------------------------------------------------------------------------


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
    result["sizes"] = {name: size_rows(name, args.work, args) for name in filter(None, args.sizes.split(","))}
    result["load_average_end"] = load_average()
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(result))
    print(f"wrote {args.out}.md and {args.out}.json")
    return result


if __name__ == "__main__":
    main()
