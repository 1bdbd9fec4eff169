#!/usr/bin/env bash
# Set up .venv (see scripts/setup_env.sh) and run the test suite on all cores (pytest-xdist;
# NORMMATTERS_TEST_WORKERS=0 runs in one process); extra args go to pytest. Each worker gets
# its next test when it is nearly done (--maxschedchunk 1), the long ones first (conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec "$PY" -m pytest -q -n "${NORMMATTERS_TEST_WORKERS:-auto}" --maxschedchunk 1 -p no:cacheprovider tests "$@"
