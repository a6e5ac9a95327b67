# syntax=docker/dockerfile:1.7
#
# dllm-serve images (docs/deploy.md). Two targets share the build stages:
#
#   docker build --target cuda -t dllm-serve:cuda .   # NVIDIA GPU: CUDA 12 + cuDNN 9 runtime and the Vulkan loader,
#                                                     # for the CUDA or the WebGPU execution provider
#   docker build --target cpu  -t dllm-serve:cpu  .   # CPU only (also the image of API replicas, which load no ONNX)
#   docker build --target converter -t dllm-convert .  # models/dllm/convert.py with Debian 12's torch (no server)
#
# Both serve the tiny model baked in at /app/models/tiny-dream by default; mount other model folders at /models
# and set MODEL_DIR. The entry command is `sh docker/entrypoint.sh node dist/src/main.js` (ENTRYPOINT + CMD) run
# in WORKDIR /app, and every path in ENV is relative to it, so the same command with the same environment also runs
# from a checkout after `npm run build` (test/deploy/entry_command.test.ts does exactly that).
#
# Bases are pinned by exact tag; pin by digest too for reproducible builds, e.g.
#   docker build --build-arg NODE_IMAGE=node:24.11.1-bookworm-slim@sha256:<digest> ...
# (`docker buildx imagetools inspect <image>` prints the digest).

# Node 24 LTS. Its binary is also copied into the CUDA image (glibc 2.28+; Ubuntu 24.04 has 2.39).
ARG NODE_IMAGE=node:24.11.1-bookworm-slim
# onnxruntime-node 1.30's CUDA execution provider (NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux 1.30.0, manifest
# "cuda12") links CUDA 12.x (libcudart.so.12, libcublas(Lt).so.12, libcufft.so.11, libcurand.so.10) and cuDNN 9
# (libcudnn.so.9). Any CUDA 12.x runtime with cuDNN 9 works (CUDA minor-version compatibility); not CUDA 11 or 13,
# not cuDNN 8. Host driver: >= 570 for 12.8 (>= 525 via minor-version compatibility, without PTX JIT).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
# The converter's Python toolchain: Debian 12's torch 1.13.1, onnx and numpy, as on the machines CI runs on.
ARG DEBIAN_IMAGE=debian:12.12-slim

FROM ${NODE_IMAGE} AS node

# ---- build: the TypeScript toolchain (dev dependencies), compiled to dist/ --------------------------------------
FROM node AS build
WORKDIR /app
# Install scripts are skipped everywhere (--ignore-scripts) and the one that matters, onnxruntime-node's, is run
# explicitly where it is wanted: recent npm 11 releases block dependency install scripts by default unless
# package.json approves them (allowScripts), so an install that relied on them would silently lack the CUDA EP.
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json .npmrc ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# ---- production dependencies, CPU: no CUDA libraries downloaded ----------------------------------------------------
FROM node AS deps-cpu
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# ---- production dependencies, CUDA: onnxruntime-node's install script fetches the CUDA EP from NuGet ---------------
# (libonnxruntime_providers_cuda.so, _shared.so and _tensorrt.so into bin/napi-v6/linux/x64/; the .npmrc "skip"
# is overridden by the environment variable, install-utils.js parseInstallFlag).
FROM node AS deps-cuda
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=cuda12
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force \
 && node node_modules/onnxruntime-node/script/install.js \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so

# ---- converter: Hugging Face LLaDA checkpoint -> model folder (models/dllm/convert.py), same toolchain as CI --------
# docker build --target converter -t dllm-convert .
# docker run --rm -v /srv/dllm:/data dllm-convert --checkpoint /data/hf/LLaDA-8B-Instruct --out /data/models/llada-8b-instruct --fp16
FROM ${DEBIAN_IMAGE} AS converter
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-torch python3-onnx python3-numpy python3-regex libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dllm
WORKDIR /opt/dllm
COPY models/dllm ./dllm
# Run with --user "$(id -u):$(id -g)" to write into a host folder as yourself; HOME for torch's caches either way.
ENV HOME=/tmp
USER dllm
ENTRYPOINT ["python3", "-m", "dllm.convert"]
CMD ["--help"]

# ---- CPU image ------------------------------------------------------------------------------------------------------
FROM node AS cpu
ENV NODE_ENV=production \
    ROLE=all \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=models/tiny-dream \
    EXECUTION_PROVIDER=cpu
WORKDIR /app
COPY --from=deps-cpu /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# Static assets tsc does not copy; src/playground/plugin.ts reads them from <package root>/src/playground/public.
COPY src/playground/public ./src/playground/public
COPY models/tiny-dream ./models/tiny-dream
COPY docker/entrypoint.sh docker/healthcheck.mjs ./docker/
# Files stay root-owned and read-only to the server; it writes nothing. The base image's `node` user (uid 1000).
USER node
EXPOSE 8000
VOLUME ["/models"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["node", "docker/healthcheck.mjs"]
ENTRYPOINT ["sh", "docker/entrypoint.sh"]
CMD ["node", "dist/src/main.js"]

# ---- CUDA image -----------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda
ARG CUDA_IMAGE
COPY --from=node /usr/local/bin/node /usr/local/bin/node
# libvulkan1: the Vulkan loader, through which onnxruntime-node's WebGPU provider (Dawn) reaches the GPU; the NVIDIA
# Container Toolkit mounts the driver's Vulkan ICD when the container asks for the `graphics` capability (below).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvulkan1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 dllm \
 && useradd --system --uid 10001 --gid dllm --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dllm \
 && mkdir -p /var/lib/dllm/gpu-leases && chown dllm:dllm /var/lib/dllm/gpu-leases \
 && node --version
ENV NODE_ENV=production \
    ROLE=all \
    HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_DIR=models/tiny-dream \
    EXECUTION_PROVIDER=cuda \
    CUDA_DEVICE_ORDER=PCI_BUS_ID \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
WORKDIR /app
COPY --from=deps-cuda /app/node_modules ./node_modules
# Fail the build, not the first request, when this base lacks a library the CUDA EP links against. libcuda.so.1
# comes from the host driver at run time (NVIDIA Container Toolkit) and is not in the image; the EP's own folder is
# on the search path as ONNX Runtime loads libonnxruntime_providers_shared.so from there first.
RUN ep=node_modules/onnxruntime-node/bin/napi-v6/linux/x64 \
 && test -f "$ep/libonnxruntime_providers_cuda.so" \
 && missing="$(LD_LIBRARY_PATH="$ep${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$ep/libonnxruntime_providers_cuda.so" | grep 'not found' | grep -v 'libcuda\.so' || true)" \
 && if [ -n "$missing" ]; then echo "CUDA EP libraries missing from ${CUDA_IMAGE}:"; echo "$missing"; exit 1; fi
COPY --from=build /app/dist ./dist
COPY package.json ./
# Static assets tsc does not copy; src/playground/plugin.ts reads them from <package root>/src/playground/public.
COPY src/playground/public ./src/playground/public
COPY models/tiny-dream ./models/tiny-dream
COPY docker/entrypoint.sh docker/healthcheck.mjs ./docker/
USER dllm
EXPOSE 8000
VOLUME ["/models"]
# A converted 8B model takes minutes to load; compose.yaml gives workers a longer start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 CMD ["node", "docker/healthcheck.mjs"]
ENTRYPOINT ["sh", "docker/entrypoint.sh"]
CMD ["node", "dist/src/main.js"]
