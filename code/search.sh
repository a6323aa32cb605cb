#!/usr/bin/env bash
# Stage 1 driver: search one architecture per task (on SEARCH_FOLD). Skipped, unless FORCE=1, when the search is
# finished (its summary.json, written after arch.json, arch.pth and the pictures) with the same options; a finished
# search made with other options is refused (code/config.py status).
set -euo pipefail
source "$(dirname "$0")/common.sh"
for task in $TASKS; do
  # shellcheck disable=SC2046
  out=$(stage_status search $(common_args "$task") --fold "$SEARCH_FOLD")
  read -r _ what marker <<< "$out"
  echo "[search] $task: $(preset_note "$task")"
  if [ "$what" = "done" ]; then
    echo "[search] $task: done ($marker), skipping (FORCE=1 to redo)"
    continue
  fi
  echo "[search] $task fold $SEARCH_FOLD"
  # shellcheck disable=SC2046
  launch search.py $(common_args "$task") --fold "$SEARCH_FOLD" $(if [ "$FORCE" = 1 ]; then echo --resume no; fi)
done
