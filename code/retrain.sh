#!/usr/bin/env bash
# Stage 2 driver: retrain the searched architecture on every fold in FOLDS.
# A fold is skipped when retrain-fold<k>/summary.json exists (FORCE=1 redoes it); an interrupted one resumes.
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in $TASKS; do
  for fold in $FOLDS; do
    out=$(search_dir "$task")/retrain-fold$fold/summary.json
    if [ -f "$out" ] && [ "$FORCE" != 1 ]; then echo "[retrain] $task fold $fold: done, skipping"; continue; fi
    resume=(); [ "$FORCE" = 1 ] && resume=(--resume no)
    echo "[retrain] $task fold $fold"
    # shellcheck disable=SC2046
    launch retrain.py $(common_args "$task") --fold "$fold" $(arch_arg) "${resume[@]}"
  done
done
