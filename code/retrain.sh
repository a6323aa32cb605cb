#!/usr/bin/env bash
# Stage 2 driver: retrain the searched architecture (or ARCH) on every fold in FOLDS.
# A finished fold (retrain-fold<k>/summary.json) made with the same options is skipped (FORCE=1 redoes it); an
# interrupted one resumes.
set -euo pipefail
source "$(dirname "$0")/common.sh"
stage_args() {
  if [ -n "$ARCH" ]; then echo "--arch $ARCH"; fi
  if [ "$FORCE" = 1 ]; then echo "--resume no"; fi
}
per_fold retrain retrain retrain.py
