#!/usr/bin/env bash
# Stage 1 driver: search one architecture per task (on SEARCH_FOLD). Skipped, unless FORCE=1, when the search is
# finished (its summary.json, written after arch.json, arch.pth and the pictures) with the same options; a finished
# search made with other options is refused (code/config.py status).
# SEARCH_SEEDS=K (K >= 2): K searches, --seed s0 .. s0+K-1 (s0 the run's --seed), one after another with the same
# launcher, each in <search run>/seeds/seed<s>/ and each skipped when finished; then code/choose_search.py keeps the
# one with the highest supernet validation Dice (ties: the lower seed) in the search run folder.
set -euo pipefail
source "$(dirname "$0")/common.sh"

seeded_searches() {  # seeded_searches TASK: the SEARCH_SEEDS searches of TASK, then the choice among them
  local task=$1 out line unit what marker
  local -a lines
  # shellcheck disable=SC2046
  out=$(stage_status search $(common_args "$task") --fold "$SEARCH_FOLD" --search_seeds "$SEARCH_SEEDS")
  echo "[search] $task: $(preset_note "$task"); $SEARCH_SEEDS seeded searches"
  mapfile -t lines <<< "$out"
  for line in "${lines[@]}"; do
    read -r unit what marker <<< "$line"
    if [ "$unit" != - ]; then
      if [ "$what" = done ]; then
        echo "[search] $task seed $unit: done ($marker), skipping"
        continue
      fi
      echo "[search] $task fold $SEARCH_FOLD seed $unit"
      # shellcheck disable=SC2046
      launch search.py $(common_args "$task") --fold "$SEARCH_FOLD" --seed "$unit" --seed_folder 1 \
        $(if [ "$FORCE" = 1 ]; then echo --resume no; fi)
    elif [ "$what" = done ]; then
      echo "[search] $task: done ($marker), skipping (FORCE=1 to redo)"
    else
      echo "[search] $task: choosing one of the $SEARCH_SEEDS searches"
      # shellcheck disable=SC2046
      forward_signals "$PYTHON" "$CODE_DIR/choose_search.py" $(common_args "$task") --fold "$SEARCH_FOLD" \
        --search_seeds "$SEARCH_SEEDS"
    fi
  done
}

for task in $TASKS; do
  if [ "$SEARCH_SEEDS" -gt 1 ]; then
    seeded_searches "$task"
    continue
  fi
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
