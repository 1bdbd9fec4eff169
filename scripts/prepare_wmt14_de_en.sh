#!/usr/bin/env bash
# Prepare WMT14 de->en (or a plain corpus) for fairseq; see fairseq_normmatters/recipes/data/prepare.py.
#   scripts/prepare_wmt14_de_en.sh [--raw-dir RAW] [--vocab-size 32000] [--workers 4] OUT
set -euo pipefail
source "$(dirname "$0")/_python.sh"
exec "$PY" -m fairseq_normmatters.recipes.data.prepare "$@"
