#!/usr/bin/env bash
# Stage 0 driver: each task's fingerprint (code/plan.py, <work_root>/<task>/fingerprint.json); reused while the
# task's files are unchanged.
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in $TASKS; do
  echo "[plan] $task: fingerprint"
  # shellcheck disable=SC2046
  launch plan.py $(common_args "$task") || exit $?
done
