#!/usr/bin/env bash
# One command for a first try: set up, generate the demo task, run every stage with the tiny preset on a CPU.
#   bash scripts/demo.sh
# DATA_ROOT / WORK_ROOT / FOLDS / NGPU / EXTRA_ARGS (e.g. "--seed 1") can be set in the environment (code/common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="${VENV:-$PWD/.venv}/bin:$PATH"
export DATA_ROOT=${DATA_ROOT:-$PWD/data}
export WORK_ROOT=${WORK_ROOT:-$PWD/work}
export TASKS=Task99_Demo
export PRESET=${PRESET:-$PWD/configs/tiny.yaml}
if [ ! -f "$DATA_ROOT/Task99_Demo/dataset.json" ]; then
  python scripts/make_demo_task.py --out "$DATA_ROOT/Task99_Demo"
fi
bash code/main.sh all
