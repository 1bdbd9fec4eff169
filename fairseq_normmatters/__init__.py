"""fairseq_normmatters: the normalization schemes of "Norm matters" (Hoffer et al., 2018).

The package's top level is the norm core, which imports torch and never fairseq, and works in
any PyTorch model:

    constants.py     the calibration constants C of the l1, linf and top-k scales
    norms.py         the layer norms (functional and modules) and their scales
    batch_norm.py    the batch norms
    kinds.py         the one table of norm kinds: build_norm, build_batch_norm
    weight_norm.py   weight normalization and bounded weight normalization (BWN)
    convert.py       replace_layer_norms: swap the layer norms of any built model
    kernels/         the fast forward and backward of the l1/linf/topk/rms layer norms

    >>> from fairseq_normmatters import build_norm, apply_weight_norm, replace_layer_norms

The fairseq side, `fairseq_plugin/` (the models, and what the plugin changes in fairseq), is
installed when fairseq loads the plugin (`--user-dir`): fairseq is then already imported. A
Python user of fairseq who imports this package before fairseq calls `install_fairseq_plugin()`.
`recipes/` holds the WMT14 and IWSLT14 pipelines that `scripts/*.sh` run.
"""

import sys

from .batch_norm import DeviationBatchNorm
from .constants import l1_constant, linf_constant, topk_constant
from .convert import replace_layer_norms
from .kinds import BATCH_NORM_KINDS, NORM_KINDS, build_batch_norm, build_norm
from .norms import DeviationNorm, L2Norm, RMSNorm
from .weight_norm import (
    WEIGHT_NORM_MODES,
    apply_weight_norm,
    bake_weight_norms,
    bounded_weight_norm,
    remove_weight_norm,
)

__all__ = [
    "BATCH_NORM_KINDS", "NORM_KINDS", "WEIGHT_NORM_MODES", "DeviationBatchNorm", "DeviationNorm",
    "L2Norm", "RMSNorm", "apply_weight_norm", "bake_weight_norms", "bounded_weight_norm",
    "build_batch_norm", "build_norm", "install_fairseq_plugin", "l1_constant", "linf_constant",
    "remove_weight_norm", "replace_layer_norms", "topk_constant",
]


def install_fairseq_plugin() -> None:
    """Register the plugin's fairseq models and make its fairseq fixes (see fairseq_plugin);
    idempotent. fairseq's --user-dir does this by itself."""
    from .fairseq_plugin import install
    install()


if "fairseq" in sys.modules:  # fairseq is loading the plugin (--user-dir), or was imported first
    install_fairseq_plugin()
