#!/usr/bin/env bash
# Benchmarks on a Linux machine with an NVIDIA GPU and no network (MLX's CUDA backend).
#
#   bash bench/gpu.sh pack             here: fetch the wheels, split the CUDA one (see below)
#   bash bench/gpu.sh stage            there: keep part one of the CUDA backend in /tmp/gpu
#   bash bench/gpu.sh run BENCH ARGS   there: unpack the rest, run python -m bench.BENCH ARGS
#                                      ($OUT/BENCH.json, or $OUT/$RESULT.json: several runs in
#                                      one call, e.g. RESULT=a bash bench/gpu.sh run ...; RESULT=b ...)
#
# Why three steps: the mlx-cuda wheel is ~90 MB and one transfer carries at most 64 MiB, so it
# travels xz-compressed in two parts (.gpu/p1 with `stage`, .gpu/p2 with `run`), each in a
# git-ignored folder the transfer carries by name. `run` writes its JSON report into $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
MLX=0.32.4 MLX_LM=0.32.2 MLX_VLM=0.7.10 PY=3.12
SITE=/tmp/gpu/site
# What `mlxnb serve` needs that the GPU machine's image lacks (bench_load, bench_server), pinned
# to what the project's own environment resolved.
SERVER="fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.14.4 pydantic-core==2.50.5
  typing-inspection==0.4.5 typing-extensions==4.16.0 annotated-types==0.8.0 annotated-doc
  opentelemetry-api==1.45.2 importlib-metadata zipp click h11 anyio"

pack() {
  rm -rf .gpu && mkdir -p .gpu/p1 .gpu/p2/wheels .gpu/cuda
  "${PIP:-pip}" download --quiet --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_35_x86_64 -d .gpu/dl "mlx==$MLX" "mlx-cuda-13==$MLX" \
    "mlx-lm==$MLX_LM" "mlx-vlm==$MLX_VLM"
  # shellcheck disable=SC2086
  "${PIP:-pip}" download --quiet --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/dl $SERVER
  python3 -m zipfile -e .gpu/dl/mlx_cuda_13-*.whl .gpu/cuda
  (cd .gpu/cuda && tar cf - . | xz -9 -T2) | split -b 38M - .gpu/part.
  mv .gpu/part.aa .gpu/p1/cuda.part && mv .gpu/part.ab .gpu/p2/cuda.part
  find .gpu/dl -name '*.whl' ! -name 'mlx_cuda*' -exec cp {} .gpu/p2/wheels/ \;
  tar cf - -C "${MLXNB_CACHE:-$HOME/.cache/mlxnb}" tokenizers | xz -T2 > .gpu/p2/tokenizers.tar.xz
  rm -rf .gpu/dl .gpu/cuda
  du -sh .gpu/p1 .gpu/p2
}

stage() {
  mkdir -p /tmp/gpu && cp .gpu/p1/cuda.part /tmp/gpu/cuda.part.1
}

unpack() {
  [ -d "$SITE/mlx" ] && return
  if [ ! -f /tmp/gpu/cuda.part.1 ]; then
    echo "gpu.sh: part one of the CUDA backend is not here: run 'bash bench/gpu.sh stage'" \
      "(carrying .gpu/p1) on this machine first, then 'run' within its idle window" >&2
    exit 2
  fi
  mkdir -p "$SITE" /tmp/gpu/cache
  cat /tmp/gpu/cuda.part.1 .gpu/p2/cuda.part | xz -d | tar xf - -C "$SITE"
  for wheel in .gpu/p2/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$SITE"; done
  xz -d < .gpu/p2/tokenizers.tar.xz | tar xf - -C /tmp/gpu/cache
  mkdir -p ~/.cache/huggingface/hub
}

run() {
  unpack
  local bench=$1; shift
  export PYTHONPATH="$SITE:$PWD" MLXNB_CACHE=/tmp/gpu/cache HF_HUB_OFFLINE=1
  python3 -c 'import mlx.core as mx; print("device:", mx.default_device())'
  python3 -m "bench.$bench" "$@" --json "${OUT:-/tmp}/${RESULT:-$bench}.json"
}

"$@"
