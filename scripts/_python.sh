# Sourced by the recipe scripts: pick the Python that has fairseq_normmatters.
# NORMMATTERS_PYTHON wins; else the repository's .venv (made by scripts/setup_env.sh); else python3.
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${NORMMATTERS_PYTHON:-}" ]; then
    PY="$NORMMATTERS_PYTHON"
elif [ -x "$_repo/.venv/bin/python" ]; then
    PY="$_repo/.venv/bin/python"
else
    PY="$(command -v python3)"
fi
export PYTHONPATH="$_repo${PYTHONPATH:+:$PYTHONPATH}"
