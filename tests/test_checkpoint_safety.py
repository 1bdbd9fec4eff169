"""Importing the plugin allow-lists argparse.Namespace for weights-only loading, and no more."""

import argparse
import os
import pickle

import pytest
import torch

import fairseq_normmatters  # noqa: F401  (registers the allow-list)


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
