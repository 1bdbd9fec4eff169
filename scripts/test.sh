#!/usr/bin/env bash
# Set up .venv (see scripts/setup_env.sh) and run the test suite on all cores (pytest-xdist;
# NORMMATTERS_TEST_WORKERS=0 runs in one process); extra args go to pytest. How the tests are
# handed to the workers: tests/conftest.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec "$PY" -m pytest -q -n "${NORMMATTERS_TEST_WORKERS:-auto}" -p no:cacheprovider tests "$@"
