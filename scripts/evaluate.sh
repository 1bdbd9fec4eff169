#!/usr/bin/env bash
# scripts/evaluate.sh SAVE_DIR PREPARED_DIR [--average 5] [--beam 4] [--lenpen 0.6]
# See fairseq_normmatters/recipes/run/evaluate.py (or run with --help).
set -euo pipefail
source "$(dirname "$0")/_python.sh"
exec "$PY" -m fairseq_normmatters.recipes.run.evaluate "$@"
