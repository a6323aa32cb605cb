#!/usr/bin/env bash
# Set up (virtual environment, packages, graphviz, Horovod, and Debian's chromium for the results page's browser
# test) and run the test suite.
#   bash scripts/test.sh [pytest arguments]
# Fails when pytest fails or when no test ran (pytest exit status 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-horovod
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing Debian chromium (a headless browser for the results page's test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || apt-get update
    apt-get install -y -qq chromium >/dev/null || apt-get install -y chromium
  else
    echo "[test] warning: chromium is missing and cannot be installed without root; the browser test will skip"
  fi
fi
export PATH="${VENV:-$PWD/.venv}/bin:$PATH"
rc=0
python -m pytest "$@" || rc=$?
if [ "$rc" = 5 ]; then
  echo "test.sh: no tests ran (pytest exit status 5)" >&2
  exit 1
fi
exit "$rc"
