#!/usr/bin/env bash
# Set up .venv (see scripts/setup_env.sh) and SLURM (scripts/ci/setup_slurm.sh), then run the test
# suite on all cores (pytest-xdist; NORMMATTERS_TEST_WORKERS=0 runs in one process), then the
# SLURM tests (marked "cluster": they start a one-node cluster and its jobs take the cores).
# Extra args go to one pytest instead (e.g. a test file). How the tests are handed to the
# workers: tests/conftest.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
bash scripts/ci/setup_slurm.sh
if [ $# -gt 0 ]; then
    exec "$PY" -m pytest -q -n "${NORMMATTERS_TEST_WORKERS:-auto}" -p no:cacheprovider "$@"
fi
"$PY" -m pytest -q -n "${NORMMATTERS_TEST_WORKERS:-auto}" -p no:cacheprovider -m "not cluster" tests
exec "$PY" -m pytest -q -p no:cacheprovider -m cluster tests
