"""Let torch.load(weights_only=True) read fairseq checkpoints, and nothing more; name unreadable ones.

A fairseq checkpoint pickles its training options as an argparse.Namespace, the one global
outside torch's weights-only allow-list that fairseq needs. Importing the plugin registers
exactly that class; every other global is still refused by torch. fairseq's checkpoint_utils
leaves weights_only to torch's default (unsafe before torch 2.6, and one that an environment
variable of torch's can turn off): the plugin makes it explicit there.
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


class WeightsOnlyTorch:
    """The torch module, except that load() always passes weights_only=True: whatever the torch
    version's default or the environment says, a checkpoint cannot run code when it is read."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        return getattr(self.module, name)

    def load(self, *args, **kwargs):
        return self.module.load(*args, **{**kwargs, "weights_only": True})


def load_fairseq_checkpoints_weights_only() -> None:
    """Give fairseq's checkpoint_utils (load_checkpoint_to_cpu: resume, --restore-file,
    fairseq-generate, -validate, -interactive, hub loading; and its EMA loader) a torch whose
    load() is weights-only (idempotent). The rest of fairseq is untouched."""
    from fairseq import checkpoint_utils

    if not isinstance(checkpoint_utils.torch, WeightsOnlyTorch):
        checkpoint_utils.torch = WeightsOnlyTorch(checkpoint_utils.torch)


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
    temporary file and renames it, so checkpoint_last.pt is always the old or the new one; a
    copy that fails (a full disk) removes its temporary and raises CheckpointSaveError."""
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
            try:
                shutil.copyfile(src_path, temporary)
                os.replace(temporary, dst_path)
            except OSError as error:
                written = remove_partial_file(temporary)
                needed = f"; the copy needs {os.path.getsize(src_path) / 1e6:.0f} MB"
                raise CheckpointSaveError(describe_failed_save(dst_path, error, written, needed)) from None
            return True

    checkpoint_utils.PathManager = AtomicCopyPathManager


def resume_with_the_runs_own_batches() -> None:
    """Make a run resumed in epoch E > 1 train on the batches the uninterrupted run trains on.

    fairseq makes the training batches once per run, when the trainer first builds its epoch
    iterator: `dataset.ordered_indices()` under numpy seed (seed + epoch) breaks ties among
    sentences of equal length at random, then the sorted indices are cut into batches that every
    later epoch only reorders. An uninterrupted run builds them in epoch 1; a run resumed from a
    checkpoint of epoch E builds them with seed + E, so its batches hold other sentences (the
    same sizes) and every loss after the resume differs. Wrap Trainer.get_train_iterator so that
    an iterator it builds for a later epoch is built with epoch 1's seed, then set to epoch E.
    Sharded data and tasks that rebuild their batches every epoch are left as they are: their
    batches already follow the epoch in both runs."""
    from fairseq.trainer import Trainer

    build = Trainer.get_train_iterator
    if getattr(build, "builds_the_first_epochs_batches", False):
        return

    @functools.wraps(build)
    def get_train_iterator(self, epoch, *args, **kwargs):
        train_subset = self.cfg.dataset.train_subset
        if epoch == 1 or self.task.has_sharded_data(train_subset) or getattr(self.task.cfg, "rebuild_batches", False):
            return build(self, epoch, *args, **kwargs)
        iterator = build(self, 1, *args, **kwargs)
        if iterator.next_epoch_idx != epoch:  # a new iterator, not the run's cached one about to start epoch E
            iterator.epoch = epoch
        return iterator

    get_train_iterator.builds_the_first_epochs_batches = True
    Trainer.get_train_iterator = get_train_iterator


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written (a full disk, a quota, a vanished directory)."""


def explain_failed_checkpoint_saves() -> None:
    """fairseq writes a checkpoint to NAME.tmp and renames it; when the write fails (on a full
    disk torch says only "file write failed"), it tries twice more, logs a traceback and leaves
    the partial NAME.tmp behind. Make checkpoint_utils.torch_persistent_save remove that file
    and raise one CheckpointSaveError naming the checkpoint, the space left and the checkpoints
    that are intact (idempotent)."""
    from fairseq import checkpoint_utils

    save = checkpoint_utils.torch_persistent_save
    if getattr(save, "explains_failures", False):
        return

    @functools.wraps(save)
    def torch_persistent_save(obj, filename, *args, **kwargs):
        try:
            return save(obj, filename, *args, **kwargs)
        except Exception as error:
            if "://" in str(filename):
                raise
            written = remove_partial_file(f"{filename}.tmp")
            raise CheckpointSaveError(describe_failed_save(filename, error, written)) from None

    torch_persistent_save.explains_failures = True
    checkpoint_utils.torch_persistent_save = torch_persistent_save


def remove_partial_file(path: str) -> int:
    """Delete `path` if it exists; how many bytes it held (0 if none)."""
    try:
        size = os.path.getsize(path)
        os.remove(path)
        return size
    except OSError:
        return 0


def describe_failed_save(path, error, written: int, needed: str = "") -> str:
    folder, name = os.path.split(os.path.abspath(path))
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:.0f} MB are free there"
        intact = sorted(f for f in os.listdir(folder) if f.endswith(".pt"))
    except OSError:
        free, intact = "its folder cannot be read", []
    return (f"checkpoint {path} could not be saved ({type(error).__name__}: {error}): {written / 1e6:.0f} MB "
            f"were written before it failed and are removed; {free}{needed}. The checkpoints saved before are intact "
            f"({', '.join(intact) or 'none'}): free space (or give another --save-dir) and rerun the same "
            "command to resume from checkpoint_last.pt.")
