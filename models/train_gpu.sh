#!/usr/bin/env bash
# train_dream.sh's recipe on a lent GPU (an H100 or H200 of the device tool, docs/models.md "Training on a GPU"): the
# same phases with the same flags (autoregressive, stopped at step 800 of a 2,400-step schedule; adaptation with
# shifted logits and attention annealed over 300 steps, 1,300 steps then resumed to 3,100), on `--device cuda` with
# bf16 autocast, a larger model (d_model 256, 8 layers: 7.9M parameters, model.onnx + weights.data 35.9 MB, under
# 40 MB) and 8 times the batch (64 x 512 tokens), within a wall budget of 9 minutes.
# Three steps:
#
#   bash models/train_gpu.sh pack [CORPUS]   # here: the corpus (default models/.cache/corpus) as xz parts that fit
#                                            # beside the repository in a run call (models/.cache/gpu-corpus), and
#                                            # the run calls that carry them, printed
#   bash models/train_gpu.sh                 # there, from the repository root, in the last of those calls: trains,
#                                            # writes the checkpoints into $OUT in parts of at most 16 MB
#   bash models/train_gpu.sh unpack DIR      # here, DIR = the call's files_at: joins the parts into models/runs
#                                            # (gpu-ar, gpu-dream), exports models/tiny-dream-gpu, checks its size;
#                                            # dllm.quality then as in train_dream.sh
#
# Why parts on the way in: a run call sends the repository (about 60 MB, the committed model folders mostly) and what
# it carries, 64 MiB in all, and the corpus is 51 MB of text, 13 MB as xz. Parts carried by earlier calls stay on
# the machine (ignored paths there are kept between calls) while it is warm, 30 s after a call: make the calls one
# right after the other. With 2 parts (what `pack` prints is the truth):
#
#   run(command="ls -l models/.cache/gpu-corpus", timeout_s=60,
#       carry=["models/.cache/gpu-corpus/corpus.tar.xz.parts.json", "models/.cache/gpu-corpus/corpus.tar.xz.000"])
#   run(command="bash models/train_gpu.sh", timeout_s=600,
#       carry=["models/.cache/gpu-corpus/corpus.tar.xz.parts.json", "models/.cache/gpu-corpus/corpus.tar.xz.001"])
#
# If the machine went back in between, the training call stops at once naming the missing part: start again.
# Why parts on the way back: a call returns at most 8 files of 16 MiB, 64 MiB in all. The checkpoints come back
# without their optimiser state (dllm.parts strip): what --init-from, dllm.export and dllm.card read.
#
# Nothing is downloaded there: the machine's python3 has torch, numpy and regex, all train.py needs. Knobs
# (environment; paths relative to where the script is started):
#   DEVICE=cuda         cpu runs the same script here (models/tests/test_train_gpu.py does, at a tiny size)
#   CORPUS=models/.cache/gpu-corpus   a corpus folder (train.txt, valid.txt) or pack's parts
#   OUT                 where the parts and train.log go (the device run sets it)
#   RUNS=models/runs    where the runs are written (gpu-ar, gpu-dream; resumed if present)
#   BUDGET_MIN=9        wall minutes from the script's start to its end; each phase gets --time-limit-min from it
#   STEP_SCALE=1        multiplies every step count of the recipe (schedules, halts, annealing, warm-up, evals)
#   TRAIN_ARGS          train.py flags appended to every phase (they win: argparse keeps the last)
#   STARTUP_S=45 FINISH_S=30   seconds kept back per phase start-up and for packing at the end
#   RETURN_PART_MB=16   largest part brought back (10^6 bytes)
#   PART_MB, DEST=models/.cache/gpu-corpus   pack: the part size (default: the room the repository leaves), where
#   FOLDER=models/tiny-dream-gpu             unpack: the folder exported
#   PY=python3
set -euo pipefail
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -n "${CORPUS:-}" ] && CORPUS=$(abs "$CORPUS")
[ -n "${RUNS:-}" ] && RUNS=$(abs "$RUNS")
[ -n "${OUT:-}" ] && OUT=$(abs "$OUT")
[ -n "${FOLDER:-}" ] && FOLDER=$(abs "$FOLDER")
[ -n "${DEST:-}" ] && DEST=$(abs "$DEST")
command=${1:-train}
[ $# -ge 2 ] && arg=$(abs "$2") || arg=
cd "$(dirname "$0")"
PY=${PY:-python3}
RUNS=${RUNS:-runs}

pack() {
  local corpus=${arg:-.cache/corpus} dest=${DEST:-.cache/gpu-corpus} tmp tree
  [ -f "$corpus/valid.txt" ] || { echo "no corpus at $corpus: python3 -m dllm.data --out $corpus" >&2; exit 1; }
  if [ -z "${PART_MB:-}" ]; then  # what travels anyway (the files git tracks or does not ignore); the parts get the
    # rest of the 64 MiB, less 256 KiB for the manifest and for edits made before the calls
    tree=$(cd .. && git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
    PART_MB=$(awk -v r=$((64 * 1048576 - tree - 262144)) 'BEGIN {printf "%.2f", int(r / 10000) / 100}')
    awk -v m="$PART_MB" 'BEGIN {exit !(m > 0)}' || { echo "the repository ($tree bytes) leaves no room to carry" >&2; exit 1; }
    echo "the repository sends $tree bytes: parts of at most $PART_MB MB"
  fi
  tmp=$(mktemp -d)
  $PY -c 'import lzma, sys, tarfile
with tarfile.open(sys.argv[1], "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
    for name in ("train.txt", "valid.txt"):
        tar.add(f"{sys.argv[2]}/{name}", name)' "$tmp/corpus.tar.xz" "$corpus"
  rm -rf "$dest"
  $PY -m dllm.parts split "$tmp/corpus.tar.xz" "$dest" --max-mb "$PART_MB"
  rm -r "$tmp"
  local parts=("$dest"/corpus.tar.xz.[0-9][0-9][0-9]) rel call
  rel=$(realpath --relative-to=.. "$dest")
  echo "run calls, each at once after the last (a machine goes back 30 s after a call, with what was carried):"
  for part in "${parts[@]}"; do
    call="command=\"ls -l $rel\", timeout_s=60"
    [ "$part" = "${parts[-1]}" ] && call='command="bash models/train_gpu.sh", timeout_s=600'
    echo "  run($call, carry=[\"$rel/corpus.tar.xz.parts.json\", \"$rel/$(basename "$part")\"])"
  done
}

# A step count of the recipe, scaled (at least 1).
steps() { awk -v n="$1" -v s="${STEP_SCALE:-1}" 'BEGIN {v = int(n * s + 0.5); print (v < 1 ? 1 : v)}'; }

# --time-limit-min for a phase planned for $1 of the $2 steps still to run, $3 phases (each starting up) to go: its
# share of the time left before the deadline, less the start-ups and the packing at the end. A phase that ends by its
# steps leaves its unused time to the next.
minutes() {
  awk -v planned="$1" -v left="$2" -v phases="$3" -v now="$SECONDS" -v deadline="$deadline" \
    -v startup="${STARTUP_S:-45}" -v finish="${FINISH_S:-30}" \
    'BEGIN {s = (deadline - now - startup * phases - finish) * planned / left; printf "%.2f", (s < 1 ? 1 : s) / 60}'
}

phase() {
  echo "+ dllm.train $* ${extra[*]}" >> "$OUT/train.log"
  "$PY" -m dllm.train "$@" "${extra[@]}" 2>&1 | tee -a "$OUT/train.log"
}

train() {
  : "${OUT:?OUT: the folder for what comes back (the device run sets it)}"
  local device=${DEVICE:-cuda} corpus=${CORPUS:-.cache/gpu-corpus} ar="$RUNS/gpu-ar" dream="$RUNS/gpu-dream"
  deadline=$((SECONDS + $(awk -v m="${BUDGET_MIN:-9}" 'BEGIN {print int(m * 60)}')))
  read -ra extra <<< "${TRAIN_ARGS:-}"
  mkdir -p "$OUT" "$RUNS"
  if [ ! -f "$corpus/train.txt" ]; then  # pack's parts: joined (every sha256 checked) and unpacked once
    if [ ! -f "$RUNS/gpu-corpus/valid.txt" ]; then
      $PY -m dllm.parts join "$corpus/corpus.tar.xz.parts.json" "$RUNS/gpu-corpus.tar.xz"
      mkdir -p "$RUNS/gpu-corpus"
      $PY -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], **(
        {"filter": "data"} if hasattr(tarfile, "data_filter") else {}))' "$RUNS/gpu-corpus.tar.xz" "$RUNS/gpu-corpus"
    fi
    corpus="$RUNS/gpu-corpus"
  fi
  [ "$device" = cpu ] || { nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; } | tee -a "$OUT/train.log"
  local model=(--corpus "$corpus" --tokenizer tiny-llada/tokenizer.json --d-model 256 --n-heads 8 --n-layers 8
    --mlp-hidden 768 --seq-len 512 --batch-size 64 --eval-every "$(steps 200)" --valid-windows 64 --device "$device"
    --threads "$(nproc)" --ckpt-every "$(steps 400)")
  # Phase 1, autoregressive (train_dream.sh's flags): 800 of 2,400 planned steps.
  phase --out "$ar" "${model[@]}" --objective ar --lr 1.5e-3 --warmup "$(steps 100)" --max-steps "$(steps 2400)" \
    --halt-at-step "$(steps 800)" --time-limit-min "$(minutes 800 3900 3)"
  # Phase 2, adaptation: 1,300 steps, then resumed to 3,100.
  local adapt=(--out "$dream" "${model[@]}" --init-from "$ar/ckpt.pt" --shift-logits --anneal-steps "$(steps 300)"
    --lr 1e-3 --warmup "$(steps 50)")
  phase "${adapt[@]}" --max-steps "$(steps 1300)" --time-limit-min "$(minutes 1300 3100 2)"
  phase "${adapt[@]}" --max-steps "$(steps 3100)" --time-limit-min "$(minutes 1800 1800 1)"

  # Both runs, their checkpoints stripped, in one tar cut into parts. The autoregressive checkpoint (read by dllm.card
  # alone) stays behind if with it the tar would pass 64 MB: 4 parts, which with the manifest and train.log are 6 of
  # the 8 files and about 60 of the 64 MiB a call brings back.
  local bundle="$RUNS/gpu-bundle"
  rm -rf "$bundle" && mkdir -p "$bundle/gpu-ar" "$bundle/gpu-dream"
  for run in gpu-ar gpu-dream; do
    cp "$RUNS/$run/log.jsonl" "$bundle/$run/"
    $PY -m dllm.parts strip "$RUNS/$run/ckpt.pt" "$bundle/$run/ckpt.pt"
  done
  if [ "$(du -sb "$bundle" | cut -f1)" -gt 64000000 ]; then
    rm "$bundle/gpu-ar/ckpt.pt"
    echo "gpu-ar/ckpt.pt left behind: with it the parts would not all come back" | tee -a "$OUT/train.log"
  fi
  tar -C "$bundle" -cf "$RUNS/gpu-run.tar" gpu-ar gpu-dream
  $PY -m dllm.parts split "$RUNS/gpu-run.tar" "$OUT" --max-mb "${RETURN_PART_MB:-16}" | tee -a "$OUT/train.log"
  echo "done in $SECONDS s; back: $(ls "$OUT" | wc -l) files, $(du -sb "$OUT" | cut -f1) bytes" | tee -a "$OUT/train.log"
}

unpack() {
  local returned=${arg:?unpack DIR: the folder the files of the run call came back to} folder=${FOLDER:-tiny-dream-gpu} size
  $PY -m dllm.parts join "$returned/gpu-run.tar.parts.json" "$RUNS/gpu-run.tar"
  tar -C "$RUNS" -xf "$RUNS/gpu-run.tar"
  [ -f "$returned/train.log" ] && cp "$returned/train.log" "$RUNS/gpu-dream/train.log"
  # As train_dream.sh exports tiny-dream (blocks of 8, its presence and frequency penalties).
  $PY -m dllm.export --checkpoint "$RUNS/gpu-dream/ckpt.pt" --tokenizer tiny-llada/tokenizer.json --out "$folder" \
    --name "$(basename "$folder")" --block-length 8 --frequency-penalty 0.5 --presence-penalty 1.5
  size=$(($(stat -c %s "$folder/model.onnx") + $(stat -c %s "$folder/weights.data")))
  echo "$folder: model.onnx + weights.data = $size bytes"
  [ "$size" -le 40000000 ] || { echo "over 40 MB" >&2; exit 1; }
}

case $command in
  pack | train | unpack) $command ;;
  *) echo "usage: train_gpu.sh [pack [CORPUS] | train | unpack DIR]" >&2; exit 2 ;;
esac
