#!/bin/sh
# Entry point of both images (Dockerfile: ENTRYPOINT ["sh", "docker/entrypoint.sh"], CMD ["node", "dist/src/main.js"]).
# Run from the image's WORKDIR (/app) or from a checkout after `npm run build`: nothing here depends on the image.
#
# GPU pinning for `docker compose up --scale worker=N`. Docker gives a `count: N` GPU reservation the first N GPUs
# in every container (NVIDIA_VISIBLE_DEVICES=0..N-1), so replicas of one service cannot be told apart by their
# reservation. compose.yaml therefore gives each worker every GPU and a volume shared by the workers of the host,
# GPU_LEASE_DIR: a worker with no DEVICE_ID takes the first GPU whose lock file it can flock, keeps the lock open
# for its whole life (the kernel drops it when the process dies, however it dies) and exports DEVICE_ID. A worker
# that finds every GPU taken exits with status 3 and says so.
#   GPU_LEASE_DIR      the shared directory; unset = no leasing (DEVICE_ID as given, default 0)
#   GPU_LEASE_DEVICES  GPUs this host's workers may take, e.g. "0,1,2,3"; default: every GPU the container sees
#                      (nvidia-smi, else the /dev/nvidiaN device files)
set -eu

if [ -n "${GPU_LEASE_DIR:-}" ] && [ -z "${DEVICE_ID:-}" ] \
  && [ "${ROLE:-all}" != "api" ] && [ "${EXECUTION_PROVIDER:-cpu}" != "cpu" ]; then
  devices="$(printf '%s' "${GPU_LEASE_DEVICES:-}" | tr ',' ' ')"
  if [ -z "$devices" ] && command -v nvidia-smi >/dev/null 2>&1; then
    devices="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' | tr '\n' ' ' || true)"
  fi
  if [ -z "$devices" ]; then
    devices="$(ls /dev 2>/dev/null | sed -n 's/^nvidia\([0-9][0-9]*\)$/\1/p' | sort -n | tr '\n' ' ')"
  fi
  if [ -z "$(printf '%s' "$devices" | tr -d ' ')" ]; then
    echo "dllm-serve: GPU_LEASE_DIR is set but this container sees no GPU (is the NVIDIA Container Toolkit installed, and does the service reserve GPUs?)" >&2
    exit 3
  fi
  mkdir -p "$GPU_LEASE_DIR"
  leased=""
  for d in $devices; do
    exec 9>>"$GPU_LEASE_DIR/gpu-$d.lock"
    if flock -n 9; then
      leased="$d"
      : >"$GPU_LEASE_DIR/gpu-$d.lock"
      break
    fi
    exec 9>&-
  done
  if [ -z "$leased" ]; then
    echo "dllm-serve: every GPU ($devices) is held by another worker on this host; run at most one worker per GPU" >&2
    exit 3
  fi
  printf '%s pid %s\n' "$(uname -n)" "$$" >&9
  DEVICE_ID="$leased"
  export DEVICE_ID
  echo "dllm-serve: worker pinned to GPU $leased (lock $GPU_LEASE_DIR/gpu-$leased.lock)" >&2
fi

# Descriptor 9 (the lock, when taken) stays open across exec: the lease lives exactly as long as the server.
if [ "$#" -eq 0 ]; then
  set -- node dist/src/main.js
fi
exec "$@"
