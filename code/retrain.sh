#!/usr/bin/env bash
# Stage 2 driver: retrain the searched architecture on every fold in FOLDS.
# A fold is skipped when retrain-fold<k>/summary.json exists (FORCE=1 redoes it); an interrupted one resumes.
set -euo pipefail
source "$(dirname "$0")/common.sh"
fold_args() {
  arch_arg
  if [ "$FORCE" = 1 ]; then echo "--resume no"; fi
}
per_fold retrain retrain retrain.py
