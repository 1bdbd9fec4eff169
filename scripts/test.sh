#!/usr/bin/env bash
# Set up .venv (see scripts/setup_env.sh) and run the test suite; extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec "$PY" -m pytest -q tests "$@"
