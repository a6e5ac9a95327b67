"""Trainer throughput: the previous trainer, the one that trained the first tiny-llada (taken from git: the commit that
added tiny-llada's model card), against today's, on the same machine and data, plus the accuracy of bfloat16 autocast
against float32 on one batch (loss and gradient agreement).

    cd models && python3 -m dllm.bench_train          # writes ../bench/train.md and ../bench/train.json

Each trainer runs as its own process (`--max-steps` warm-up + measured steps, its own log), one after the other;
tokens/s is read from the trainer's own log over the measured steps. Needs both corpora of train_tiny.sh
(.cache/corpus-items for the previous trainer, which pads short documents; .cache/corpus). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import torch

from .report import write_report

# The previous trainer is the dllm package of the first trained tiny-llada (fp32, 256-token windows + padded batches):
# the commit that added its model card, which trained and committed that model. Found in git rather than named by a
# hash; its trainer files (model.py, train.py, tokenizer.py, data.py) are those of revision 68de858, which this script
# used to name (the same blobs).
FIRST_CARD = "models/tiny-llada/MODEL_CARD.md"
HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.dirname(HERE)
REPO = os.path.dirname(MODELS)


def first_tiny_llada_rev() -> str:
    """The commit that added tiny-llada's model card (the oldest one, should it have been added again since): the
    first trained tiny-llada and the trainer that trained it."""
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%h", "--", FIRST_CARD], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split()
    if not added:
        raise SystemExit(f"no commit in this clone adds {FIRST_CARD}: the previous trainer needs the full git history")
    return added[-1]


def baseline_package(tmp: str, rev: str) -> str:
    """The dllm package of revision rev, extracted from git into tmp/dllm."""
    pkg = os.path.join(tmp, "dllm")
    os.makedirs(pkg)
    for name in ("__init__.py", "model.py", "train.py", "tokenizer.py", "data.py"):
        blob = subprocess.run(["git", "show", f"{rev}:models/dllm/{name}"], cwd=REPO, check=True,
                              capture_output=True).stdout
        with open(os.path.join(pkg, name), "wb") as f:
            f.write(blob)
    return tmp


def run_trainer(pythonpath: str, out: str, flags: list[str], warmup: int, steps: int, corpus: str = "corpus") -> float:
    """Runs `python3 -m dllm.train` for warmup + steps steps on models/.cache/<corpus>; -> tokens/s over the
    measured steps."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    common = ["--corpus", os.path.join(MODELS, ".cache", corpus), "--tokenizer", os.path.join(MODELS, "tiny-llada", "tokenizer.json"),
              "--out", out, "--threads", "2", "--eval-every", "100000", "--ckpt-every", "100000", "--valid-windows", "2"]
    subprocess.run([sys.executable, "-m", "dllm.train", *common, *flags, "--max-steps", str(warmup + steps), "--warmup", "1"],
                   env=env, check=True, capture_output=True)
    records = [json.loads(line) for line in open(os.path.join(out, "log.jsonl")) if "tok_s" in line]
    first = next(r for r in records if r["step"] >= warmup)
    last = records[-1]
    return (last["tokens"] - first["tokens"]) / (last["seconds"] - first["seconds"])


SAME_BATCH_SCRIPT = """
import sys, time, torch
which, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, path)
from dllm.model import LLaDA, ModelConfig
from dllm import train
torch.set_num_threads(2); torch.manual_seed(0)
model = LLaDA(ModelConfig(max_sequence_length=512))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randint(7, 4000, (8, 512))
def step():
    t = train.stratified_times(8)
    if which == "previous":
        loss = train.masked_diffusion_loss(model, x, torch.ones_like(x, dtype=torch.bool), t)
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=which == "today-bf16"):
            loss = train.masked_diffusion_loss(model, x, t)
    opt.zero_grad(); loss.backward(); opt.step()
step()
t0 = time.time()
for _ in range(4):
    step()
print(4 * x.numel() / (time.time() - t0))
"""


def same_batch_rate(which: str, pythonpath: str) -> float:
    """tokens/s of one trainer's step on the very same 8 x 512 stream batch (no padded batches, no data loading)."""
    out = subprocess.run([sys.executable, "-c", SAME_BATCH_SCRIPT, which, pythonpath], check=True, capture_output=True,
                         text=True).stdout
    return float(out.strip().splitlines()[-1])


def bf16_agreement(seed: int = 0) -> dict[str, float]:
    """Loss and gradients of one 8 x 512 batch under bf16 autocast vs float32, same weights, masks and t."""
    sys.path.insert(0, MODELS)
    from dllm.model import LLaDA, ModelConfig
    from dllm.train import masked_diffusion_loss

    torch.manual_seed(seed)
    model = LLaDA(ModelConfig(max_sequence_length=512))
    x = torch.randint(7, 4096, (8, 512))
    t = torch.linspace(0.1, 1.0, 8)
    grads, losses = [], []
    for bf16 in (False, True):
        torch.manual_seed(seed + 1)  # the same masks
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = masked_diffusion_loss(model, x, t)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item()
    return {"loss_fp32": losses[0], "loss_bf16": losses[1], "loss_rel_diff": abs(losses[1] - losses[0]) / losses[0],
            "grad_cosine": cosine, "grad_norm_ratio": (grads[1].norm() / grads[0].norm()).item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(2)
    size = ["--d-model", "256", "--n-heads", "8", "--n-layers", "6", "--mlp-hidden", "768"]
    rows = []
    previous = first_tiny_llada_rev()
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline_package(os.path.join(tmp, "baseline"), previous)
        rows.append({"trainer": f"previous ({previous}): fp32, 256-token windows, every 3rd batch padded",
                     "tok_s": run_trainer(base, os.path.join(tmp, "a"), size + ["--seq-len", "256"], args.warmup, args.steps,
                                             corpus="corpus-items")})  # it needs the short documents to pad
        # The same trainer on the 512-token windows the new context needs: the like-for-like baseline.
        rows.append({"trainer": f"previous ({previous}) at 512-token windows (the context tiny-llada now has)",
                     "tok_s": run_trainer(base, os.path.join(tmp, "a512"), size + ["--seq-len", "512"], args.warmup,
                                          args.steps, corpus="corpus-items")})
        rows.append({"trainer": "today: packed 512-token windows, fp32 (--no-bf16)",
                     "tok_s": run_trainer(MODELS, os.path.join(tmp, "b"), size + ["--no-bf16"], args.warmup, args.steps)})
        rows.append({"trainer": "today: packed 512-token windows, bf16 autocast (default)",
                     "tok_s": run_trainer(MODELS, os.path.join(tmp, "c"), size, args.warmup, args.steps)})
        # The other size of the sweep (models/sweep_tiny.sh), the one tiny-llada has: its cost per token.
        small = ["--d-model", "192", "--n-heads", "6", "--n-layers", "6", "--mlp-hidden", "576"]
        rows.append({"trainer": "today, default settings, d_model 192 (tiny-llada's size, 3.7M parameters)",
                     "tok_s": run_trainer(MODELS, os.path.join(tmp, "d"), small, args.warmup, args.steps)})
        same_batch = {"previous": same_batch_rate("previous", base), "today-fp32": same_batch_rate("today-fp32", MODELS),
                      "today-bf16": same_batch_rate("today-bf16", MODELS)}
    agreement = bf16_agreement()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": machine,
              "load_average": os.getloadavg(), "model": "d_model 256, 6 layers, MLP 768 (6.2M parameters), batch 8",
              "steps": args.steps, "rows": rows, "same_batch": same_batch, "bf16_agreement": agreement}
    lines = ["# Trainer throughput", "", f"`cd models && python3 -m dllm.bench_train` · {result['date']} · {machine} · "
             f"load average {' '.join(f'{x:.2f}' for x in result['load_average'])} · {result['model']} · {args.steps} measured steps", "",
             "| trainer | tokens/s | vs previous |", "| --- | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['trainer']} | {r['tok_s']:,.0f} | {r['tok_s'] / rows[0]['tok_s']:.2f}x |")
    lines += ["", "The same 8 x 512 stream batch through each trainer's step (model, loss, backward, AdamW; 4 steps after one "
              "warm-up, no padded batches, no data loading): "
              + ", ".join(f"{k} {v:,.0f} tokens/s" for k, v in same_batch.items())
              + f"; today with bf16 is {same_batch['today-bf16'] / same_batch['previous']:.2f}x the previous trainer on it."]
    lines += ["", "bf16 autocast vs float32 on one 8 x 512 batch (same weights, masks and t): "
              f"loss {agreement['loss_fp32']:.5f} vs {agreement['loss_bf16']:.5f} (relative difference {agreement['loss_rel_diff']:.2e}), "
              f"gradient cosine {agreement['grad_cosine']:.5f}, gradient norm ratio {agreement['grad_norm_ratio']:.4f}.", ""]
    write_report(os.path.join(REPO, "bench", "train"), result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
