#!/usr/bin/env bash
# Stage 2 driver: retrain the searched architecture (or ARCH: a file, or the baseline random, cvpr or unet) on every
# fold in FOLDS. A finished fold (retrain-fold<k>/summary.json; a baseline's: retrain-<ARCH>-fold<k>/summary.json)
# made with the same options is skipped (FORCE=1 redoes it); an interrupted one resumes.
set -euo pipefail
source "$(dirname "$0")/common.sh"
stage_args() {
  if [ -n "$ARCH" ]; then echo "--arch $ARCH"; fi
  if [ -n "$ARCH_SEED" ]; then echo "--arch_seed $ARCH_SEED"; fi
  if [ -n "$ARCH_MEM" ]; then echo "--arch_mem $ARCH_MEM"; fi
  if [ "$FORCE" = 1 ]; then echo "--resume no"; fi
}
for task in $TASKS; do  # a planned task: size retraining for the architecture it retrains (code/plan.py)
  # shellcheck disable=SC2046
  launch plan.py $(common_args "$task") ${ARCH:+--arch "$ARCH"} $(gpu_mb_arg) --if_planned || exit $?
done
per_fold retrain retrain retrain.py
