#!/usr/bin/env bash
# usage: bash code/main.sh N [N ...] | all
# Chain the DiNTS stages per task and fold.
#
#   bash code/main.sh N [N ...]   N = 0 the dataset's fingerprint and the plan (code/plan.py: plan.yaml, sized
#                                 for GPU_MB), 1 search, 2 retrain, 3 test on validation, 4 inference on test data,
#                                 5 fuse the folds, 6 resample to the original images (several: in the order given)
#   bash code/main.sh all         stages 0 to 6, in order, then the report (printed, report.md, and the results
#                                 page report/index.html in the run folder)
#
# Settings are environment variables (code/common.sh lists them with their defaults), e.g.
#   TASKS=Task99_Demo PRESET=configs/tiny.yaml DATA_ROOT=data WORK_ROOT=work bash code/main.sh all
# SEARCH_SEEDS=K (K >= 2) makes stage 1 run K searches (--seed and the next K-1, each in <run>/seeds/seed<s>/) and
# keep the one with the highest supernet validation Dice at its last validation (ties: the lower seed).
# Precedence, lowest first: the defaults of code/config.py < the plan (<work_root>/<task>/plan.yaml, once stage 0
# has written it) < the preset < the variables that are set < EXTRA_ARGS. Stage 2 first re-plans retraining for the
# searched architecture.
# A finished stage (or fold) is skipped when it was made with the same options; made with other options, it is
# refused with one line naming the option (FORCE=1 redoes it, another WORK_ROOT keeps both).
#
# A stage stopped by SIGTERM or SIGINT (a scheduler's time limit, Ctrl-C; this script passes them on) saves its state
# and exits with status 75, which this script reports and returns; rerunning the same command resumes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac
source "$HERE/common.sh"

DRIVERS=(plan.sh search.sh retrain.sh test_val.sh test_infer.sh fuse.sh fuse.sh)
NAMES=(plan search retrain test-val test-infer fuse resample)
MAIN_ARG="$*"

run_stage() {  # run_stage N: run stage N's driver; report how it ended when it did not succeed, with its status
  local n=$1 driver=${DRIVERS[$1]} name=${NAMES[$1]} rc=0
  echo "[main] stage $n ($name)"
  forward_signals env STAGE="$n" bash "$HERE/$driver" || rc=$?
  if [ "$rc" = "$EXIT_INTERRUPTED" ]; then
    echo "[main] stage $n ($name) was interrupted (SIGTERM/SIGINT) after saving its state;" \
      "rerun 'bash code/main.sh ${MAIN_ARG}' to resume (exit status $rc)" >&2
    exit "$rc"
  elif [ "$rc" != 0 ]; then
    echo "[main] stage $n ($name) failed (exit status $rc); fix what its error line says and rerun" \
      "'bash code/main.sh ${MAIN_ARG}': finished work is kept" >&2
    exit "$rc"
  fi
}

if [ "$*" = all ]; then
  for n in 0 1 2 3 4 5 6; do run_stage "$n"; done
  for task in $TASKS; do
    # shellcheck disable=SC2046
    "$PYTHON" "$HERE/report.py" $(common_args "$task") $(folds_arg) --html
  done
  exit 0
fi
for n in "$@"; do
  case $n in
    [0-6]) ;;
    *) echo "main.sh: '$n' is not a stage (expected 0..6, several of them, or all; see bash code/main.sh --help)" >&2
       exit 2 ;;
  esac
done
for n in "$@"; do run_stage "$n"; done
