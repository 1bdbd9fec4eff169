"""The code examples of the README, the docs and the package's docstrings run as written."""

import doctest
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_core_without_fairseq import core_modules

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CORE_MODULES = [".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                for path in core_modules()]


def fenced_blocks(language):
    """(document, block) for every ```language block of the README and docs/*.md."""
    return [(path.name, block) for path in DOCUMENTS
            for block in re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), re.S | re.M)]


def test_the_documents_have_the_examples_these_tests_run():
    assert len(fenced_blocks("python")) == 1
    assert any("fairseq-train bin --user-dir" in block for _, block in fenced_blocks("bash"))


@pytest.mark.parametrize("document, block", fenced_blocks("python"))
def test_python_example_runs(document, block):
    exec(compile(block, document, "exec"), {"__name__": "__example__"})


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples_run(name):
    if name.endswith(".triton_kernels"):
        pytest.importorskip("triton")
    module = importlib.import_module(name)
    examples = [test for test in doctest.DocTestFinder().find(module) if test.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in examples:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) of {name} failed (output above)"


@pytest.mark.long
def test_readme_tiny_run_runs_as_written(tmp_path):
    """The README's "tiny run to copy", with this environment in place of `source .venv/bin/activate`."""
    [block] = [block for _, block in fenced_blocks("bash") if "fairseq-train bin --user-dir" in block]
    activate, script = block.split("\n", 1)
    assert activate == "source .venv/bin/activate"
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=environment,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    bleu = re.search(r"BLEU = ([\d.]+)", result.stdout + result.stderr)
    # 56.2 BLEU here after the example's 300 updates (0.9 after 100)
    assert bleu and float(bleu.group(1)) > 40, (result.stdout + result.stderr)[-3000:]
    assert re.search(r"valid on 'test' subset \| loss ([\d.]+)", result.stdout + result.stderr)
