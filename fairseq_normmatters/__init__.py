"""fairseq_normmatters: the normalization schemes of "Norm matters" (Hoffer et al., 2018).

The norm core (layer and batch norms, their constants, weight normalization, the layer-norm
swap for any model) works in any PyTorch model and does not import fairseq:

    >>> from fairseq_normmatters import build_norm, apply_weight_norm, replace_layer_norms

The fairseq side (the models, and the fixes of `fairseq_plugin`) is installed when fairseq
loads the plugin (`--user-dir`): fairseq is then already imported. A Python user of fairseq
who imports this package before fairseq calls `install_fairseq_plugin()`.
"""

import sys

from .checkpoint import allow_fairseq_checkpoints
from .constants import l1_constant, linf_constant, topk_constant
from .convert import replace_layer_norms
from .norms import (
    BATCH_NORM_KINDS,
    NORM_KINDS,
    DeviationBatchNorm,
    DeviationNorm,
    L2Norm,
    RMSNorm,
    build_batch_norm,
    build_norm,
)
from .weight_norm import (
    WEIGHT_NORM_MODES,
    apply_weight_norm,
    bake_weight_norms,
    bounded_weight_norm,
    remove_weight_norm,
)

__all__ = [
    "BATCH_NORM_KINDS", "NORM_KINDS", "WEIGHT_NORM_MODES", "DeviationBatchNorm", "DeviationNorm",
    "L2Norm", "RMSNorm", "allow_fairseq_checkpoints", "apply_weight_norm", "bake_weight_norms",
    "bounded_weight_norm", "build_batch_norm", "build_norm", "install_fairseq_plugin", "l1_constant",
    "linf_constant", "remove_weight_norm", "replace_layer_norms", "topk_constant",
]


def install_fairseq_plugin() -> None:
    """Register the plugin's fairseq models and make its fairseq fixes (see fairseq_plugin);
    idempotent. fairseq's --user-dir does this by itself."""
    from .fairseq_plugin import install
    install()


if "fairseq" in sys.modules:  # fairseq is loading the plugin (--user-dir), or was imported first
    install_fairseq_plugin()
