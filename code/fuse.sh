#!/usr/bin/env bash
# Stage 5 driver (STAGE=5): fuse the folds' test probabilities (FOLDS; unset: every fold). Stage 6 (STAGE=6):
# resample the fused labels to the original images (MSD_SIZE, when set, cross-checks their sizes).
# Stage 5 fuses again when asked for other folds than it last fused, and stage 6 resamples again after it.
set -euo pipefail
source "$(dirname "$0")/common.sh"
STAGE=${STAGE:-5}
if [ "$STAGE" = 6 ]; then
  name=resample extra=(--resample 1 ${MSD_SIZE:+--msd_size "$MSD_SIZE"})
else
  name=fuse extra=()
fi
for task in $TASKS; do
  # shellcheck disable=SC2046
  out=$(stage_status "$name" $(common_args "$task") $(folds_arg) "${extra[@]}")
  read -r _ what marker <<< "$out"
  case $what in
    none) echo "[$name] $task: dataset.json lists no test images, nothing to $name"; continue ;;
    done) echo "[$name] $task: done ($marker), skipping"; continue ;;
  esac
  echo "[$name] $task: $(preset_note "$task")"
  # shellcheck disable=SC2046
  forward_signals "$PYTHON" "$CODE_DIR/fuse.py" $(common_args "$task") $(folds_arg) "${extra[@]}"
done
