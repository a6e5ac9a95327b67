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

# The WebGPU tests (test/engine/golden_webgpu.test.ts, models/tests/test_device_graph.py, test/engine/webgpu.test.ts)
# run onnxruntime-node's WebGPU provider on Mesa's lavapipe, a Vulkan driver on the CPU: Mesa 25 from
# bookworm-backports (bookworm's Mesa 22 lacks a feature Dawn requires) and the Vulkan loader. bookworm-backports is
# added to apt's sources from the URI of the machine's own bookworm entry when it is not there.
if ! dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^2[5-9]\.'; then
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uri="$(awk 'BEGIN { RS = "" } /(^|\n)Suites:[^\n]*bookworm( |\n|$)/ {
                  n = split($0, lines, "\n")
                  for (i = 1; i <= n; i++) if (lines[i] ~ /^URIs:/) { split(lines[i], f, " "); print f[2]; exit }
                }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
    [ -n "$uri" ] || uri="$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)"
    [ -n "$uri" ] || { echo "no bookworm entry in apt's sources to take bookworm-backports' URI from" >&2; exit 1; }
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
      | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  echo "installing: mesa-vulkan-drivers libvulkan1 (bookworm-backports)"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers libvulkan1
fi

# The Debian python3 packages live on /usr/bin/python3: make sure the tests use it, not another python3 on PATH.
if ! python3 -c 'import torch, onnx, numpy, pytest' >/dev/null 2>&1; then
  export PATH="/usr/bin:$PATH"
fi

node --version
npm ci --no-audit --no-fund
npm test
