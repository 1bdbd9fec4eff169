"""fairseq_normmatters: the normalization schemes of "Norm matters" (Hoffer et al., 2018).

Importing the package (or `--user-dir fairseq_normmatters`) allow-lists fairseq checkpoints
for torch.load(weights_only=True) and makes fairseq load them so; makes fairseq name an
unreadable checkpoint and a failed save, copy checkpoint_last.pt atomically and resume on the
uninterrupted run's batches; checks translation data directories before fairseq reads them;
and exports the norm core and weight normalization.
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

allow_fairseq_checkpoints()
load_fairseq_checkpoints_weights_only()
explain_unreadable_checkpoints()
explain_failed_checkpoint_saves()
copy_checkpoints_atomically()
resume_with_the_runs_own_batches()
check_data_dirs_before_setup()

from .constants import l1_constant, linf_constant, topk_constant  # noqa: E402
from .norms import (  # noqa: E402
    BATCH_NORM_KINDS,
    NORM_KINDS,
    DeviationBatchNorm,
    DeviationNorm,
    L2Norm,
    RMSNorm,
    build_batch_norm,
    build_norm,
)
from .weight_norm import (  # noqa: E402
    WEIGHT_NORM_MODES,
    apply_weight_norm,
    bounded_weight_norm,
    remove_weight_norm,
)

__all__ = [
    "BATCH_NORM_KINDS", "NORM_KINDS", "WEIGHT_NORM_MODES", "DeviationBatchNorm", "DeviationNorm",
    "L2Norm", "RMSNorm", "allow_fairseq_checkpoints", "apply_weight_norm", "bounded_weight_norm",
    "build_batch_norm", "build_norm", "l1_constant", "linf_constant", "remove_weight_norm",
    "topk_constant",
]

from . import models  # noqa: E402,F401  (registers norm_transformer / norm_lstm with fairseq)
