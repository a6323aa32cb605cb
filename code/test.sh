#!/usr/bin/env bash
# Stage 4 driver: each fold's best model (or CHECKPOINT) predicts class probabilities for every test image.
set -euo pipefail
source "$(dirname "$0")/common.sh"
fold_args() {
  echo --split test --tta "$TTA"
  checkpoint_arg "$1" "$2"
}
per_fold test-infer test test.py
