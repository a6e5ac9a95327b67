#!/usr/bin/env bash
# The model-size sweep behind tiny-llada's size: each size trained under the final recipe (same data, batch,
# learning rate and schedule as train_tiny.sh, with the step count its speed allows in the training budget) for the
# same number of steps (so the same tokens), then compared at equal compute by weighting tokens with each size's
# measured cost per token (bench: python3 -m dllm.bench_train style timings, or the tok/s in each log on an idle
# machine). dllm.card --sweep tabulates and plots the runs. The chosen size's run resumes to completion in
# train_tiny.sh (copy runs/sweep-dXXX to runs/tiny-llada).
set -euo pipefail
cd "$(dirname "$0")"
PY=/usr/bin/python3
STEPS=${SWEEP_STEPS:-220}
common=(--corpus .cache/corpus --tokenizer tiny-llada/tokenizer.json --threads 2 --eval-every 50 --valid-windows 64 --halt-at-step "$STEPS")
$PY -m dllm.train "${common[@]}" --out runs/sweep-d192 --d-model 192 --n-heads 6 --mlp-hidden 576 --n-layers 6 --max-steps 3400
$PY -m dllm.train "${common[@]}" --out runs/sweep-d256 --d-model 256 --n-heads 8 --mlp-hidden 768 --n-layers 6 --max-steps 3400
