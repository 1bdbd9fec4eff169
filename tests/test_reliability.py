"""A hostile checkpoint is refused by every path that loads checkpoints, and nothing in it runs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli import TINY_TRANSFORMER, USER_DIR, preprocess, run, train, write_parallel_text

REPO = Path(__file__).resolve().parent.parent


class RunsACommand:
    """Unpickling this calls open(sentinel, "w"): a stand-in for any code a pickle can run."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(data, save dir whose checkpoint_last.pt is hostile, hostile checkpoint, sentinel path)."""
    root = tmp_path_factory.mktemp("hostile")
    data = preprocess(write_parallel_text(root / "raw"), root / "bin")
    save = root / "save"
    train(data, save, "norm_transformer_l1_iwslt_de_en", *TINY_TRANSFORMER, updates=5)
    sentinel = root / "payload-ran"
    state = torch.load(save / "checkpoint_last.pt")
    state["extra_state"]["note"] = RunsACommand(sentinel)
    torch.save(state, save / "checkpoint_last.pt")
    return data, save, save / "checkpoint_last.pt", sentinel


def assert_refused(result, sentinel):
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Unsupported global: GLOBAL io.open" in output, output[-2000:]  # builtins.open is io.open
    assert "add_safe_globals" in output  # torch says how to allow it deliberately
    assert not sentinel.exists(), "the pickled payload ran"


@pytest.mark.parametrize("tool", ["fairseq-generate", "fairseq-validate"])
def test_evaluation_tools_refuse(hostile, tool):
    data, _, checkpoint, sentinel = hostile
    extra = ["--task", "translation"] if tool == "fairseq-validate" else []
    result = run(tool, data, *extra, "--user-dir", USER_DIR, "--path", checkpoint, "--cpu",
                 "--max-tokens", "2000", check=False)
    assert_refused(result, sentinel)


def test_restore_file_refuses(hostile, tmp_path):
    data, _, checkpoint, sentinel = hostile
    result = train(data, tmp_path, "norm_transformer_l1_iwslt_de_en", *TINY_TRANSFORMER,
                   "--restore-file", checkpoint, updates=10, check=False)
    assert_refused(result, sentinel)


def test_evaluate_script_refuses(hostile, tmp_path):
    data, save, _, sentinel = hostile
    prepared = tmp_path / "prepared"
    (prepared / "raw").mkdir(parents=True)
    shutil.copytree(data, prepared / "bin")
    (prepared / "raw" / "test.en").write_text("x\n")
    result = subprocess.run([str(REPO / "scripts" / "evaluate.sh"), str(save), str(prepared), "--cpu"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                                 "NORMMATTERS_PYTHON": sys.executable})
    assert_refused(result, sentinel)
