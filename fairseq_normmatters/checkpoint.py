"""Let torch.load(weights_only=True) read fairseq checkpoints, and nothing more; name unreadable ones.

A fairseq checkpoint pickles its training options as an argparse.Namespace, the one global
outside torch's weights-only allow-list that fairseq needs. Importing the plugin registers
exactly that class; every other global is still refused by torch.
"""

import argparse
import functools
import os
import shutil
import zipfile

import torch

FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def allow_fairseq_checkpoints() -> None:
    """Add argparse.Namespace to torch's weights-only allow-list (idempotent)."""
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))


class UnreadableCheckpointError(RuntimeError):
    """A checkpoint file that torch cannot read (truncated, corrupt, not a checkpoint)."""


def explain_unreadable_checkpoints() -> None:
    """Make fairseq's load_checkpoint_to_cpu (used by fairseq-train's resume and --restore-file,
    fairseq-generate, -validate, -interactive) say which file is unreadable and which other
    checkpoints are there, instead of a bare OSError. Refused pickled globals pass unchanged."""
    from fairseq import checkpoint_utils

    load = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(load, "explains_unreadable", False):
        return

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return load(path, *args, **kwargs)
        except (OSError, RuntimeError, EOFError, zipfile.BadZipFile) as error:
            if not os.path.isfile(path):
                raise
            raise UnreadableCheckpointError(describe_unreadable(path, error)) from None

    load_checkpoint_to_cpu.explains_unreadable = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def describe_unreadable(path, error) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    others = sorted(f for f in os.listdir(folder) if f.endswith(".pt") and f != name)
    return (f"checkpoint {path} cannot be read ({type(error).__name__}: {error}): it is truncated or "
            f"corrupt. Left untouched, as are the other checkpoints in {folder}: {', '.join(others) or 'none'}; "
            f"resume from one of them with --restore-file PATH, or move {name} away.")


def copy_checkpoints_atomically() -> None:
    """fairseq saves checkpoint_E_U.pt atomically but then *copies* it over checkpoint_last.pt in
    place: a crash during that copy leaves a truncated checkpoint_last.pt (seen in
    tests/test_resume.py). Give checkpoint_utils a PathManager whose local copy writes a
    temporary file and renames it, so checkpoint_last.pt is always the old or the new one."""
    from fairseq import checkpoint_utils

    base = checkpoint_utils.PathManager
    if getattr(base, "copies_atomically", False):
        return

    class AtomicCopyPathManager(base):
        copies_atomically = True

        @staticmethod
        def copy(src_path, dst_path, overwrite=False):
            if "://" in str(src_path) + str(dst_path):
                return base.copy(src_path, dst_path, overwrite)
            if os.path.exists(dst_path) and not overwrite:
                return False
            temporary = f"{dst_path}.tmp"
            shutil.copyfile(src_path, temporary)
            os.replace(temporary, dst_path)
            return True

    checkpoint_utils.PathManager = AtomicCopyPathManager
