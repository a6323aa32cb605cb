#!/usr/bin/env bash
# Stage 1 driver: search one architecture per task (on SEARCH_FOLD). Skipped, unless FORCE=1, when the search's
# summary.json exists: it is written last, after arch.json, arch.pth and the pictures.
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in $TASKS; do
  out=$(layout_path search "$task")
  if [ -f "$out" ] && [ "$FORCE" != 1 ]; then
    echo "[search] $task: $out exists, skipping (FORCE=1 to redo)"
    continue
  fi
  echo "[search] $task fold $SEARCH_FOLD"
  # shellcheck disable=SC2046
  launch search.py $(common_args "$task") --fold "$SEARCH_FOLD"
done
