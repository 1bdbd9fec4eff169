"""Which implementation ("backend") runs the fast norms, and the backends that failed here.

    eager     the reference: torch's autograd through the plain formula
              (norms.deviation_norm_reference, norms.rms_norm_reference)
    native    CPU: native_rows.cpp built with the system C++ compiler on first use (native.py;
              float32, float64, bfloat16; other dtypes take the compiled path)
    compiled  rows.py through torch.compile (compiled.py), dynamic rows
    triton    hand-written Triton kernels (CUDA, l1/linf/topk in float32 arithmetic; rms and
              float64 take the compiled path; triton_kernels.py)
    auto      CUDA: triton if Triton imports, else compiled; CPU: native, else compiled (the
              default; a backend that failed once in this process is skipped)

The environment variable NORMMATTERS_NORM_BACKEND (or `set_backend`) forces one. A backend that
cannot run here (no Triton, no C++ compiler, ...) falls back with one logged warning: to eager
when it was forced, else to the next choice of auto. `generation` counts the events after
which a norm may choose another backend (set_backend, a backend failing): norm modules remake
their plans when it changes, and read the environment variable only then.
"""

import importlib
import logging
import os
from typing import Callable, Optional

import torch

from . import rows

logger = logging.getLogger(__package__)  # one logger for the kernels: "fairseq_normmatters.kernels"

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


TRITON_MAX_FEATURES = 32768  # the Triton kernels hold a row in one block of registers


def narrow_backend(x: torch.Tensor) -> str:
    """"triton" where a norm accumulating in fp16/bf16 runs the Triton kernel for x: where the
    l1 norm's fast path would be Triton (backend_for: auto or forced, CUDA, not float64, not
    failed here), outside the user's torch.compile (which traces the emulation), for rows of at
    most TRITON_MAX_FEATURES; else "eager": accumulation.py's emulation."""
    triton = backend_for(x, None, "l1") == "triton" and not torch.compiler.is_compiling()
    return "triton" if triton else "eager"


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


def _module_implementation(name: str, module: str) -> Callable[[], Implementation]:
    """The backend `name` as the forward_rows/backward_rows of kernels.<module>, imported on first use."""
    def load():
        functions = importlib.import_module(f"{__package__}.{module}")
        return Implementation(name, functions.forward_rows, functions.backward_rows)
    return load


_FACTORIES = {"native": _module_implementation("native", "native"),
              "compiled": _module_implementation("compiled", "compiled"),
              "triton": _module_implementation("triton", "triton_kernels")}
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
