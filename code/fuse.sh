#!/usr/bin/env bash
# Stage 5 driver (STAGE=5): fuse the folds' test probabilities. Stage 6 (STAGE=6): resample the fused labels to the
# original images, with MSD_SIZE (written from the task's images when missing).
set -euo pipefail
source "$(dirname "$0")/common.sh"
STAGE=${STAGE:-5}
for task in $TASKS; do
  if [ "$STAGE" = 6 ]; then
    if [ -f "$(layout_path resample "$task")" ] && [ "$FORCE" != 1 ]; then echo "[resample] $task: done, skipping"; continue; fi
    size=${MSD_SIZE:-$(layout_path msd_size "$task")}
    if [ ! -f "$size" ] || ! grep -q "\"$task\"" "$size"; then
      "$PYTHON" "$REPO_DIR/scripts/make_msd_size.py" "$DATA_ROOT/$task" --out "$size"
    fi
    echo "[resample] $task"
    # shellcheck disable=SC2046,SC2086
    "$PYTHON" "$CODE_DIR/fuse.py" $(common_args "$task") --folds $FOLDS --resample 1 --msd_size "$size"
  else
    if [ -f "$(layout_path fuse "$task")" ] && [ "$FORCE" != 1 ]; then echo "[fuse] $task: done, skipping"; continue; fi
    echo "[fuse] $task"
    # shellcheck disable=SC2046,SC2086
    "$PYTHON" "$CODE_DIR/fuse.py" $(common_args "$task") --folds $FOLDS
  fi
done
