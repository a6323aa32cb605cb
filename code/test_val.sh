#!/usr/bin/env bash
# Stage 3 driver: evaluate each fold's best model (or CHECKPOINT) on its validation cases.
set -euo pipefail
source "$(dirname "$0")/common.sh"
stage_args() {
  echo --split val
  checkpoint_arg "${1:-}"
}
per_fold test-val val test.py
