"""The one table of norm kinds: what builds each kind's layer norm and batch norm, and the
options it takes. build_norm, build_batch_norm, the fairseq flags' choices and their error
messages all read it.

    >>> from fairseq_normmatters import build_norm, build_batch_norm
    >>> norm = build_norm("topk", 512, k=8)            # C = C_Linf(512), the authors' choice
    >>> bn = build_batch_norm("l1", 64, dim=2)          # for (N, C, H, W)
    >>> fp16 = build_norm("l2", 512, accumulate="fp16")  # statistics summed in fp16 (accumulation.py)
"""

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch.nn as nn

from .batch_norm import DeviationBatchNorm, torch_batch_norm
from .norms import DeviationNorm, L2Norm, RMSNorm, Shape, identity_norm


@dataclass(frozen=True)
class NormKind:
    """How one kind is built: `layer(normalized_shape, eps, elementwise_affine, **options)`,
    `batch(num_features, dim, eps, momentum, affine, track_running_stats, **options)` (None: no
    batch norm of this kind), and the `options` it takes (`required` of them must be given)."""

    layer: Callable[..., nn.Module]
    batch: Optional[Callable[..., nn.Module]] = None
    options: Tuple[str, ...] = ()
    required: Tuple[str, ...] = ()


def _deviation(kind: str, **options) -> NormKind:
    return NormKind(functools.partial(DeviationNorm, kind), functools.partial(DeviationBatchNorm, kind),
                    **options)


NORMS: Dict[str, NormKind] = {
    "l2": NormKind(L2Norm, torch_batch_norm, options=("accumulate",)),
    "l1": _deviation("l1", options=("constant", "accumulate")),
    "linf": _deviation("linf", options=("constant", "accumulate")),
    "topk": _deviation("topk", options=("constant", "k", "accumulate"), required=("k",)),
    "rms": NormKind(RMSNorm, options=("accumulate",)),
    "none": NormKind(identity_norm),
}
#: options of the layer norms only: the batch norms reduce in float32
LAYER_ONLY_OPTIONS = ("accumulate",)
NORM_KINDS = tuple(NORMS)
BATCH_NORM_KINDS = tuple(name for name, kind in NORMS.items() if kind.batch is not None)


def norm_kind(name: str, options: dict, batch: bool = False) -> NormKind:
    """NORMS[name], once `name` is known (for a batch norm: has one) and `options` are the ones
    it takes, with the required ones given; else ValueError naming what is allowed."""
    family, known = ("batch-norm", BATCH_NORM_KINDS) if batch else ("norm", NORM_KINDS)
    if name not in known:
        raise ValueError(f"{family} kind {name!r} is unknown; known kinds: {', '.join(known)}")
    kind = NORMS[name]
    allowed = [option for option in kind.options if not (batch and option in LAYER_ONLY_OPTIONS)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        layer_only = " (accumulate is an option of the layer norms: the batch norms reduce in float32)" \
            if batch and set(unknown) & set(LAYER_ONLY_OPTIONS) else ""
        raise ValueError(f"{family} kind {name!r} does not take options {unknown}; it takes "
                         f"{', '.join(allowed) or 'no options'}{layer_only}")
    missing = [option for option in kind.required if options.get(option) is None]
    if missing:
        raise ValueError(f"{family} kind {name!r} needs the option {', '.join(missing)}")
    return kind


def build_norm(kind: str, normalized_shape: Shape, eps=1e-5, elementwise_affine=True, **options):
    """A layer norm of `kind` (NORM_KINDS) over the trailing `normalized_shape`.

    options: `constant` ("paper", "gaussian" or a float) for l1/linf/topk, `k` for topk,
    `accumulate` ("float32", "fp16", "bf16": the format of the statistics' sums) for all but none.
    """
    return norm_kind(kind, options).layer(normalized_shape, eps, elementwise_affine, **options)


def build_batch_norm(kind, num_features, dim=2, eps=1e-5, momentum=0.1, affine=True,
                     track_running_stats=True, **options):
    """A batch norm of `kind` (BATCH_NORM_KINDS) for (N, C[, L]) inputs (dim=1) or (N, C, H, W)
    (dim=2): torch's BatchNorm1d/2d for "l2", DeviationBatchNorm (options `constant`, `k`) else."""
    return norm_kind(kind, options, batch=True).batch(num_features, dim, eps, momentum, affine,
                                                     track_running_stats, **options)
