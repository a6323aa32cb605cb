#!/usr/bin/env bash
# Stage 0 driver: each task's fingerprint (code/plan.py, <work_root>/<task>/fingerprint.json; reused while the
# task's files are unchanged) and plan (<work_root>/<task>/plan.yaml, patches and batches sized for GPU_MB).
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in $TASKS; do
  echo "[plan] $task: fingerprint and plan"
  # shellcheck disable=SC2046
  launch plan.py $(common_args "$task") $(gpu_mb_arg) || exit $?
done
