#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned requirements, Debian's graphviz when `dot` is missing,
# (with --with-horovod) Horovod 0.28.1 built for PyTorch + Gloo, and (with --with-browser) Debian's chromium.
#
#   bash scripts/setup.sh [--with-horovod] [--with-browser]
#
# Environment: VENV (default .venv), PYTHON (default python3), HOROVOD_WHEEL_DIR (default ~/.cache/dints-wheels),
# TORCH_INDEX_URL (a PyTorch wheel index, e.g. https://download.pytorch.org/whl/cu128, for the CUDA build of the
# pinned torch), HOROVOD_GPU_OPERATIONS (NCCL: build Horovod for GPUs too; needs the CUDA toolkit and NCCL headers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
WHEELS=${HOROVOD_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dints-wheels}
GPU_OPS=${HOROVOD_GPU_OPERATIONS:-}
if [ -n "$GPU_OPS" ]; then WHEELS="$WHEELS/$(echo "$GPU_OPS" | tr '[:upper:]' '[:lower:]')"; fi
WITH_HOROVOD=0
WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --with-horovod) WITH_HOROVOD=1 ;;
    --with-browser) WITH_BROWSER=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (expected --with-horovod or --with-browser)" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*"; }

# apt_package COMMAND PACKAGE WHAT: install the Debian PACKAGE when COMMAND is missing (as root), else warn that
# WHAT will be skipped.
apt_package() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian $2"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || apt-get update
    apt-get install -y -qq "$2" >/dev/null || apt-get install -y "$2"
  else
    log "warning: '$1' ($2) is missing and cannot be installed without root; $3 will be skipped"
  fi
}

# 1. System packages: graphviz's `dot` renders architecture pictures; chromium checks the results page in a browser.
apt_package dot graphviz "pictures"
if [ "$WITH_BROWSER" = 1 ]; then apt_package chromium chromium "the browser test"; fi

# 2. Virtual environment with the pinned requirements (pip skips what is already satisfied).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    torch_pin=$(grep -E '^torch==' requirements.txt)
    log "installing $torch_pin from $TORCH_INDEX_URL"
    "$PY" -m pip install -q --disable-pip-version-check --index-url "$TORCH_INDEX_URL" "$torch_pin"
  fi
  log "installing requirements.txt"
  "$PY" -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
else
  log "requirements already installed"
fi

# 3. Horovod 0.28.1 for PyTorch with Gloo, built from the sdist with C++17 (its CMakeLists ask for C++14,
#    which torch 2.x headers reject), after torch, without build isolation. A built wheel is reused. An exported
#    HOROVOD_GPU_OPERATIONS=NCCL reaches the build (and keeps its wheel apart from the CPU one).
if [ "$WITH_HOROVOD" = 1 ]; then
  if "$PY" -c "import horovod.torch" >/dev/null 2>&1; then
    log "horovod already installed"
  else
    mkdir -p "$WHEELS"
    wheel=$(ls "$WHEELS"/horovod-0.28.1-*.whl 2>/dev/null | head -n 1 || true)
    if [ -z "$wheel" ]; then
      log "building horovod 0.28.1${GPU_OPS:+ with $GPU_OPS} (about 5 minutes)"
      command -v cmake >/dev/null 2>&1 || "$PY" -m pip install -q cmake
      build=$(mktemp -d)
      trap 'rm -rf "$build"' EXIT
      "$PY" -m pip download -q --no-deps --no-binary :all: -d "$build" horovod==0.28.1
      tar -xzf "$build"/horovod-0.28.1.tar.gz -C "$build"
      src="$build/horovod-0.28.1"
      sed -i 's/CMAKE_CXX_STANDARD 14/CMAKE_CXX_STANDARD 17/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
      grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"
      "$PY" -m pip install -q wheel setuptools
      HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
      HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS="-j$(nproc)" \
        "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$src"
      wheel=$(ls "$WHEELS"/horovod-0.28.1-*.whl | head -n 1)
    fi
    log "installing $(basename "$wheel")"
    "$PY" -m pip install -q --no-deps "$wheel"
    # horovod's runtime needs (psutil, cloudpickle, pyyaml, packaging) are pinned in requirements.txt.
    "$PY" -c "import horovod.torch as hvd; print('[setup] horovod', hvd.__version__ if hasattr(hvd, '__version__') else 'ok')"
  fi
fi
log "done ($VENV)"
