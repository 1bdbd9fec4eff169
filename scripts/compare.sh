#!/usr/bin/env bash
# scripts/compare.sh {wmt14,iwslt14} PREPARED OUT [--seeds N] [--configs C ...] [-- fairseq-train args]
# Every configuration x seed trained, evaluated and collected; see fairseq_normmatters/recipes/compare.py.
set -euo pipefail
source "$(dirname "$0")/_python.sh"
exec "$PY" -m fairseq_normmatters.recipes.compare "$@"
