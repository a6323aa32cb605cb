#!/usr/bin/env bash
# Set up (virtual environment, packages, graphviz, Horovod, and Debian's chromium for the results page's browser
# test) and run the test suite.
#   bash scripts/test.sh [pytest arguments]
# Fails when pytest fails or when no test ran (pytest exit status 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-horovod --with-browser  # chromium: the results page's test opens it in a browser
export PATH="${VENV:-$PWD/.venv}/bin:$PATH"
rc=0
python -m pytest "$@" || rc=$?
if [ "$rc" = 5 ]; then
  echo "test.sh: no tests ran (pytest exit status 5)" >&2
  exit 1
fi
exit "$rc"
