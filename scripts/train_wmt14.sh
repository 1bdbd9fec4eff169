#!/usr/bin/env bash
# scripts/train_wmt14.sh CONFIG PREPARED_DIR SAVE_DIR [extra fairseq-train args...]
# See fairseq_normmatters/recipes/run/train.py (or run with --help).
set -euo pipefail
source "$(dirname "$0")/_python.sh"
exec "$PY" -m fairseq_normmatters.recipes.run.train "$@"
