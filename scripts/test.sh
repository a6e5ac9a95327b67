#!/usr/bin/env bash
# The whole test suite on a fresh clone (Debian 12): installs what the tests need when it is missing (Debian packages,
# with sudo when not root; the npm packages), then runs `npm test` (Python model toolkit, then Node). .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# onnxruntime-node must not download CUDA libraries (the CPU provider is bundled).
export ONNXRUNTIME_NODE_INSTALL=skip

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The playground's browser test drives Debian's Chromium (test/playground); it fails, not skips, without it.
[ -x /usr/bin/chromium ] || need+=(chromium)
# fortunes: a source of the tiny model's corpus (models/tests build it); docker-compose: the compose v1 config check.
# python3-matplotlib: the model card's plots (models/tests/test_quality.py renders a card).
for pkg in python3 python3-torch python3-onnx python3-numpy python3-pytest python3-regex python3-matplotlib libopenblas0-pthread fortunes fortunes-min docker-compose; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# The corpus (models/dllm/data.py, built by the Python tests) downloads pinned .debs: it needs package lists.
if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The Debian python3 packages live on /usr/bin/python3: make sure the tests use it, not another python3 on PATH.
if ! python3 -c 'import torch, onnx, numpy, pytest' >/dev/null 2>&1; then
  export PATH="/usr/bin:$PATH"
fi

node --version
npm ci --no-audit --no-fund
npm test
