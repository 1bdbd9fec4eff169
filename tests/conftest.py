import os
import sys
from pathlib import Path

import pytest
import torch
from xdist.scheduler import LoadScopeScheduling

# the helpers the tests share with the benchmarks (toy_data, calibrate_constants) live in scripts/bench/
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

if not torch.cuda.is_available():
    # No GPU: the Triton kernels run in Triton's interpreter on CPU tensors
    # (tests/test_triton_kernels.py); read by triton when it is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fairseq_normmatters  # noqa: E402
from fairseq_normmatters.kernels import backends  # noqa: E402

# A fast path that fails raises in the test that ran it (with the kernel's traceback) instead of
# falling back to a slower path unseen; the fairseq processes the tests start inherit it. The
# tests of falling back itself turn it off (the fixture `falls_back`).
os.environ[backends.STRICT_VARIABLE] = "1"

# The tests drive fairseq in this process too, as a Python user of fairseq does; the CLI tests
# load the plugin through --user-dir. tests/test_core_without_fairseq.py checks the core alone.
fairseq_normmatters.install_fairseq_plugin()


if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # pytest-xdist runs a worker per core: each computes on one thread (the fairseq processes
    # that tests start do too: tests/cli.py), instead of every worker on every core
    torch.set_num_threads(1)


#: modules whose tests share fixtures that train or prepare: each runs whole on one worker
MODULES_RUN_WHOLE = ("test_fairseq_models.py", "test_iwslt14.py", "test_recipes.py", "test_reliability.py",
                     "test_resume.py")


def pytest_collection_modifyitems(items):
    """The tests marked long first, the others after them, each group in its usual order."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


class ModulesWholeTestsOneByOne(LoadScopeScheduling):
    """pytest-xdist's load scheduling (scripts/test.sh) with each module of MODULES_RUN_WHOLE as
    one unit, so that its fixtures are made once: a worker with at most two tests queued gets the
    next unit, the modules first, then the other tests in the order above (long ones first), so
    that the workers finish together instead of one running a long test while the other waits.
    (xdist 3.8's --dist loadgroup groups nothing under pytest 9.2, which ignores the node ids
    that it rewrites.)"""

    def _split_scope(self, nodeid):
        module = nodeid.split("::")[0]
        return module if Path(module).name in MODULES_RUN_WHOLE else nodeid


def pytest_xdist_make_scheduler(config, log):
    return ModulesWholeTestsOneByOne(config, log) if config.getvalue("dist") == "load" else None


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """The tiny de-en corpus (tests/cli.py) binarized by fairseq-preprocess, shared by the tests
    that train on it (they only read it)."""
    from cli import preprocess, write_parallel_text
    root = tmp_path_factory.mktemp("tiny")
    return preprocess(write_parallel_text(root / "raw"), root / "bin")


@pytest.fixture
def falls_back(monkeypatch):
    """For the tests of falling back: a failing backend falls back (warned) instead of raising;
    the failures the test made are forgotten after it."""
    monkeypatch.setenv(backends.STRICT_VARIABLE, "0")
    backends.failures.clear()
    yield
    backends.failures.clear()
