#!/usr/bin/env bash
# The model-size sweep behind tiny-llada's size: three sizes under the final recipe (same data, batch, learning
# rate and schedule as train_tiny.sh, each with the step count its speed allows in the full training budget),
# each trained for the same wall time; compare their validation curves in runs/sweep-*/log.jsonl
# (dllm.card --sweep draws them). The chosen size's run can be resumed to completion by train_tiny.sh.
set -euo pipefail
cd "$(dirname "$0")"
PY=/usr/bin/python3
MINUTES=${SWEEP_MINUTES:-7}
common=(--corpus .cache/corpus --tokenizer tiny-llada/tokenizer.json --threads 2 --eval-every 50 --valid-windows 64 --time-limit-min "$MINUTES")
$PY -m dllm.train "${common[@]}" --out runs/sweep-d192 --d-model 192 --n-heads 6 --mlp-hidden 576 --n-layers 6 --max-steps 4400
$PY -m dllm.train "${common[@]}" --out runs/sweep-d256 --d-model 256 --n-heads 8 --mlp-hidden 768 --n-layers 6 --max-steps 3400
$PY -m dllm.train "${common[@]}" --out runs/sweep-d320 --d-model 320 --n-heads 8 --mlp-hidden 896 --n-layers 6 --max-steps 2800
