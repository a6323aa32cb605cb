# Shared by code/main.sh and the stage drivers: settings (each overridable from the environment) and the launcher.
# shellcheck shell=bash
CODE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$CODE_DIR")

TASKS=${TASKS:-Task09_Spleen}          # space-separated MSD task folder names
FOLDS=${FOLDS:-"0 1 2 3 4"}            # folds to retrain, test and fuse
SEARCH_FOLD=${SEARCH_FOLD:-0}          # fold whose training part the search uses
NGPU=${NGPU:-1}                        # processes per node (one per GPU; on a CPU, processes)
NNODES=${NNODES:-1}                    # nodes (torchrun: run main.sh on each; horovodrun: on one, with HOSTS)
HOSTS=${HOSTS:-}                       # horovodrun's host list, e.g. node1:8,node2:8 (processes = the slots' sum)
RDZV_ENDPOINT=${RDZV_ENDPOINT:-}       # torchrun's rendezvous HOST:PORT when NNODES > 1 (the same on every node)
RDZV_ID=${RDZV_ID:-dints}              # torchrun's job id (one per concurrent job)
MEM=${MEM:-0.8}                        # memory budget of the search (fraction of the full supernet)
DATA_ROOT=${DATA_ROOT:-$REPO_DIR/data} # folder holding the task folders
WORK_ROOT=${WORK_ROOT:-$REPO_DIR/work} # run folders go here
PRESET=${PRESET:-}                     # preset YAML; empty: configs/<task>.yaml when it exists
LAUNCHER=${LAUNCHER:-auto}             # auto, horovod, torch or none; auto: horovod when horovodrun is installed
                                       # beside PYTHON and no RDZV_ENDPOINT is set, else torch
FORCE=${FORCE:-0}                      # 1: redo stages whose outputs exist
ARCH=${ARCH:-}                         # architecture for retraining (default: the search run's arch.json)
CHECKPOINT=${CHECKPOINT:-}             # model to test, '{fold}' replaced (default: each fold's best.pt, the best
                                       # validation Dice of its retraining)
TTA=${TTA:-0}                          # 1: flip test-time augmentation in stage 4
MSD_SIZE=${MSD_SIZE:-}                 # msd_size.json for stage 6 (default: $WORK_ROOT/msd_size.json, made if missing)
VENV=${VENV:-$REPO_DIR/.venv}          # the environment scripts/setup.sh made; used when it exists
if [ -z "${PYTHON:-}" ]; then          # the Python (and its horovodrun) to run the stages with
  if [ -x "$VENV/bin/python" ]; then PYTHON=$VENV/bin/python; else PYTHON=python; fi
fi
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

horovodrun_path() {  # the horovodrun beside PYTHON, else the one on PATH, else nothing
  local dir
  dir=$(dirname "$(command -v "$PYTHON")")
  if [ -x "$dir/horovodrun" ]; then echo "$dir/horovodrun"; else command -v horovodrun || true; fi
}

launcher() {  # launcher -> none, horovod or torch: how launch runs the stages (or an error on stderr, status 2)
  local np=$((NGPU * NNODES))
  case $LAUNCHER in auto|horovod|torch|none) ;; *) echo "LAUNCHER=$LAUNCHER: expected auto, horovod, torch or none" >&2; return 2 ;; esac
  if [ -n "$HOSTS" ] && [ "$LAUNCHER" != torch ]; then np=$(hosts_slots) || return 2; fi
  if [ "$np" -le 1 ] || [ "$LAUNCHER" = none ]; then echo none
  elif [ "$LAUNCHER" = horovod ] || { [ "$LAUNCHER" = auto ] && [ -z "$RDZV_ENDPOINT" ] && [ -n "$(horovodrun_path)" ] \
      && { [ "$NNODES" -le 1 ] || [ -n "$HOSTS" ]; }; }; then
    if [ "$NNODES" -gt 1 ] && [ -z "$HOSTS" ]; then
      echo "NNODES=$NNODES with Horovod: set HOSTS=node1:$NGPU,node2:$NGPU,... and run main.sh on one node" >&2; return 2
    fi
    echo horovod
  else echo torch
  fi
}

hosts_slots() {  # hosts_slots -> the number of processes HOSTS asks for (node1:8,node2:8 -> 16)
  local total=0 h
  for h in ${HOSTS//,/ }; do
    if ! [[ $h =~ ^[^:]+:[0-9]+$ ]]; then echo "HOSTS: '$h' is not host:slots (e.g. node1:8,node2:8)" >&2; return 2; fi
    total=$((total + ${h##*:}))
  done
  echo "$total"
}

EXIT_INTERRUPTED=75  # a stage stopped by SIGTERM/SIGINT after saving its state (code/dints/errors.py)

forward_signals() {  # forward_signals CMD... : run CMD, passing SIGTERM and SIGINT on to it (as SIGTERM); its status
  # A scheduler's SIGTERM may reach only this shell; the stage must get it to write its checkpoint. (Background
  # jobs of a script ignore SIGINT, so SIGINT is passed on as SIGTERM.)
  "$@" &
  local pid=$! rc=0
  # shellcheck disable=SC2064
  trap "kill -TERM $pid 2>/dev/null || true" TERM INT
  wait "$pid" || rc=$?
  while kill -0 "$pid" 2>/dev/null; do rc=0; wait "$pid" || rc=$?; done  # wait returns early on a trapped signal
  trap - TERM INT
  return "$rc"
}

launch() {  # launch SCRIPT ARGS... : one process, or NGPU per node under horovodrun or torchrun; the stage's status
  # (horovodrun and torchrun turn every failure into 1: an interrupted stage also writes its 75 to DINTS_STATUS_FILE)
  local rc=0 status_file
  status_file=$(mktemp)
  DINTS_STATUS_FILE=$status_file launch_with "$@" || rc=$?
  if [ "$rc" != 0 ] && [ "$(cat "$status_file" 2>/dev/null)" = "$EXIT_INTERRUPTED" ]; then rc=$EXIT_INTERRUPTED; fi
  rm -f "$status_file"
  return "$rc"
}

launch_with() {  # launch_with SCRIPT ARGS... : see launch
  local script=$CODE_DIR/$1
  shift
  local how
  how=$(launcher) || return 2
  case $how in
    none) forward_signals "$PYTHON" "$script" "$@" ;;
    horovod)
      local hvd
      hvd=$(horovodrun_path)
      if [ -z "$hvd" ] && [ "$PYTHON" = "$VENV/bin/python" ]; then  # the project's environment: add Horovod to it
        echo "[launch] Horovod is not installed in $VENV: bash scripts/setup.sh --with-horovod" >&2
        if [ -z "${HOROVOD_GPU_OPERATIONS:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then
          export HOROVOD_GPU_OPERATIONS=NCCL  # a GPU node: Horovod's collectives on CUDA tensors need NCCL
        fi
        VENV=$VENV bash "$REPO_DIR/scripts/setup.sh" --with-horovod >&2 || return 2
        hvd=$(horovodrun_path)
      fi
      if [ -z "$hvd" ]; then echo "LAUNCHER=horovod: horovodrun is not installed beside $PYTHON" >&2; return 2; fi
      if [ -n "$HOSTS" ]; then
        forward_signals "$hvd" -np "$(hosts_slots)" -H "$HOSTS" "$PYTHON" "$script" "$@"
      else
        forward_signals "$hvd" -np "$((NGPU * NNODES))" "$PYTHON" "$script" "$@"
      fi ;;
    torch)
      if [ "$NNODES" -gt 1 ]; then
        if [ -z "$RDZV_ENDPOINT" ]; then echo "NNODES=$NNODES: set RDZV_ENDPOINT=HOST:PORT (the same on every node)" >&2; return 2; fi
        forward_signals "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$NGPU" \
          --rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" --rdzv_id "$RDZV_ID" "$script" "$@"
      else
        forward_signals "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" "$script" "$@"
      fi ;;
  esac
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
