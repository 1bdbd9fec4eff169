"""The fairseq side of the package: its models, and what it changes in fairseq and why.

fairseq imports the package when it loads the plugin (`--user-dir`, in every spawned worker
too), always after importing itself; the package then calls `install()`. A Python user of
fairseq who imported the package first calls `fairseq_normmatters.install_fairseq_plugin()`.
The norm core (the package's top level: norms, kinds, constants, weight norm, kernels, convert)
never imports fairseq nor this subpackage.

`install()` (idempotent) registers `norm_transformer`, `norm_lstm` and their architectures,
and makes these changes to fairseq, each one a wrapper around one fairseq function:

| change | in fairseq | why |
|---|---|---|
| `argparse.Namespace` on torch's weights-only allow-list | `torch.serialization` | fairseq pickles its options as one; every other global stays refused |
| `weights_only=True` passed explicitly | `checkpoint_utils`' `torch.load` | safe whatever torch's default or its environment override says |
| an unreadable checkpoint is named, with the others beside it | `checkpoint_utils.load_checkpoint_to_cpu` | fairseq ends in a bare OSError |
| a failed save removes its partial `.tmp` and names file, free space, intact checkpoints | `checkpoint_utils.torch_persistent_save` | on a full disk fairseq says only "file write failed" and leaves the part |
| `checkpoint_last.pt` is replaced by rename, not copied over in place | `checkpoint_utils.PathManager.copy` | a kill during the copy left it truncated |
| a run resumed in epoch E > 1 trains on the uninterrupted run's batches | `Trainer.get_train_iterator` | fairseq built them with the seed of epoch E: another run |
| data directories are checked before they are read | `TranslationTask.setup_task` | fairseq ends in a FileNotFoundError from inside its code |
| `--log-file` gets each line once | `progress_bar.progress_bar` | fairseq added a handler every epoch: epoch N's lines written N times |
"""

from .checkpoint import (
    allow_fairseq_checkpoints,
    copy_checkpoints_atomically,
    explain_failed_checkpoint_saves,
    explain_unreadable_checkpoints,
    load_fairseq_checkpoints_weights_only,
    resume_with_the_runs_own_batches,
)
from .data_dir import check_data_dirs_before_setup
from .log_file import log_each_line_once

FAIRSEQ_CHANGES = (
    allow_fairseq_checkpoints,
    load_fairseq_checkpoints_weights_only,
    explain_unreadable_checkpoints,
    explain_failed_checkpoint_saves,
    copy_checkpoints_atomically,
    resume_with_the_runs_own_batches,
    check_data_dirs_before_setup,
    log_each_line_once,
)


def install() -> None:
    """Make the changes above and register the models (each step idempotent)."""
    for change in FAIRSEQ_CHANGES:
        change()
    from . import models  # noqa: F401  (registers norm_transformer / norm_lstm with fairseq)
