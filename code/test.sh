#!/usr/bin/env bash
# Stage 4 driver: each fold's best model (or CHECKPOINT) predicts class probabilities for every test image.
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in $TASKS; do
  for fold in $FOLDS; do
    out=$(search_dir "$task")/test-fold$fold/summary.json
    if [ -f "$out" ] && [ "$FORCE" != 1 ]; then echo "[test-infer] $task fold $fold: done, skipping"; continue; fi
    echo "[test-infer] $task fold $fold"
    # shellcheck disable=SC2046
    launch test.py $(common_args "$task") --split test --fold "$fold" $(checkpoint_arg "$task" "$fold") --tta "$TTA"
  done
done
