#!/usr/bin/env bash
# Chain the DiNTS stages per task and fold.
#
#   bash code/main.sh N      N = 1 search, 2 retrain, 3 test on validation, 4 inference on test data,
#                            5 fuse the folds, 6 resample to the original images
#   bash code/main.sh all    every stage, in order
#
# Settings are variables (see code/common.sh), each overridable from the environment, e.g.
#   TASKS=Task99_Demo PRESET=configs/tiny.yaml DATA_ROOT=data WORK_ROOT=work bash code/main.sh all
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

DRIVERS=(search.sh retrain.sh test_val.sh test.sh fuse.sh fuse.sh)
NAMES=(search retrain test-val test-infer fuse resample)

run_stage() {
  local n=$1 driver=${DRIVERS[$(($1 - 1))]}
  echo "[main] stage $n (${NAMES[$((n - 1))]})"
  STAGE=$n bash "$HERE/$driver"
}

case "${1:-}" in
  [1-6]) run_stage "$1" ;;
  all)
    for n in 1 2 3 4 5 6; do run_stage "$n"; done
    for task in $TASKS; do
      # shellcheck disable=SC2046,SC2086
      "$PYTHON" "$HERE/report.py" $(common_args "$task") --folds $FOLDS
    done
    ;;
  *) echo "usage: bash code/main.sh N|all   (N = 1..6)" >&2; exit 2 ;;
esac
