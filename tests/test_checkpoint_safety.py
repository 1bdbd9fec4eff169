"""Importing the plugin allow-lists argparse.Namespace for weights-only loading, and no more."""

import argparse
import os
import pickle

import pytest
import torch

import fairseq_normmatters  # registers the allow-list and the weights-only loading


def test_checkpoint_with_namespace_loads_with_default_weights_only(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"args": argparse.Namespace(arch="norm_transformer", lr=[0.1]),
                "model": {"w": torch.ones(2)}}, path)
    state = torch.load(path)
    assert state["args"].arch == "norm_transformer"


class RunsACommand:
    sentinel = None

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_foreign_global_is_refused_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "pwned"
    payload = RunsACommand()
    payload.sentinel = str(sentinel)
    path = tmp_path / "hostile.pt"
    torch.save({"args": argparse.Namespace(), "extra": payload}, path)
    assert not sentinel.exists()
    with pytest.raises(pickle.UnpicklingError, match="open"):
        torch.load(path)
    assert not sentinel.exists()
    assert not os.path.exists(str(sentinel))


def hostile_checkpoint(tmp_path):
    """A checkpoint that creates a file when unpickled without weights_only; and that file."""
    payload = RunsACommand()
    payload.sentinel = str(tmp_path / "pwned")
    path = tmp_path / "hostile.pt"
    torch.save({"args": argparse.Namespace(), "model": {"w": torch.ones(2)}, "extra": payload}, path)
    return path, tmp_path / "pwned"


def plugin_load_paths():
    from fairseq import checkpoint_utils

    from fairseq_normmatters.recipes.run.evaluate import average_checkpoints
    return {"fairseq load_checkpoint_to_cpu": lambda path, out: checkpoint_utils.load_checkpoint_to_cpu(str(path)),
            "recipes average_checkpoints": lambda path, out: average_checkpoints([path], out / "averaged.pt")}


@pytest.mark.parametrize("load_path", sorted(plugin_load_paths()))
def test_every_load_path_refuses_code_even_where_the_default_is_not_weights_only(tmp_path, monkeypatch, load_path):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 gives torch.load the default of torch < 2.6: only a
    load that passes weights_only=True itself stays safe."""
    path, sentinel = hostile_checkpoint(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    from fairseq_normmatters.recipes.common import RecipeError
    with pytest.raises((pickle.UnpicklingError, RecipeError), match=r"Unsupported global: GLOBAL _?io\.open"):
        plugin_load_paths()[load_path](path, tmp_path)
    assert not sentinel.exists()


def test_no_torch_load_in_the_package_or_scripts_leaves_weights_only_to_the_default():
    import ast
    from pathlib import Path

    root = Path(fairseq_normmatters.__file__).parent
    sources = [*root.rglob("*.py"), *(root.parent / "scripts").rglob("*.py")]
    calls = [(source.name, node) for source in sources for node in ast.walk(ast.parse(source.read_text()))
             if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("torch.load")]
    assert calls, "found no torch.load call to check"
    unsafe = [f"{name}:{node.lineno}" for name, node in calls
              if not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)]
    assert unsafe == []
