#!/usr/bin/env bash
# Create (or reuse) the repo's virtual environment .venv and install the package into it.
# Idempotent: when setup.py and the torch requirement are unchanged, it only checks and exits.
#   NORMMATTERS_TORCH                 torch requirement (default torch==2.13.0, a CPU wheel here);
#                                     >= 2.7; e.g. NORMMATTERS_TORCH="torch==2.11.0" (PyPI's Linux
#                                     wheels are CUDA builds).
#   NORMMATTERS_SYSTEM_SITE_PACKAGES=1  create .venv with --system-site-packages, so a torch
#                                     (or fairseq) already installed system-wide is reused.
#   NORMMATTERS_EXTRAS                extras to install (default "test,plot,slurm").
#   NORMMATTERS_VENV                  the environment's directory (default .venv in the repository).
#   NORMMATTERS_BASE_PYTHON           the Python that creates it (default python3; 3.11 or 3.12).
#   NORMMATTERS_INSTALLER=pip         install the package with pip instead of uv (torch: always pip).
# Source it (it sets VENV and PY) or run it.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NORMMATTERS_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
BASE_PYTHON="${NORMMATTERS_BASE_PYTHON:-python3}"
TORCH_REQ="${NORMMATTERS_TORCH:-torch==2.13.0}"
EXTRAS="${NORMMATTERS_EXTRAS:-test,plot,slurm}"

# pip, minus the noise of this machine's local index; its output is shown in full on failure.
quiet_pip() {
    local log rc=0
    log="$(mktemp)"
    "$PY" -m pip "$@" >"$log" 2>&1 || rc=$?
    grep -v -e 'is ignored: it is neither' "$log" >&2 || true
    rm -f "$log"
    return "$rc"
}

# uv (installed into the environment first) unpacks and byte-compiles in parallel, a few times
# faster than pip here; it reads PyPI only, so pip finds torch (this machine's configuration may
# point it at local wheels) and uv installs the file. pip does all when NORMMATTERS_INSTALLER=pip
# or uv cannot.
INSTALLER="${NORMMATTERS_INSTALLER:-uv}"
with_uv() { [ "$INSTALLER" = uv ] && "$PY" -m uv pip install -q --python "$PY" --compile-bytecode "$@"; }

install_torch() {
    local wheels
    wheels="$(mktemp -d)"
    if [ "$INSTALLER" = uv ] && quiet_pip download -q --no-deps -d "$wheels" "$TORCH_REQ" \
            && with_uv "$wheels"/*.whl; then
        rm -rf "$wheels"
        return 0
    fi
    rm -rf "$wheels"
    quiet_pip install -q "$TORCH_REQ"
}

# The package and its dependencies, torch held at the installed version (constraints file $1).
# ve-fairseq requires torchaudio, which fairseq's translation never imports; uv leaves it out
# (an override that never applies), pip installs it and it is checked below.
install_package() {
    local never_torchaudio
    never_torchaudio="$(mktemp)"
    echo 'torchaudio ; sys_platform == "never"' > "$never_torchaudio"
    if with_uv -c "$1" --override "$never_torchaudio" -e "$REPO[$EXTRAS]"; then
        rm -f "$never_torchaudio"
        return 0
    fi
    rm -f "$never_torchaudio"
    [ "$INSTALLER" = uv ] && echo "[setup] uv could not install it; installing with pip"
    quiet_pip install -q -c "$1" -e "$REPO[$EXTRAS]"
}

if [ ! -x "$PY" ]; then
    echo "[setup] creating $VENV"
    if [ "${NORMMATTERS_SYSTEM_SITE_PACKAGES:-0}" = 1 ]; then
        "$BASE_PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$BASE_PYTHON" -m venv "$VENV"
    fi
fi

# The stamp: setup.py's hash and the torch requirement on its first line, the extras installed
# with them on the second. Up to date when both match and every wanted extra is installed.
stamp="$VENV/.normmatters-stamp"
base="$(sha1sum < "$REPO/setup.py" | cut -c1-16) $TORCH_REQ"
installed=""
if [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$base" ]; then
    installed="$(sed -n 2p "$stamp")"
fi
missing=""
for extra in ${EXTRAS//,/ }; do
    [[ ",$installed," == *",$extra,"* ]] || missing="$missing,$extra"
done
if [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$base" ] && [ -z "$missing" ] \
        && "$PY" -c "import fairseq_normmatters" 2>/dev/null; then
    echo "[setup] $VENV is up to date"
else
    EXTRAS="$(echo "$installed$missing" | sed 's/^,//')"
    if [ "$INSTALLER" = uv ] && ! quiet_pip install -q uv; then
        echo "[setup] uv could not be installed; installing with pip"
        INSTALLER=pip
    fi
    if "$PY" -c "import torch" 2>/dev/null; then
        echo "[setup] reusing torch $("$PY" -c 'import torch; print(torch.__version__)')"
    else
        echo "[setup] installing $TORCH_REQ"
        install_torch
    fi
    echo "[setup] installing fairseq_normmatters[$EXTRAS] and its dependencies"
    # the torch installed stays: a dependency asking for a newer one (torchaudio) gets an older
    # release of its own instead
    keep_torch="$(mktemp)"
    "$PY" -c 'from importlib.metadata import version; print("torch==" + version("torch"))' > "$keep_torch"
    install_package "$keep_torch"
    rm -f "$keep_torch"
    # pip takes a torchaudio built for another torch (2.11.1, CUDA) that fails to import beside
    # torch 2.13.0+cpu, and with it every library that imports it (transformers' Marian): removed.
    if "$PY" -m pip show -q torchaudio >/dev/null 2>&1 && ! "$PY" -c "import torchaudio" >/dev/null 2>&1; then
        echo "[setup] removing torchaudio: it cannot be imported beside this torch (fairseq does not need it)"
        quiet_pip uninstall -y -q torchaudio
    fi
    "$PY" -c "import fairseq, fairseq_normmatters" 2>/dev/null \
        || { echo "[setup] error: the environment in $VENV cannot import fairseq_normmatters" >&2; exit 1; }
    printf '%s\n%s\n' "$base" "$EXTRAS" > "$stamp"
    echo "[setup] done"
fi
