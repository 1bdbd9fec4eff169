"""Layer and batch normalization with the L2, L1, L-infinity and top-k scales of "Norm matters".

For the centered row d = x - mean(x) over the normalized features (n of them):

    l1, linf, topk:  y = gamma * d / (C * scale(d) + eps) + beta      (eps outside the scale)
    l2:              y = gamma * d / sqrt(mean(d^2) + eps) + beta     (torch's LayerNorm)
    rms:             y = gamma * x / sqrt(mean(x^2) + eps) + beta     (no centering)
    none:            y = x

scale(d) is mean|d| (l1), max|d| (linf) or the mean of the k largest |d| (topk); C comes from
`fairseq_normmatters.constants`. l1/linf/topk reduce in float32 and return the input dtype.

    >>> import torch
    >>> from fairseq_normmatters import build_norm
    >>> norm = build_norm("l1", 512)            # C = sqrt(pi/2)
    >>> y = norm(torch.randn(10, 512))

The kinds and their builders are listed once, in `fairseq_normmatters.kinds`; the batch
norms are in `fairseq_normmatters.batch_norm`.
"""

import math
from typing import Callable, Dict, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels
from .accumulation import FLOAT32, check_accumulate
from .kernels import backends
from .kernels.rows import affine as _affine, compute_dtype
from .constants import check_topk, resolve_constant

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
    name = kernels.backend_for(x, backend, kind, size, k)
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
    name = kernels.backend_for(x, backend, "rms", size)
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


def check_eps(eps: float) -> float:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got eps={eps!r}")
    return float(eps)


def _run_narrow(module, x):
    """The module's norm accumulating in its narrow format, outside any torch.compile graph:
    inductor would fuse the emulation's roundings away (it keeps float32 between operations), so
    a user's compiled model breaks its graph here and runs this eagerly; a fullgraph=True compile
    is refused with this reason."""
    plan = module._plan(x)
    return (plan.run(x, module.weight, module.bias) if plan is not None
            else module.reference(x))


NOT_COMPILED = ("a norm accumulating in fp16/bf16 emulates every rounding, which inductor would drop: it runs "
                "outside the compiled graph (use accumulate='float32' for a fullgraph compile)")
_narrow_outside_compile = []


def narrow_outside_compile():
    """_run_narrow behind torch.compiler.disable, made on first use (by a module set to
    accumulate narrow): the decorator imports torch._dynamo, about 1.4 s that a process which
    never accumulates narrow (every script, every fairseq run in float32) should not pay."""
    if not _narrow_outside_compile:
        try:
            _narrow_outside_compile.append(torch.compiler.disable(_run_narrow, reason=NOT_COMPILED))
        except TypeError:  # torch < 2.8 takes no reason (a fullgraph compile is refused without it)
            _narrow_outside_compile.append(torch.compiler.disable(_run_narrow))
    return _narrow_outside_compile[0]


class PlannedNorm:
    """Mixin of the layer-norm modules: the path of each (device, dtype) decided once
    (kernels.plan_norm: backend, reason, plan; said once in the log), and the option
    `accumulate`: "float32" (the default: the fast paths, which reduce in float32) or "fp16" /
    "bf16", the format the statistics are accumulated in (accumulation.py; kernels/narrow.py).
    The module has kind, normalized_shape, eps, weight, bias and, for l1/linf/topk,
    constant_value and k. Moving or casting the module, setting an attribute a plan is made from
    (PLANNED), or a change of backend or a failure (backends.generation) forgets the plans."""

    PLANNED = ("weight", "bias", "eps", "k", "constant", "constant_value")

    def __setattr__(self, name, value):
        if name == "eps":
            value = check_eps(value)
        if name in self.PLANNED:
            self.__dict__.get("_plans", {}).clear()
        super().__setattr__(name, value)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.get("_plans", {}).clear()
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        return {**super().__getstate__(), "_plans": {}}  # plans hold compiled functions: not pickled

    @property
    def accumulate(self) -> str:
        return self.__dict__.get("_accumulate", FLOAT32)  # modules pickled before the option: float32

    @accumulate.setter
    def accumulate(self, name: str) -> None:
        self.__dict__.get("_plans", {}).clear()
        self.__dict__["_accumulate"] = check_accumulate(name)
        if self.accumulates_narrow:
            narrow_outside_compile()  # made here, not first inside a compiled graph

    @property
    def accumulates_narrow(self) -> bool:
        return self.accumulate != FLOAT32

    def _plan(self, x):
        """The plan of x's (device, dtype), or None: the module's reference runs."""
        if x.shape[-len(self.normalized_shape):] != self.normalized_shape:
            normalized_size(x, self.normalized_shape)  # raises the shape error
        key = (x.device, x.dtype, backends.generation)
        plans = self.__dict__.setdefault("_plans", {})
        if key not in plans:
            size = normalized_size(x, self.normalized_shape, self.weight, self.bias)
            plans[key] = kernels.plan_norm(self.kind, size, x.dtype, x.device.type,
                                           getattr(self, "constant_value", 1.0), self.eps, getattr(self, "k", None),
                                           self.accumulate)[1]
        return plans[key]

    def forward(self, x):
        if self.accumulates_narrow:
            return narrow_outside_compile()(self, x)
        plan = None if torch.compiler.is_compiling() else self._plan(x)
        return self.reference(x) if plan is None else plan.run(x, self.weight, self.bias)

    def accumulate_repr(self) -> str:
        return f", accumulate={self.accumulate}" if self.accumulates_narrow else ""


class L2Norm(PlannedNorm, nn.LayerNorm):
    """torch's LayerNorm (fused op): y = gamma * d / sqrt(mean(d^2) + eps) + beta; with
    accumulate="fp16"/"bf16", the package's own L2 norm accumulating in that format."""

    kind = "l2"

    def __init__(self, normalized_shape: Shape, eps=1e-5, elementwise_affine=True, accumulate=FLOAT32):
        super().__init__(_as_shape(normalized_shape), check_eps(eps), elementwise_affine)
        self.accumulate = accumulate

    def _plan(self, x):
        if self.accumulates_narrow:
            return super()._plan(x)
        key = (x.device, x.dtype)
        if key not in self.__dict__.setdefault("_announced", set()):
            self._announced.add(key)
            backends.announce("l2", math.prod(self.normalized_shape), x.dtype, x.device.type, FLOAT32,
                              backends.LAYER_NORM_PATH)
        return None

    def reference(self, x):
        return nn.LayerNorm.forward(self, x)

    def extra_repr(self):
        return super().extra_repr() + self.accumulate_repr()


class PlannedRowNorm(PlannedNorm, nn.Module):
    """Base of the norm modules that run as kernels.RowNormFunction (DeviationNorm, RMSNorm):
    the first call on a (device, dtype) checks the input, gamma and beta as the functional API
    does and plans the path (PlannedNorm); later calls check the input's trailing shape and run
    the plan. Inside the user's torch.compile the plain formula runs, for the compiler to trace."""


class RMSNorm(PlannedRowNorm):
    """RMSNorm (uncentered): y = gamma * x / sqrt(mean(x^2) + eps) + beta, eps inside the root.

    beta is kept (unlike Zhang & Sennrich) so that a LayerNorm's state_dict keys carry over.
    """

    kind = "rms"
    constant_value, k = 1.0, None  # no calibration constant

    def __init__(self, normalized_shape: Shape, eps=1e-5, elementwise_affine=True, accumulate=FLOAT32):
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.accumulate = accumulate
        init_affine(self, elementwise_affine)

    def reference(self, x):
        return rms_norm_reference(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
                f"{self.accumulate_repr()}")


def init_affine(module: nn.Module, affine: bool, shape=None) -> None:
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
                 constant="paper", k=None, accumulate=FLOAT32):
        super().__init__()
        if kind not in SCALE_FUNCTIONS:
            raise ValueError(f"DeviationNorm kind {kind!r} is unknown; allowed: {', '.join(SCALE_FUNCTIONS)}")
        self.kind = kind
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._set_scale(constant, k)
        self.accumulate = accumulate
        init_affine(self, elementwise_affine)

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
                f"elementwise_affine={self.elementwise_affine}{self.accumulate_repr()}")


def identity_norm(normalized_shape: Shape, eps=1e-5, elementwise_affine=True) -> nn.Module:
    """The "none" kind: y = x (the shape is still checked)."""
    _as_shape(normalized_shape)
    return nn.Identity()
