#!/usr/bin/env bash
# Rebuilds models/tiny-dream, the default-model candidate adapted from an autoregressive model (Dream 7B's recipe;
# Gong et al. 2024, "Scaling Diffusion Language Models via Adaptation from Autoregressive Models"): the same
# transformer as tiny-llada trained first with a causal mask on next-token prediction, then turned into a masked
# diffusion model that keeps the next-token shift (shifted logits), its attention annealed from causal to full, then
# export, quality report, card; bench/recipes.md compares it with tiny-llada's from-scratch training at equal compute
# (3,900 steps of 8 x 512 tokens each). Needs what train_tiny.sh needs; about 1.5 hours on 2 idle CPU cores (the
# committed run took longer: it shared the machine); resumable: run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")"
PY=/usr/bin/python3
[ -f .cache/corpus/valid.txt ] || $PY -m dllm.data --out .cache/corpus
model=(--tokenizer tiny-llada/tokenizer.json --d-model 192 --n-heads 6 --n-layers 6 --mlp-hidden 576 --seq-len 512
  --batch-size 8 --eval-every 200 --valid-windows 64 --threads 2)
# Phase 1, autoregressive: a cosine schedule planned for 2,400 steps, stopped at step 800 (what one working session of
# 2 busy cores allowed beside the adaptation).
$PY -m dllm.train --corpus .cache/corpus --out runs/tiny-ar "${model[@]}" --objective ar --lr 1.5e-3 --warmup 100 \
  --max-steps 2400 --halt-at-step 800 --ckpt-every 100
# Phase 2, adaptation: shifted logits, attention annealed from causal to bidirectional over the first 300 steps. A
# cosine schedule planned for 1,300 steps, then resumed to 3,100 so that both phases take tiny-llada's 3,900 steps
# (equal compute); the learning rate restarted from 0.6 of its peak at the resume.
adapt=(--corpus .cache/corpus --out runs/tiny-dream "${model[@]}" --init-from runs/tiny-ar/ckpt.pt --shift-logits
  --anneal-steps 300 --lr 1e-3 --warmup 50 --ckpt-every 100)
$PY -m dllm.train "${adapt[@]}" --max-steps 1300
$PY -m dllm.train "${adapt[@]}" --max-steps 3100
# Dream's sampler in blocks of 8 (as Fast-dLLM runs Dream) rather than Dream's one 64-token canvas, with OpenAI's
# presence and frequency penalties by default: greedy decoding of a model this small loops phrases without them (the
# values were chosen on 16 prompts of our own, not quality.py's; docs/models.md).
$PY -m dllm.export --checkpoint runs/tiny-dream/ckpt.pt --tokenizer tiny-llada/tokenizer.json --out tiny-dream --name tiny-dream \
  --block-length 8 --frequency-penalty 0.5 --presence-penalty 1.5
$PY -m dllm.quality --model tiny-dream --old-model tiny-llada --corpus .cache/corpus --out runs/tiny-dream/quality.json
$PY -m dllm.card --run runs/tiny-dream --pretrain runs/tiny-ar --model tiny-dream --corpus .cache/corpus \
  --quality runs/tiny-dream/quality.json --title "adapted from an autoregressive model" --bench ""
# The two recipes side by side (bench/recipes.md); tiny-llada's compute is its card's (its run is not kept).
$PY -m dllm.recipes --recipe "masked diffusion from scratch=tiny-llada=3900:15877520:90.4" \
  --recipe "autoregressive, then adapted=tiny-dream=runs/tiny-ar,runs/tiny-dream"
