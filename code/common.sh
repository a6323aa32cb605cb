# Shared by code/main.sh and the stage drivers: settings (each overridable from the environment) and the launcher.
#
# Precedence, lowest first: the defaults of code/config.py < the preset (PRESET, or configs/<task>.yaml when it
# exists) < these variables, where set < EXTRA_ARGS. A variable left unset passes nothing, so the preset's value (or
# the default) holds; DATA_ROOT and WORK_ROOT are always passed (unset: the repository's data/ and work/).
# shellcheck shell=bash
CODE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$CODE_DIR")

TASKS=${TASKS:-Task09_Spleen}          # space-separated task folder names under DATA_ROOT
FOLDS=${FOLDS:-}                       # folds to retrain, test and fuse (unset: every fold of --num_folds)
SEARCH_FOLD=${SEARCH_FOLD:-0}          # fold whose training part the search uses
SEARCH_SEEDS=${SEARCH_SEEDS:-1}        # stage 1: K >= 2 runs K searches (--seed and the next K-1) and keeps the one
                                       # with the highest supernet validation Dice (ties: the lower seed); 1: one
NGPU=${NGPU:-1}                        # processes per node (one per GPU; on a CPU, processes)
NNODES=${NNODES:-1}                    # nodes (torchrun: run main.sh on each; horovodrun: on one, with HOSTS)
HOSTS=${HOSTS:-}                       # horovodrun's host list, e.g. node1:8,node2:8 (processes = the slots' sum)
RDZV_ENDPOINT=${RDZV_ENDPOINT:-}       # torchrun's rendezvous HOST:PORT when NNODES > 1 (the same on every node)
RDZV_ID=${RDZV_ID:-dints}              # torchrun's job id (one per concurrent job)
MEM=${MEM:-}                           # --mem, the search's memory budget (unset: the preset's, else 0.8)
GPU_MB=${GPU_MB:-}                     # stage 0 (and stage 2's re-plan): --gpu_mb, the GPU memory (MB) the plan sizes
                                       # patches and batches for (unset: the plan's, else the CUDA device's, else a
                                       # value for a CPU run)
DATA_ROOT=${DATA_ROOT:-$REPO_DIR/data} # --data_root, the folder holding the task folders
WORK_ROOT=${WORK_ROOT:-$REPO_DIR/work} # --work_root, where run folders go
PRESET=${PRESET:-}                     # preset YAML; empty: configs/<task>.yaml when it exists, else none
LAUNCHER=${LAUNCHER:-auto}             # auto, horovod, torch or none; auto: horovod when horovodrun is installed
                                       # beside PYTHON and no RDZV_ENDPOINT is set, else torch
FORCE=${FORCE:-0}                      # 1: redo stages that are finished
ARCH=${ARCH:-}                         # --arch for retraining (unset: the search run's arch.json): a file, or a
                                       # baseline, random, cvpr or unet, which retrains into retrain-<ARCH>-fold<k>/
                                       # (stages 3-6 keep using the searched architecture's retrain-fold<k>/)
ARCH_SEED=${ARCH_SEED:-}               # --arch_seed of ARCH=random (unset: 0)
ARCH_MEM=${ARCH_MEM:-}                 # --arch_mem of ARCH=random (unset: the searched architecture's mem_ratio)
CHECKPOINT=${CHECKPOINT:-}             # --checkpoint to test, '{fold}' replaced by the fold (unset: each fold's
                                       # best.pt, the best validation Dice of its retraining)
TTA=${TTA:-}                           # --tta of stage 4 (unset: the preset's, else 0)
MSD_SIZE=${MSD_SIZE:-}                 # --msd_size of stage 6, a cross-check of the original sizes (unset: none)
VENV=${VENV:-$REPO_DIR/.venv}          # the environment scripts/setup.sh made; used when it exists
if [ -z "${PYTHON:-}" ]; then          # the Python (and its horovodrun) to run the stages with
  if [ -x "$VENV/bin/python" ]; then PYTHON=$VENV/bin/python; else PYTHON=python; fi
fi
EXTRA_ARGS=${EXTRA_ARGS:-}             # appended to every stage's command line (wins over everything above)

if ! [[ $SEARCH_SEEDS =~ ^[0-9]{1,6}$ ]] || [ $((10#$SEARCH_SEEDS)) -lt 1 ]; then
  echo "SEARCH_SEEDS=$SEARCH_SEEDS: expected a whole number, 1 or more (how many seeded searches stage 1 runs;" \
    "unset or 1: one search)" >&2
  exit 2
fi
SEARCH_SEEDS=$((10#$SEARCH_SEEDS))

preset_file() {  # preset_file TASK -> the preset the stages of TASK use, or nothing
  if [ -n "$PRESET" ]; then echo "$PRESET"
  elif [ -f "$REPO_DIR/configs/$1.yaml" ]; then echo "$REPO_DIR/configs/$1.yaml"
  fi
}

preset_note() {  # preset_note TASK -> which preset the stages use, for the drivers' lines
  local p
  p=$(preset_file "$1")
  if [ -n "$p" ]; then echo "preset $p"
  else echo "no preset (no configs/$1.yaml, PRESET unset): the defaults of code/config.py"
  fi
}

common_args() {  # common_args TASK -> the options every stage shares
  local p
  p=$(preset_file "$1")
  # shellcheck disable=SC2086
  echo ${p:+--config "$p"} --data_root "$DATA_ROOT" --task "$1" --work_root "$WORK_ROOT" ${MEM:+--mem "$MEM"} \
    $EXTRA_ARGS
}

gpu_mb_arg() {  # gpu_mb_arg -> "--gpu_mb GPU_MB" when GPU_MB is set (code/plan.py's own option)
  if [ -n "$GPU_MB" ]; then echo "--gpu_mb $GPU_MB"; fi
}

folds_arg() {  # folds_arg -> "--folds FOLDS" when FOLDS is set
  if [ -n "$FOLDS" ]; then echo "--folds $FOLDS"; fi
}

stage_status() {  # stage_status KIND OPTIONS... -> one line per unit: "<fold|-> run", "<fold|-> done <marker>",
  # "- none" (no test images); status 2 with one error line when a finished stage was made with other options
  # (code/config.py status; FORCE=1 runs every unit).
  local kind=$1
  shift
  if [ "$FORCE" = 1 ]; then set -- --force "$@"; fi
  PYTHONPATH="$CODE_DIR${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$CODE_DIR/config.py" status "$kind" "$@"
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

checkpoint_arg() {  # checkpoint_arg [FOLD] -> "--checkpoint FILE" when CHECKPOINT is set ('{fold}' replaced by FOLD)
  if [ -n "$CHECKPOINT" ]; then echo "--checkpoint ${CHECKPOINT//\{fold\}/${1:-\{fold\}}}"; fi
}

per_fold() {  # per_fold NAME KIND SCRIPT : run SCRIPT for every task and fold; skip finished folds unless FORCE=1
  # The driver defines stage_args [FOLD], echoing the stage's own options ('{fold}' where no fold is given). The
  # unfinished folds of a task run in one process (--folds), one after the other: torch and MONAI start once.
  local name=$1 kind=$2 script=$3 task out line fold what marker
  local -a lines todo
  for task in $TASKS; do
    # shellcheck disable=SC2046
    out=$(stage_status "$kind" $(common_args "$task") $(folds_arg) $(stage_args)) || return $?
    echo "[$name] $task: $(preset_note "$task")"
    mapfile -t lines <<< "$out"
    todo=()
    for line in "${lines[@]}"; do
      read -r fold what marker <<< "$line"
      case $what in
        none) echo "[$name] $task: dataset.json lists no test images, nothing to do" ;;
        done) echo "[$name] $task fold $fold: done ($marker), skipping" ;;
        *) todo+=("$fold") ;;
      esac
    done
    if [ "${#todo[@]}" -gt 0 ]; then
      echo "[$name] $task fold$([ "${#todo[@]}" -gt 1 ] && echo s) ${todo[*]}"
      # shellcheck disable=SC2046
      launch "$script" $(common_args "$task") --folds "${todo[@]}" $(stage_args) || return $?
    fi
  done
}
