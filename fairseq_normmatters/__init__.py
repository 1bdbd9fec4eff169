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

(each name is imported from its module on first use).

The fairseq side, `fairseq_plugin/` (the models, and what the plugin changes in fairseq), is
installed when fairseq loads the plugin (`--user-dir`): fairseq is then already imported. A
Python user of fairseq who imports this package before fairseq calls `install_fairseq_plugin()`.
`recipes/` holds the WMT14 and IWSLT14 pipelines that `scripts/*.sh` run.
"""

import importlib
import sys

# name -> the module that defines it; imported on first use (PEP 562), so that a script of the
# recipes that never builds a norm (prepare, the comparison's parent, the table) does not pay
# for importing the norm core
_PUBLIC = {
    "DeviationBatchNorm": "batch_norm", "BATCH_NORM_KINDS": "kinds", "NORM_KINDS": "kinds",
    "build_batch_norm": "kinds", "build_norm": "kinds", "l1_constant": "constants",
    "linf_constant": "constants", "topk_constant": "constants", "replace_layer_norms": "convert",
    "DeviationNorm": "norms", "L2Norm": "norms", "RMSNorm": "norms", "WEIGHT_NORM_MODES": "weight_norm",
    "apply_weight_norm": "weight_norm", "bake_weight_norms": "weight_norm",
    "bounded_weight_norm": "weight_norm", "remove_weight_norm": "weight_norm",
}

__all__ = sorted([*_PUBLIC, "install_fairseq_plugin"])


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_PUBLIC])


def install_fairseq_plugin() -> None:
    """Register the plugin's fairseq models and make its fairseq fixes (see fairseq_plugin);
    idempotent. fairseq's --user-dir does this by itself."""
    from .fairseq_plugin import install
    install()


if "fairseq" in sys.modules:  # fairseq is loading the plugin (--user-dir), or was imported first
    install_fairseq_plugin()
