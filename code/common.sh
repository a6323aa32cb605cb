# Shared by code/main.sh and the stage drivers: settings (each overridable from the environment) and the launcher.
# shellcheck shell=bash
CODE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$CODE_DIR")

TASKS=${TASKS:-Task09_Spleen}          # space-separated MSD task folder names
FOLDS=${FOLDS:-"0 1 2 3 4"}            # folds to retrain, test and fuse
SEARCH_FOLD=${SEARCH_FOLD:-0}          # fold whose training part the search uses
NGPU=${NGPU:-1}                        # processes per node (one per GPU; on a CPU, processes)
MEM=${MEM:-0.8}                        # memory budget of the search (fraction of the full supernet)
DATA_ROOT=${DATA_ROOT:-$REPO_DIR/data} # folder holding the task folders
WORK_ROOT=${WORK_ROOT:-$REPO_DIR/work} # run folders go here
PRESET=${PRESET:-}                     # preset YAML; empty: configs/<task>.yaml when it exists
LAUNCHER=${LAUNCHER:-auto}             # auto, horovod, torch or none (for NGPU > 1)
FORCE=${FORCE:-0}                      # 1: redo stages whose outputs exist
ARCH=${ARCH:-}                         # architecture for retraining (default: the search run's arch.json)
CHECKPOINT=${CHECKPOINT:-}             # model to test, '{fold}' replaced (default: each fold's best.pt, the best
                                       # validation Dice of its retraining)
TTA=${TTA:-0}                          # 1: flip test-time augmentation in stage 4
MSD_SIZE=${MSD_SIZE:-}                 # msd_size.json for stage 6 (default: $WORK_ROOT/msd_size.json, made if missing)
PYTHON=${PYTHON:-python}
EXTRA_ARGS=${EXTRA_ARGS:-}             # appended to every stage's command line

preset_for() {  # preset_for TASK -> "--config FILE" or nothing
  local p=$PRESET
  if [ -z "$p" ] && [ -f "$REPO_DIR/configs/$1.yaml" ]; then p="$REPO_DIR/configs/$1.yaml"; fi
  if [ -n "$p" ]; then echo "--config $p"; fi
}

layout_path() {  # layout_path KIND TASK [FOLD] -> a path of the run layout, as the Python stages spell it
  # KIND: run (the search run folder), msd_size, or the marker file of a finished stage: search, retrain, val, test,
  # fuse, resample (see code/dints/run/layout.py).
  PYTHONPATH="$CODE_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m dints.run.layout "$1" --work_root "$WORK_ROOT" \
    --task "$2" --mem "$MEM" ${3:+--fold "$3"}
}

search_dir() {  # search_dir TASK -> the search run folder (seed naming; MEM=0.80 and MEM=0.8 name the same folder)
  layout_path run "$1"
}

launch() {  # launch SCRIPT ARGS... : one process, or NGPU of them with horovodrun or torchrun
  local script=$CODE_DIR/$1
  shift
  if [ "$NGPU" -le 1 ] || [ "$LAUNCHER" = none ]; then
    "$PYTHON" "$script" "$@"
  elif [ "$LAUNCHER" = horovod ] || { [ "$LAUNCHER" = auto ] && command -v horovodrun >/dev/null 2>&1; }; then
    horovodrun -np "$NGPU" "$PYTHON" "$script" "$@"
  else
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" "$script" "$@"
  fi
}

common_args() {  # common_args TASK -> the options every stage shares
  # shellcheck disable=SC2086
  echo $(preset_for "$1") --data_root "$DATA_ROOT" --task "$1" --work_root "$WORK_ROOT" --mem "$MEM" $EXTRA_ARGS
}

arch_arg() {  # arch_arg -> "--arch FILE" when ARCH is set
  if [ -n "$ARCH" ]; then echo "--arch $ARCH"; fi
}

checkpoint_arg() {  # checkpoint_arg TASK FOLD -> "--checkpoint FILE" when CHECKPOINT is set
  if [ -n "$CHECKPOINT" ]; then echo "--checkpoint ${CHECKPOINT//\{fold\}/$2}"; fi
}

per_fold() {  # per_fold NAME KIND SCRIPT : run SCRIPT for every task and fold; skip finished ones unless FORCE=1
  # The driver defines fold_args TASK FOLD, echoing the stage's own options for that fold.
  local name=$1 kind=$2 script=$3 task fold marker
  for task in $TASKS; do
    for fold in $FOLDS; do
      marker=$(layout_path "$kind" "$task" "$fold")
      if [ -f "$marker" ] && [ "$FORCE" != 1 ]; then echo "[$name] $task fold $fold: done, skipping"; continue; fi
      echo "[$name] $task fold $fold"
      # shellcheck disable=SC2046
      launch "$script" $(common_args "$task") --fold "$fold" $(fold_args "$task" "$fold")
    done
  done
}
