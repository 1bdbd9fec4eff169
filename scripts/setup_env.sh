#!/usr/bin/env bash
# Create (or reuse) the repo's virtual environment .venv and install the package into it.
# Idempotent: when setup.py and the torch requirement are unchanged, it only checks and exits.
#   NORMMATTERS_TORCH                 torch requirement (default torch==2.13.0, a CPU wheel here);
#                                     >= 2.6; e.g. NORMMATTERS_TORCH="torch==2.11.0" (PyPI's Linux
#                                     wheels are CUDA builds).
#   NORMMATTERS_SYSTEM_SITE_PACKAGES=1  create .venv with --system-site-packages, so a torch
#                                     (or fairseq) already installed system-wide is reused.
#   NORMMATTERS_EXTRAS                extras to install (default "test,plot").
# Source it (it sets VENV and PY) or run it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
TORCH_REQ="${NORMMATTERS_TORCH:-torch==2.13.0}"
EXTRAS="${NORMMATTERS_EXTRAS:-test,plot}"

# pip, minus the noise of this machine's local index; its output is shown in full on failure.
quiet_pip() {
    local log rc=0
    log="$(mktemp)"
    "$PY" -m pip "$@" >"$log" 2>&1 || rc=$?
    grep -v -e 'is ignored: it is neither' "$log" >&2 || true
    rm -f "$log"
    return "$rc"
}

if [ ! -x "$PY" ]; then
    echo "[setup] creating $VENV"
    if [ "${NORMMATTERS_SYSTEM_SITE_PACKAGES:-0}" = 1 ]; then
        python3 -m venv --system-site-packages "$VENV"
    else
        python3 -m venv "$VENV"
    fi
fi

stamp="$VENV/.normmatters-stamp"
want="$(cat "$REPO/setup.py" | sha1sum | cut -c1-16) $TORCH_REQ [$EXTRAS]"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import fairseq_normmatters" 2>/dev/null; then
    echo "[setup] $VENV is up to date"
else
    if "$PY" -c "import torch" 2>/dev/null; then
        echo "[setup] reusing torch $("$PY" -c 'import torch; print(torch.__version__)')"
    else
        echo "[setup] installing $TORCH_REQ"
        quiet_pip install -q "$TORCH_REQ"
    fi
    echo "[setup] installing fairseq_normmatters[$EXTRAS] and its dependencies (about a minute)"
    quiet_pip install -q -e "$REPO[$EXTRAS]"
    "$PY" -c "import fairseq, fairseq_normmatters" 2>/dev/null \
        || { echo "[setup] error: the environment in $VENV cannot import fairseq_normmatters" >&2; exit 1; }
    echo "$want" > "$stamp"
    echo "[setup] done"
fi
