#!/usr/bin/env bash
# Prepare IWSLT14 de->en from de-en.tgz (or its extracted files); see fairseq_normmatters/recipes/data/iwslt14.py.
set -euo pipefail
source "$(dirname "$0")/_python.sh"
exec "$PY" -m fairseq_normmatters.recipes.data.iwslt14 "$@"
