#!/usr/bin/env bash
# Rebuilds models/tiny-dream-random from nothing: a seeded random-weight checkpoint in the layout of a Hugging Face
# Dream release (python3 -m dllm.dream_fixture), converted like any Dream checkpoint (python3 -m dllm.convert: fp32,
# top-K 64; max_tokens and steps 32 come from the checkpoint's generation_config.json), then its MODEL_CARD.md.
# Needs Debian's python3-torch, python3-onnx, python3-numpy, python3-regex; a few seconds on 2 cores. The same
# command writes the same bytes.
set -euo pipefail
cd "$(dirname "$0")"
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PY -m dllm.dream_fixture --out "$tmp/checkpoint"
rm -rf tiny-dream-random
$PY -m dllm.convert --checkpoint "$tmp/checkpoint" --out tiny-dream-random --name tiny-dream-random --topk 64
$PY -m dllm.dream_fixture --card tiny-dream-random
