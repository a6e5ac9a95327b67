#!/usr/bin/env bash
# Rebuilds models/tiny-llada from nothing: corpus, tokenizer, training (resumable), ONNX export, model card.
# Needs Debian's python3-torch, python3-onnx, python3-numpy, python3-regex, python3-matplotlib and
# libopenblas0-pthread, and `npm ci` done (onnxruntime-node and @huggingface/tokenizers are used by the tests).
# About 80 minutes on 2 CPU cores. Pass extra train.py flags after the script name, e.g. --max-steps 200.
set -euo pipefail
cd "$(dirname "$0")"
PY=/usr/bin/python3
$PY -m dllm.data --out .cache/corpus
$PY -m dllm.tokenizer --corpus .cache/corpus/train.txt --vocab-size 4096 --out tiny-llada/tokenizer.json
$PY -m dllm.train --corpus .cache/corpus --tokenizer tiny-llada/tokenizer.json --out runs/tiny-llada \
  --max-steps 1400 --eval-every 140 --threads 2 "$@"
# Phase 2: fewer end-of-text-padded batches (1 in 10), so the model commits end-of-text less eagerly.
$PY -m dllm.train --corpus .cache/corpus --tokenizer tiny-llada/tokenizer.json --out runs/tiny-llada \
  --max-steps 1700 --padded-every 10 --eval-every 150 --threads 2 "$@"
$PY -m dllm.export --checkpoint runs/tiny-llada/ckpt.pt --tokenizer tiny-llada/tokenizer.json --out tiny-llada
$PY -m dllm.card --run runs/tiny-llada --model tiny-llada --corpus .cache/corpus
(cd .. && $PY models/dllm/reference_generate.py --golden test/fixtures/golden/tiny-llada.json)
