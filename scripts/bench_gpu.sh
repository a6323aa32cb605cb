#!/usr/bin/env bash
# GPU benchmarks, ours vs MONAI's DiNTS: the Task09_Spleen preset's search and retraining iterations at
# 96³ with mixed precision, sliding-window inference on a 512×512×100 volume, peak GPU memory and iterations per
# second; the plan's check (a Task09-like dataset planned for the GPU's memory by code/plan.py's rules, one search and
# one retraining iteration at the planned patch and batch: measured peak against predicted); the memory predictor's
# check on the GPU when scripts/bench_memory.py exists. Under 8 minutes on one H200.
# Writes gpu.json and gpu.log to $OUT (default docs/bench-results), then the benchmarks page with the GPU section
# from every saved result: docs/benchmarks.md, and $OUT/benchmarks.md when OUT is set.
#
#   bash scripts/bench_gpu.sh [--tiny] [more scripts/bench_gpu.py options]
#
# Environment: PYTHON (default python3) must import torch (CUDA build), monai, nibabel and yaml (PyYAML); put the
# ones it lacks on PYTHONPATH. BENCH_GPU_TINY=1 is --tiny: tiny sizes, on the CPU without a GPU (the tests' check);
# its results and page go to $OUT only (default a new temporary folder), never to docs/. BENCH_MEMORY_ARGS: extra
# options of bench_memory.py.
set -euo pipefail
if [ -n "${OUT:-}" ]; then OUT=$(realpath -m "$OUT"); fi
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
args=("$@")
if [ "${BENCH_GPU_TINY:-0}" = 1 ]; then args+=(--tiny); fi
tiny=0
for a in ${args[@]+"${args[@]}"}; do if [ "$a" = --tiny ]; then tiny=1; fi; done
if [ -n "${OUT:-}" ]; then OUT_DIR=$OUT
elif [ "$tiny" = 1 ]; then OUT_DIR=$(mktemp -d -t bench-gpu-tiny-XXXXXX)
else OUT_DIR=docs/bench-results
fi
if ! "$PYTHON" -c "import torch, monai, nibabel, yaml" 2>/dev/null; then
  echo "bench_gpu.sh: $PYTHON cannot import torch, monai, nibabel and yaml (put the missing ones on PYTHONPATH)" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
"$PYTHON" scripts/bench_gpu.py --out "$OUT_DIR/gpu.json" ${args[@]+"${args[@]}"} 2>&1 | tee "$OUT_DIR/gpu.log"
saved=()
for f in docs/bench-results/*.json; do
  if [ -f "$f" ] && [ "$f" != "$OUT_DIR/gpu.json" ]; then saved+=("$f"); fi
done
docs=()
if [ -n "${OUT:-}" ] || [ "$tiny" = 1 ]; then docs+=("$OUT_DIR/benchmarks.md"); fi
if [ "$tiny" = 0 ]; then docs+=(docs/benchmarks.md); fi
for doc in "${docs[@]}"; do
  "$PYTHON" scripts/make_benchmarks_doc.py --from ${saved[@]+"${saved[@]}"} "$OUT_DIR/gpu.json" --out "$doc"
done
echo "bench_gpu.sh: results in $OUT_DIR; page(s): ${docs[*]}"
