"""Layer and batch normalization with the L2, L1, L-infinity and top-k scales of "Norm matters".

For the centered row d = x - mean(x) over the normalized features (n of them):

    l1, linf, topk:  y = gamma * d / (C * scale(d) + eps) + beta      (eps outside the scale)
    l2:              y = gamma * d / sqrt(mean(d^2) + eps) + beta     (torch's LayerNorm)
    rms:             y = gamma * x / sqrt(mean(x^2) + eps) + beta     (no centering)
    none:            y = x

scale(d) is mean|d| (l1), max|d| (linf) or the mean of the k largest |d| (topk); C comes from
`fairseq_normmatters.constants`. l1/linf/topk reduce in float32 and return the input dtype.

    >>> from fairseq_normmatters import build_norm
    >>> norm = build_norm("l1", 512)            # C = sqrt(pi/2)
    >>> y = norm(torch.randn(10, 512))
"""

import math
from typing import Callable, Dict, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels
from .kernels.rows import affine as _affine, compute_dtype
from .constants import check_constant, check_topk, resolve_constant

Shape = Union[int, Sequence[int]]


def mean_abs(d: torch.Tensor, k=None) -> torch.Tensor:
    """mean_i |d_i| over the last dimension (kept)."""
    return d.abs().mean(-1, keepdim=True)


def max_abs(d: torch.Tensor, k=None) -> torch.Tensor:
    """max_i |d_i| over the last dimension (kept)."""
    return d.abs().amax(-1, keepdim=True)


def topk_mean_abs(d: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the k largest |d_i| over the last dimension (kept)."""
    check_topk(d.shape[-1], k)
    return d.abs().topk(k, dim=-1).values.mean(-1, keepdim=True)


#: kind -> raw dispersion statistic of the centered last dimension
SCALE_FUNCTIONS: Dict[str, Callable] = {"l1": mean_abs, "linf": max_abs, "topk": topk_mean_abs}


def deviation_scale(d: torch.Tensor, kind: str, constant="paper", k=None) -> torch.Tensor:
    """C * scale(d) over the last dimension: the estimate of sigma that l1/linf/topk divide by."""
    c = resolve_constant(kind, d.shape[-1], constant, k)
    return c * SCALE_FUNCTIONS[kind](d, k)


def deviation_norm(x, kind, normalized_shape, weight=None, bias=None, eps=1e-5,
                   constant="paper", k=None, backend=None):
    """Functional l1 / linf / topk layer norm: gamma * d / (C * scale(d) + eps) + beta.

    backend: "eager" (deviation_norm_reference), "native", "compiled", "triton" or "auto";
    None = the process-wide choice (see fairseq_normmatters.kernels).
    """
    size = normalized_size(x, normalized_shape, weight, bias)
    name = kernels.backend_for(x, backend, kind)
    if name == "eager":
        return deviation_norm_reference(x, kind, normalized_shape, weight, bias, eps, constant, k)
    return kernels.fused_norm(x, kind, size, weight, bias, eps,
                              resolve_constant(kind, size, constant, k), k, name)


def deviation_norm_reference(x, kind, normalized_shape, weight=None, bias=None, eps=1e-5,
                             constant="paper", k=None):
    """The eager reference of deviation_norm: torch's autograd through the formula itself."""
    shape = _as_shape(normalized_shape)
    rows = upcast(x).flatten(start_dim=x.dim() - len(shape))
    d = rows - rows.mean(-1, keepdim=True)
    y = (d / (deviation_scale(d, kind, constant, k) + eps)).view(x.shape)
    return _affine(y, weight, bias).to(x.dtype)


def rms_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, backend=None):
    """Functional RMSNorm: gamma * x / sqrt(mean(x^2) + eps) + beta (backend as deviation_norm)."""
    size = normalized_size(x, normalized_shape, weight, bias)
    name = kernels.backend_for(x, backend, "rms")
    if name == "eager":
        return rms_norm_reference(x, normalized_shape, weight, bias, eps)
    return kernels.fused_norm(x, "rms", size, weight, bias, eps, 1.0, None, name)


def rms_norm_reference(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The eager reference of rms_norm: torch's F.rms_norm in float32, then gamma and beta."""
    y = F.rms_norm(upcast(x), _as_shape(normalized_shape), None, eps)
    return _affine(y, weight, bias).to(x.dtype)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """x in float32 if it is a narrower float (fp16/bf16), else unchanged: the reduction dtype."""
    return x.to(compute_dtype(x))


def _as_shape(normalized_shape: Shape) -> tuple:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"normalized_shape must be positive integers, got {normalized_shape!r}")
    return shape


def normalized_size(x: torch.Tensor, normalized_shape: Shape, weight=None, bias=None) -> int:
    """The number of features a norm over normalized_shape reduces, once x is known to be
    floating point and to end with that shape and gamma/beta to have it, on x's device (as
    torch's layer_norm requires: the fast paths would otherwise cut the flattened input into
    rows across the boundaries of its own rows, or read gamma/beta past their end or from
    another device's memory)."""
    shape = _as_shape(normalized_shape)
    if not x.is_floating_point():
        raise ValueError(f"a norm needs floating-point input; got {x.dtype}")
    if tuple(x.shape[max(x.dim() - len(shape), 0):]) != shape:  # shorter input: a shorter tuple
        raise ValueError(f"a norm over normalized_shape {list(shape)} needs input of shape "
                         f"[*, {', '.join(map(str, shape))}]; got {list(x.shape)}")
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is None:
            continue
        if tuple(parameter.shape) != shape:
            raise ValueError(f"a norm over normalized_shape {list(shape)} needs {name} of that "
                             f"shape; got {list(parameter.shape)}")
        if parameter.device != x.device:
            raise ValueError(f"the norm's {name} is on {parameter.device} but its input on "
                             f"{x.device}; move both to one device")
    return math.prod(shape)


def _check_eps(eps: float) -> float:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got eps={eps!r}")
    return float(eps)


class L2Norm(nn.LayerNorm):
    """torch's LayerNorm (fused op): y = gamma * d / sqrt(mean(d^2) + eps) + beta."""

    kind = "l2"

    def __init__(self, normalized_shape: Shape, eps=1e-5, elementwise_affine=True):
        super().__init__(_as_shape(normalized_shape), _check_eps(eps), elementwise_affine)


class PlannedRowNorm(nn.Module):
    """Base of the norm modules that run as kernels.RowNormFunction (DeviationNorm, RMSNorm).

    The first call on a (device, dtype) checks the input, gamma and beta as the functional API
    does and decides the backend: a kernels.RowNormPlan, or None for the eager reference.
    Later calls check the input's trailing shape and run the plan. Moving or casting the module,
    setting an attribute a plan is made from (PLANNED: gain, bias, eps, k, constant), or changing
    the backend (kernels.generation) forgets the plans. Inside the user's torch.compile the plain
    formula runs, for the compiler to trace."""

    PLANNED = ("weight", "bias", "eps", "k", "constant", "constant_value")

    def __setattr__(self, name, value):
        if name == "eps":
            value = _check_eps(value)
        if name in self.PLANNED:
            self.__dict__.get("_plans", {}).clear()
        super().__setattr__(name, value)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.get("_plans", {}).clear()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        return {**super().__getstate__(), "_plans": {}}  # plans hold compiled functions: not pickled

    def _plan(self, x):
        if x.shape[-len(self.normalized_shape):] != self.normalized_shape:
            normalized_size(x, self.normalized_shape)  # raises the shape error
        key = (x.device, x.dtype, kernels.generation)
        plans = self.__dict__.setdefault("_plans", {})
        if key not in plans:
            size = normalized_size(x, self.normalized_shape, self.weight, self.bias)
            backend = kernels.backend_for(x, None, self.kind)
            plans[key] = None if backend == "eager" else kernels.RowNormPlan(
                self.kind, size, self.constant_value, self.eps, self.k, kernels.implementation(backend))
        return plans[key]

    def forward(self, x):
        plan = None if torch.compiler.is_compiling() else self._plan(x)
        if plan is None:
            return self.reference(x)
        return plan.run(x, self.weight, self.bias)


class RMSNorm(PlannedRowNorm):
    """RMSNorm (uncentered): y = gamma * x / sqrt(mean(x^2) + eps) + beta, eps inside the root.

    beta is kept (unlike Zhang & Sennrich) so that a LayerNorm's state_dict keys carry over.
    """

    kind = "rms"
    constant_value, k = 1.0, None  # no calibration constant

    def __init__(self, normalized_shape: Shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _init_affine(self, elementwise_affine)

    def reference(self, x):
        return rms_norm_reference(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


def _init_affine(module: nn.Module, affine: bool, shape=None) -> None:
    shape = shape if shape is not None else module.normalized_shape
    if affine:
        module.weight = nn.Parameter(torch.ones(shape))
        module.bias = nn.Parameter(torch.zeros(shape))
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


class DeviationNorm(PlannedRowNorm):
    """Layer norm with a cheap scale: y = gamma * d / (C * scale(d) + eps) + beta, d = x - mean(x).

    scale is mean|d| (kind "l1"), max|d| ("linf") or the mean of the k largest |d| ("topk");
    constant is "paper" (C_L1 = sqrt(pi/2); C_Linf(n) for linf and topk), "gaussian"
    (E[C * scale] = sigma exactly at this n, k) or a positive float.
    """

    def __init__(self, kind: str, normalized_shape: Shape, eps=1e-5, elementwise_affine=True,
                 constant="paper", k=None):
        super().__init__()
        if kind not in SCALE_FUNCTIONS:
            raise ValueError(f"DeviationNorm kind {kind!r} is unknown; allowed: {', '.join(SCALE_FUNCTIONS)}")
        self.kind = kind
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._set_scale(constant, k)
        _init_affine(self, elementwise_affine)

    def __setattr__(self, name, value):
        if name in ("constant", "k") and hasattr(self, "constant_value"):
            self._set_scale(**{"constant": self.constant, "k": self.k, name: value})
        else:
            super().__setattr__(name, value)

    def _set_scale(self, constant, k):
        """Set the options `constant` and `k` and the C they give (constant_value), all checked
        before any is set: a refused value changes nothing."""
        value = resolve_constant(self.kind, math.prod(self.normalized_shape), constant, k)
        for name, option in (("constant", constant), ("k", k), ("constant_value", value)):
            super().__setattr__(name, option)

    def reference(self, x):
        return deviation_norm_reference(x, self.kind, self.normalized_shape, self.weight, self.bias,
                                        self.eps, self.constant_value, self.k)

    def extra_repr(self):
        k = f", k={self.k}" if self.kind == "topk" else ""
        return (f"{self.kind}, {self.normalized_shape}, eps={self.eps}, "
                f"constant={self.constant!r} ({self.constant_value:.4f}){k}, "
                f"elementwise_affine={self.elementwise_affine}")


def _identity(normalized_shape, eps=1e-5, elementwise_affine=True):
    _as_shape(normalized_shape)
    return nn.Identity()


def _deviation_builder(kind):
    def build(normalized_shape, eps=1e-5, elementwise_affine=True, constant="paper", k=None):
        if kind == "topk" and k is None:
            raise ValueError("norm kind 'topk' needs the option k (1 <= k <= number of features)")
        return DeviationNorm(kind, normalized_shape, eps, elementwise_affine, constant,
                             k if kind == "topk" else None)
    return build


#: The one registry of layer-norm kinds; argparse choices are made from its keys.
NORM_BUILDERS: Dict[str, Callable[..., nn.Module]] = {
    "l2": L2Norm,
    "l1": _deviation_builder("l1"),
    "linf": _deviation_builder("linf"),
    "topk": _deviation_builder("topk"),
    "rms": RMSNorm,
    "none": _identity,
}
NORM_KINDS = tuple(NORM_BUILDERS)
#: The options each kind takes beyond shape, eps and affine.
NORM_OPTIONS: Dict[str, tuple] = {"l1": ("constant",), "linf": ("constant",), "topk": ("constant", "k")}


def build_norm(kind: str, normalized_shape: Shape, eps=1e-5, elementwise_affine=True, **options):
    """Build a layer norm of `kind` (see NORM_KINDS) over the trailing `normalized_shape`.

    options: `constant` ("paper", "gaussian" or a float) for l1/linf/topk, `k` for topk.
    """
    builder = NORM_BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"norm kind {kind!r} is unknown; known kinds: {', '.join(NORM_KINDS)}")
    allowed = NORM_OPTIONS.get(kind, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"norm kind {kind!r} does not take options {unknown}; it takes "
                         f"{', '.join(allowed) or 'no options'}")
    return builder(normalized_shape, eps, elementwise_affine, **options)


class DeviationBatchNorm(nn.Module):
    """Batch norm with the l1 / linf / topk scale, per channel (dim 1) over batch and space.

    Training: y = gamma * (x - mu_B) / (C(n) * scale(x - mu_B) + eps) + beta, n = elements per
    channel in the batch. running_mean and running_scale (the calibrated C * scale, an
    estimate of sigma) follow torch's convention: r = (1 - momentum) * r + momentum * batch
    value (momentum None: cumulative average). Eval: (x - running_mean) / (running_scale + eps).
    """

    def __init__(self, kind, num_features, dim=2, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, constant="paper", k=None):
        super().__init__()
        if kind not in SCALE_FUNCTIONS:
            raise ValueError(f"batch-norm kind {kind!r} is unknown; allowed: l2, {', '.join(SCALE_FUNCTIONS)}")
        if dim not in (1, 2):
            raise ValueError(f"batch norm dim must be 1 (N, C[, L]) or 2 (N, C, H, W), got {dim!r}")
        check_constant(constant)
        if kind == "topk" and (not isinstance(k, int) or k < 1):
            raise ValueError(f"top-k batch norm needs an integer k >= 1, got k={k!r}")
        self.kind, self.dim, self.k, self.constant = kind, dim, k, constant
        self.num_features, self.eps, self.momentum = num_features, _check_eps(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        _init_affine(self, affine, shape=(num_features,))
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_scale", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        self._check_input(x)
        channels_last = upcast(x).transpose(0, 1).reshape(self.num_features, -1)
        if self.training or not self.track_running_stats:
            mean = channels_last.mean(-1, keepdim=True)
            scale = deviation_scale(channels_last - mean, self.kind, self.constant, self.k)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean.squeeze(1), scale.squeeze(1))
        else:
            mean, scale = self.running_mean.unsqueeze(1), self.running_scale.unsqueeze(1)
        y = ((channels_last - mean) / (scale + self.eps)).view_as(x.transpose(0, 1)).transpose(0, 1)
        view = (1, -1) + (1,) * (x.dim() - 2)
        weight = self.weight.view(view) if self.affine else None
        bias = self.bias.view(view) if self.affine else None
        return _affine(y, weight, bias).to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean, scale):
        self.num_batches_tracked += 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, m)
        self.running_scale.lerp_(scale, m)

    def _check_input(self, x):
        allowed = (2, 3) if self.dim == 1 else (4,)
        if x.dim() not in allowed or x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}(dim={self.dim}) expects input of {allowed} dims with "
                f"{self.num_features} channels in dim 1, got shape {tuple(x.shape)}"
            )

    def extra_repr(self):
        k = f", k={self.k}" if self.kind == "topk" else ""
        return (f"{self.kind}, {self.num_features}, dim={self.dim}, eps={self.eps}, "
                f"momentum={self.momentum}, constant={self.constant!r}{k}, affine={self.affine}")


BATCH_NORM_KINDS = ("l2",) + tuple(SCALE_FUNCTIONS)


def build_batch_norm(kind, num_features, dim=2, eps=1e-5, momentum=0.1, affine=True,
                     track_running_stats=True, **options):
    """Batch norm of `kind` (BATCH_NORM_KINDS) for (N, C[, L]) inputs (dim=1) or (N, C, H, W) (dim=2).

    "l2" is torch's BatchNorm1d/2d; the others are DeviationBatchNorm (options `constant`, `k`).
    """
    if kind == "l2":
        if options:
            raise ValueError(f"batch-norm kind 'l2' takes no options, got {sorted(options)}")
        if dim not in (1, 2):
            raise ValueError(f"batch norm dim must be 1 or 2, got {dim!r}")
        cls = nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d
        return cls(num_features, _check_eps(eps), momentum, affine, track_running_stats)
    if kind not in SCALE_FUNCTIONS:
        raise ValueError(f"batch-norm kind {kind!r} is unknown; known kinds: {', '.join(BATCH_NORM_KINDS)}")
    if kind == "topk" and options.get("k") is None:
        raise ValueError("batch-norm kind 'topk' needs the option k")
    return DeviationBatchNorm(kind, num_features, dim, eps, momentum, affine,
                              track_running_stats, **options)
