#!/usr/bin/env bash
# The promised environment that scripts/test.sh's .venv (Python 3.11, torch 2.13.0+cpu) is not:
# Python 3.12 with the oldest torch the package accepts, torch 2.7.0 (PyPI's Linux wheel, a CUDA
# build of about 3 GB, run on the CPU), in .venv-py3.12-torch2.7. It installs the package there
# with pip (NORMMATTERS_INSTALLER=pip; test.sh's set-up uses uv, so CI runs both ways of
# setup_env.sh) and runs the smoke tests: the environment imports, the norm core and its native
# and compiled paths, the README's tiny run (fairseq-preprocess, -train --user-dir, -generate,
# -validate in new processes), fairseq-train + generate + validate with a checkpoint reload, and
# checkpoint safety. (The Triton interpreter tests need triton >= 3.9: torch 2.7 pins 3.3, whose
# interpreter refuses the kernels' range() over an argument; scripts/test.sh runs them.)
# Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."

python312="$(command -v python3.12 2>/dev/null && python3.12 -c '' 2>/dev/null)" \
    || python312="$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)"
if [ -z "$python312" ]; then
    echo "error: no Python 3.12 found (python3.12 on PATH or a pyenv 3.12 version)" >&2
    exit 1
fi
NORMMATTERS_VENV="$PWD/.venv-py3.12-torch2.7" NORMMATTERS_BASE_PYTHON="$python312" NORMMATTERS_INSTALLER=pip \
    NORMMATTERS_TORCH="torch==2.7.0" NORMMATTERS_EXTRAS="test" source scripts/setup_env.sh
"$PY" -c 'import sys, torch, fairseq; print(f"[smoke] Python {sys.version.split()[0]}, torch {torch.__version__}, fairseq {fairseq.__version__}")'
exec "$PY" -m pytest -q -n "${NORMMATTERS_TEST_WORKERS:-auto}" -p no:cacheprovider "$@" \
    tests/test_environment.py \
    tests/test_core_without_fairseq.py \
    tests/test_checkpoint_safety.py \
    tests/test_norms.py \
    "tests/test_kernels.py::test_fast_path_matches_eager_reference" \
    "tests/test_docs_examples.py::test_readme_tiny_run_runs_as_written" \
    "tests/test_fairseq_models.py::test_train_generate_validate[transformer_l1]" \
    "tests/test_fairseq_models.py::test_train_generate_validate[lstm_bwn]"
