#!/usr/bin/env bash
# Stage 3 driver: evaluate each fold's best model (or CHECKPOINT) on its validation cases.
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in $TASKS; do
  for fold in $FOLDS; do
    out=$(search_dir "$task")/val-fold$fold/summary.json
    if [ -f "$out" ] && [ "$FORCE" != 1 ]; then echo "[test-val] $task fold $fold: done, skipping"; continue; fi
    echo "[test-val] $task fold $fold"
    # shellcheck disable=SC2046
    launch test.py $(common_args "$task") --split val --fold "$fold" $(checkpoint_arg "$task" "$fold")
  done
done
