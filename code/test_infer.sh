#!/usr/bin/env bash
# Stage 4 driver: each fold's best model (or CHECKPOINT) predicts class probabilities for every test image.
set -euo pipefail
source "$(dirname "$0")/common.sh"
stage_args() {
  echo --split test
  if [ -n "$TTA" ]; then echo "--tta $TTA"; fi
  checkpoint_arg "${1:-}"
}
per_fold test-infer test test.py
