"""Fast l1 / linf / topk / rms layer norms: one autograd Function, several implementations of its math.

`RowNormFunction` runs the analytic forward and backward of `rows.py` (saving the input and
one to three floats per row, like LayerNorm, in one layout for every backend). Its implementation ("backend") is chosen per
call:

    eager     the reference: torch's autograd through the plain formula
              (norms.deviation_norm_reference, norms.rms_norm_reference)
    native    CPU: native_rows.cpp, built with the system C++ compiler on first use (native.py;
              float32, float64, bfloat16; other dtypes take the compiled path)
    compiled  rows.py through torch.compile (inductor; C++ on CPU, Triton on CUDA), dynamic rows
    triton    hand-written Triton kernels (CUDA, l1/linf/topk in float32 arithmetic; rms and
              float64 take the compiled path; triton_kernels.py)
    auto      CUDA: triton if Triton imports, else compiled; CPU: native, else compiled (the
              default; a backend that failed once in this process is skipped)

The environment variable NORMMATTERS_NORM_BACKEND (or `set_backend`) forces one. A backend that
cannot run here (no Triton, no C++ compiler, ...) falls back with one logged warning: to eager
when it was forced, else to the next choice of auto.

A norm module decides once per (device, dtype) what it runs: a `RowNormPlan` (the backend's
implementation and the numeric options; its `run` is a reshape and one Function.apply), made
when it first sees that input and made again after `set_backend` or a backend failure
(`generation` counts those). The environment variable is read then, not per call.
"""

import importlib
import logging
import os
from typing import Callable, Optional

import torch

from . import rows

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "native", "compiled", "triton")
BACKEND_VARIABLE = "NORMMATTERS_NORM_BACKEND"
_forced_backend: Optional[str] = None
_broken = {}  # backend -> reason it cannot run in this process
generation = 0  # bumped whenever the backend a norm would choose may change: plans made before are stale


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"norm backend {name!r} is unknown; allowed: {', '.join(BACKENDS)} "
                         f"(set by set_backend() or ${BACKEND_VARIABLE})")
    return name


def set_backend(name: Optional[str]) -> None:
    """Force a backend for this process (None: back to $NORMMATTERS_NORM_BACKEND or auto)."""
    global _forced_backend, generation
    _forced_backend = None if name is None else check_backend(name)
    generation += 1


def requested_backend() -> str:
    return _forced_backend or check_backend(os.environ.get(BACKEND_VARIABLE, "auto") or "auto")


def backend_for(x: torch.Tensor, requested: Optional[str] = None, kind: str = "l1") -> str:
    """The backend that will run norm `kind` for input x: `requested` (default:
    requested_backend()), resolved and available."""
    name = check_backend(requested) if requested else requested_backend()
    if name == "auto":
        name = next((choice for choice in auto_choices(x) if choice not in _broken), "eager")
    device = x.device.type
    if name in _DEVICES and device != _DEVICES[name]:
        _warn_wrong_device(name, device)
        return "eager"  # for this tensor only: the backend still serves its own device
    if name == "triton" and (x.dtype == torch.float64 or kind == "rms"):
        name = "compiled"  # the Triton kernels compute l1/linf/topk in float32
    if name == "native" and x.dtype not in NATIVE_DTYPES:
        name = "compiled"
    if name in ("compiled", "native") and torch.compiler.is_compiling():
        return "eager"  # inside the user's own torch.compile: let it trace the plain formula
    return "eager" if name in _broken else name


_DEVICES = {"triton": "cuda", "native": "cpu"}
NATIVE_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def auto_choices(x: torch.Tensor):
    if x.is_cuda:
        return ("triton", "compiled") if triton_available() else ("compiled",)
    return ("native", "compiled") if x.device.type == "cpu" else ("compiled",)


def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


_wrong_devices_warned = set()


def _warn_wrong_device(name: str, device: str) -> None:
    if (name, device) not in _wrong_devices_warned:
        _wrong_devices_warned.add((name, device))
        logger.warning("norm backend %r runs on %s tensors only, not %s; those run eager", name,
                       _DEVICES[name], device)


def _mark_broken(name: str, reason: str) -> None:
    global generation
    if name not in _broken:
        _broken[name] = reason
        generation += 1
        logger.warning("norm backend %r unavailable (%s); using the next choice of auto (eager if "
                       "it was forced)", name, reason)


class Implementation:
    """forward_rows / backward_rows of rows.py as one backend runs them."""

    def __init__(self, name: str, forward: Callable, backward: Callable):
        self.name, self.forward, self.backward = name, forward, backward


#: Each kind x dtype x affine x feature size is its own graph: torch's default of 8 graphs per
#: function is raised while these functions run (not for the rest of the process); past it torch
#: runs the function uncompiled and logs a warning.
RECOMPILE_LIMIT = 64


def _compile(function: Callable, row_dims: dict) -> Callable:
    """function compiled for a fixed feature size and any number of rows (row_dims: argument
    position -> the dimension that counts rows): one graph per size, however fairseq's batches
    vary. (A dynamic feature size too compiles to 1.2-1.5x slower CPU code.)"""
    compiled = torch.compile(function, dynamic=False, fullgraph=True)

    def run(*args):
        for position, dim in row_dims.items():
            torch._dynamo.maybe_mark_dynamic(args[position], dim)
        with torch._dynamo.config.patch(recompile_limit=max(torch._dynamo.config.recompile_limit,
                                                            RECOMPILE_LIMIT)):
            return compiled(*args)
    return run


def _compiled() -> Implementation:
    # forward_rows(x, ...); backward_rows(grad, x, weight, statistics (count, rows), ...)
    return Implementation("compiled", _compile(rows.forward_rows, {0: 0}),
                          _compile(rows.backward_rows, {0: 0, 1: 0, 3: 1}))


def _native() -> Implementation:
    from . import native
    return Implementation("native", native.forward_rows, native.backward_rows)


def _triton() -> Implementation:
    from . import triton_kernels
    return Implementation("triton", triton_kernels.forward_rows, triton_kernels.backward_rows)


_FACTORIES = {"native": _native, "compiled": _compiled, "triton": _triton}
_implementations = {}
UNCOMPILED = Implementation("analytic", rows.forward_rows, rows.backward_rows)


def implementation(name: str) -> Implementation:
    if name not in _implementations:
        _implementations[name] = _FACTORIES[name]()
    return _implementations[name]


def run_or_fall_back(impl: Implementation, step: str, *args):
    """impl.<step>(*args). If the backend fails (to build or to run), the same step runs in rows.py
    plainly: when that succeeds, the backend was at fault and is skipped from then on (one
    warning); when it fails too, the input was, and its error is raised with the backend kept."""
    if impl.name in _broken:
        return getattr(UNCOMPILED, step)(*args)
    try:
        return getattr(impl, step)(*args)
    except torch.OutOfMemoryError:
        raise  # the input's size, not the backend: eager would need more memory still
    except Exception as error:
        failure = f"{type(error).__name__}: {error}"
    result = getattr(UNCOMPILED, step)(*args)  # outside the except: the input's error unchained
    _mark_broken(impl.name, failure)
    return result


class RowNormPlan:
    """A norm of `kind` over rows of `size` features by `impl` (an Implementation), decided once:
    run(x, gamma, beta) is a reshape and one RowNormFunction.apply (constant: C of
    l1/linf/topk, ignored by rms)."""

    __slots__ = ("kind", "size", "constant", "eps", "k", "impl")

    def __init__(self, kind: str, size: int, constant: float, eps: float, k: Optional[int], impl: Implementation):
        self.kind, self.size, self.constant, self.eps, self.k = kind, size, float(constant), float(eps), k or 0
        self.impl = impl

    def run(self, x, weight, bias):
        x2d = x if x.dim() == 2 and x.shape[1] == self.size else x.reshape(-1, self.size)
        weight = weight if weight is None or weight.dim() == 1 else weight.reshape(-1)
        bias = bias if bias is None or bias.dim() == 1 else bias.reshape(-1)
        if torch.is_autocast_enabled(x.device.type):  # the kernels choose their own precision
            with torch.autocast(x.device.type, enabled=False):
                y = self.apply(x2d, weight, bias)
        else:
            y = self.apply(x2d, weight, bias)
        return y if x2d is x else y.view(x.shape)

    def apply(self, x, weight, bias):
        """RowNormFunction.apply, or the forward alone where no gradient is recorded (generation)."""
        if torch.is_grad_enabled():
            return RowNormFunction.apply(x, weight, bias, self)
        return self.forward(x, weight, bias)[0]

    def forward(self, x, weight, bias):
        return run_or_fall_back(self.impl, "forward", x, weight, bias, self.kind, self.constant, self.eps, self.k)

    def backward(self, grad, x, weight, statistics, needs_weight_grad, needs_bias_grad):
        return run_or_fall_back(self.impl, "backward", grad, x, weight, statistics, self.kind, self.constant,
                                self.eps, self.k, needs_weight_grad, needs_bias_grad)


class RowNormFunction(torch.autograd.Function):
    """A norm over the rows of a 2-D x (rows.py's formulas) as `plan` runs it, with the analytic
    backward (once differentiable: a double backward is refused)."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan):
        y, statistics = plan.forward(x, weight, bias)
        ctx.save_for_backward(x, weight, statistics)
        ctx.plan = plan
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled():  # create_graph=True: the kernels' gradients have no graph
            raise RuntimeError("the l1/linf/topk/rms norms' fast backward is not differentiable (no double "
                               "backward); run them with the eager backend for that")
        x, weight, statistics = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dx, dweight, dbias = ctx.plan.backward(grad, x, weight, statistics, needs[1], needs[2])
        if dweight is not None and dweight.dtype != weight.dtype:
            dweight = dweight.to(weight.dtype)
        if dbias is not None and dbias.dtype != ctx.bias_dtype:
            dbias = dbias.to(ctx.bias_dtype)
        return dx, dweight, dbias, None


def fused_norm(x, kind, normalized_size, weight, bias, eps, constant, k, backend):
    """The `kind` norm of x over its last `normalized_size` elements by `backend`, planned for
    this one call (the functional API; norm modules keep their plans)."""
    return RowNormPlan(kind, normalized_size, constant, eps, k, implementation(backend)).run(x, weight, bias)
