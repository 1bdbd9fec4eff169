"""Which implementation ("backend") runs a norm, why, and the paths that failed here.

    eager     the reference: torch's autograd through the plain formula
              (norms.deviation_norm_reference, norms.rms_norm_reference)
    native    CPU: native_rows.cpp built with the system C++ compiler on first use (native.py;
              float32, float64, bfloat16)
    compiled  rows.py through torch.compile (compiled.py), dynamic rows
    triton    hand-written Triton kernels (CUDA; float32 arithmetic, so not float64 input; rows
              of at most TRITON_MAX_FEATURES; top-k with k <= TRITON_MAX_TOPK; triton_kernels.py)
    auto      CUDA: triton, else compiled; CPU: native, else compiled (the default)

A norm accumulating in fp16/bf16 (accumulation.py) runs the Triton kernel of triton_narrow.py
where the triton backend would run it, else the emulation; both share one backward.

`route(...)` is the one decision: for a kind, row width, dtype, device and accumulation it gives
the Path that runs (backend and the reason in words). The environment variable
NORMMATTERS_NORM_BACKEND (or `set_backend`) forces a backend; one that cannot take an input
gives it to auto's next choice for that device (eager on a device it does not serve), and the
reason says so. A failure is kept where it happened: a backend that cannot run here at all
(`BackendUnavailable`: no Triton, no C++ compiler) for every input, any other failure for its
FailureKey only (backend, kind, dtype, width class, device, accumulation); each is warned once,
named. With NORMMATTERS_STRICT_BACKENDS=1 a failure raises BackendFailed instead (the tests run
so: a kernel that would fall back fails the test that ran it, with its traceback). `generation` counts the events after which a norm may choose another path (set_backend,
a failure): norm modules remake their plans when it changes. `python -m
fairseq_normmatters.kernels.path` prints the path of a kind, shape, dtype and device.
"""

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple, Optional

import torch

from . import rows

logger = logging.getLogger(__package__)  # one logger for the kernels: "fairseq_normmatters.kernels"

BACKENDS = ("auto", "eager", "native", "compiled", "triton")
BACKEND_VARIABLE = "NORMMATTERS_NORM_BACKEND"
STRICT_VARIABLE = "NORMMATTERS_STRICT_BACKENDS"
TRITON_MAX_FEATURES = 32768  # the Triton kernels hold a row in one block of registers
TRITON_MAX_TOPK = 64  # the kernels unroll a loop over k: compilation time grows with it
NATIVE_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
NATIVE_KINDS = ("l1", "linf", "topk", "rms")
TRITON_KINDS = ("l1", "linf", "topk", "rms", "l2")
FLOAT32 = "float32"  # the accumulation of the fast paths
_DEVICES = {"triton": "cuda", "native": "cpu"}
_forced_backend: Optional[str] = None
generation = 0  # bumped whenever the path a norm would take may change: plans made before are stale


class BackendUnavailable(RuntimeError):
    """A backend that cannot run in this process at all (no Triton, no working C++ compiler)."""


class BackendFailed(RuntimeError):
    """A backend failed where $NORMMATTERS_STRICT_BACKENDS=1 forbids falling back."""


def strict() -> bool:
    """Whether a backend's failure raises (BackendFailed) instead of falling back."""
    value = os.environ.get(STRICT_VARIABLE, "0") or "0"
    if value not in ("0", "1"):
        raise ValueError(f"${STRICT_VARIABLE}={value!r}: allowed 0 (fall back, the default) or 1 (raise)")
    return value == "1"


class FailureKey(NamedTuple):
    """Where a failure is kept: what failed, for which inputs (the width class is the row width
    rounded up to a power of two, the block a Triton kernel is compiled for)."""

    backend: str
    kind: str
    dtype: torch.dtype
    width_class: int
    device: str
    accumulate: str

    def __str__(self):
        dtype = str(self.dtype).replace("torch.", "")
        return (f"{self.kind} norms of {dtype} rows of up to {self.width_class} features on {self.device}, "
                f"accumulating in {self.accumulate}")


def width_class(width: int) -> int:
    return 1 << max(width - 1, 0).bit_length()


class Failures:
    """The backends unavailable in this process and the FailureKeys that failed, with the error."""

    def __init__(self):
        self.unavailable: Dict[str, str] = {}
        self.keys: Dict[FailureKey, str] = {}

    def __bool__(self):
        return bool(self.unavailable or self.keys)

    def __repr__(self):
        return repr({**self.unavailable, **{f"{key.backend} for {key}": reason for key, reason in self.keys.items()}})

    def clear(self):
        self.unavailable.clear()
        self.keys.clear()

    def reason(self, key: FailureKey) -> Optional[str]:
        return self.unavailable.get(key.backend) or self.keys.get(key)

    def record(self, key: FailureKey, error: BaseException) -> None:
        """Keep the failure (of the whole backend if it is BackendUnavailable), warn once; raise
        BackendFailed from it instead where strict()."""
        global generation
        reason = f"{type(error).__name__}: {error}"
        if strict():
            raise BackendFailed(f"norm backend {key.backend!r} failed for {key} ({reason}); "
                                f"${STRICT_VARIABLE}=1 forbids falling back") from error
        if isinstance(error, BackendUnavailable):
            if key.backend in self.unavailable:
                return
            self.unavailable[key.backend] = reason
            logger.warning("norm backend %r cannot run here (%s); norms take the next path", key.backend, reason)
        else:
            if key in self.keys:
                return
            self.keys[key] = reason
            logger.warning("norm backend %r failed for %s (%s); those take the next path from now on",
                           key.backend, key, reason)
        generation += 1


failures = Failures()


@dataclass(frozen=True)
class Path:
    """What runs a norm (backend: eager, native, compiled, triton; for a narrow accumulation
    triton or emulation) and why, in words."""

    backend: str
    reason: str

    def __str__(self):
        return f"{self.backend} ({self.reason})"


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


def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def auto_choices(device: str):
    """auto's backends for a device, best first (eager, which takes anything, after them)."""
    if device == "cuda":
        return ("triton", "compiled") if triton_available() else ("compiled",)
    return ("native", "compiled") if device == "cpu" else ("compiled",)


def refusal(backend: str, kind: str, width: int, dtype: torch.dtype, device: str, k: Optional[int]) -> Optional[str]:
    """Why `backend` does not take such rows, or None when it does."""
    if backend in _DEVICES and device != _DEVICES[backend]:
        return f"{backend} runs on {_DEVICES[backend]} tensors only"
    if backend == "native" and kind not in NATIVE_KINDS:
        return f"native has no {kind} kernel"
    if backend == "native" and dtype not in NATIVE_DTYPES:
        return f"native takes float32, float64 and bfloat16, not {str(dtype).replace('torch.', '')}"
    if backend == "triton":
        if kind not in TRITON_KINDS:
            return f"triton has no {kind} kernel"
        if dtype == torch.float64:
            return "the Triton kernels compute in float32, not float64"
        if width > TRITON_MAX_FEATURES:
            return f"the Triton kernels take rows of at most {TRITON_MAX_FEATURES} features, not {width}"
        if kind == "topk" and (k or 0) > TRITON_MAX_TOPK:
            return f"the Triton top-k unrolls a loop over k: at most k = {TRITON_MAX_TOPK}, not {k}"
    return None


def failed_before(backend: str, kind: str, width: int, dtype: torch.dtype, device: str,
                  accumulate: str) -> Optional[str]:
    """'BACKEND failed here before (ERROR)' where it failed for such rows in this process, or None."""
    reason = failures.reason(FailureKey(backend, kind, dtype, width_class(width), device, accumulate))
    return reason and f"{backend} failed here before ({reason})"


def route(kind: str, width: int, dtype: torch.dtype, device: str, accumulate: str = FLOAT32,
          requested: Optional[str] = None, k: Optional[int] = None) -> Path:
    """The path that runs a `kind` norm over rows of `width` features of `dtype` on `device`
    (a device type: "cpu", "cuda", ...), accumulating in `accumulate`, with `requested` (default
    requested_backend()) and top-k's k: the first backend that takes such rows and has not failed
    for them here, and why."""
    requested = check_backend(requested) if requested else requested_backend()
    if accumulate != FLOAT32:
        return _narrow_route(kind, width, dtype, device, accumulate, requested, k)
    if torch.compiler.is_compiling():
        return Path("eager", "inside torch.compile: the compiler traces the plain formula")
    forced = requested != "auto"
    if forced and requested in _DEVICES and device != _DEVICES[requested]:
        return Path("eager", f"{BACKEND_VARIABLE}={requested}, which runs on {_DEVICES[requested]} tensors only")
    choices = auto_choices(device) if not forced else (requested,) if requested in ("eager", "compiled") \
        else (requested, "compiled")
    passed = []
    for backend in choices:
        refused = refusal(backend, kind, width, dtype, device, k)
        if refused:
            passed.append(refused)
            continue
        failed = failed_before(backend, kind, width, dtype, device, FLOAT32)
        if not failed:
            return Path(backend, "; ".join(passed) + f": {backend}" if passed else
                        f"forced by {BACKEND_VARIABLE}" if forced else f"auto's first choice on {device}")
        passed.append(failed)
        if forced:
            break  # a forced backend that failed: the reference
    return Path("eager", "; ".join(passed) + ": eager")


def _narrow_route(kind, width, dtype, device, accumulate, requested, k) -> Path:
    """The Triton kernel of a narrow accumulation where the triton backend would take the rows
    (requested auto or triton, CUDA, Triton importable), else accumulation.py's emulation."""
    if requested not in ("auto", "triton"):
        return Path("emulation", f"{BACKEND_VARIABLE}={requested}: the kernel is the triton backend's")
    if "triton" not in auto_choices(device):
        return Path("emulation", "no Triton kernel on this device" if device != "cuda" else "Triton is not installed")
    why_not = refusal("triton", kind, width, dtype, device, k) or \
        failed_before("triton", kind, width, dtype, device, accumulate)
    return Path("emulation", f"{why_not}: the emulation") if why_not else Path("triton", "the narrow Triton kernel")


#: the path of a float32 l2 norm module: torch's LayerNorm (route's "l2" is the package's own kernel)
LAYER_NORM_PATH = Path("torch", "nn.LayerNorm: ATen's fused kernel")
_announced = set()


def announce(kind: str, width: int, dtype: torch.dtype, device: str, accumulate: str, path: Path) -> None:
    """Log once per distinct norm and path (INFO, so in fairseq's log) which path it takes."""
    said = (kind, width, dtype, device, accumulate, path)
    if said not in _announced:
        _announced.add(said)
        logger.info("norm path: %s over %d features, %s on %s, accumulating in %s: %s", kind, width,
                    str(dtype).replace("torch.", ""), device, accumulate, path)


def announce_again() -> None:
    """Forget which paths were announced: each norm says its path again (a new fairseq command
    run in this process, recipes.call_fairseq)."""
    _announced.clear()


def backend_for(x: torch.Tensor, requested: Optional[str] = None, kind: str = "l1", width: Optional[int] = None,
                k: Optional[int] = None) -> str:
    """The backend that will run norm `kind` for input x over rows of `width` (default: its last
    dimension) features: route(...)'s, warned once where a forced backend serves another device."""
    width = x.shape[-1] if width is None else width
    name = check_backend(requested) if requested else requested_backend()
    if name in _DEVICES and x.device.type != _DEVICES[name]:
        _warn_wrong_device(name, x.device.type)
    return route(kind, width, x.dtype, x.device.type, FLOAT32, name, k).backend


_wrong_devices_warned = set()


def _warn_wrong_device(name: str, device: str) -> None:
    if (name, device) not in _wrong_devices_warned:
        _wrong_devices_warned.add((name, device))
        logger.warning("norm backend %r runs on %s tensors only, not %s; those run eager", name,
                       _DEVICES[name], device)


class Implementation:
    """forward_rows / backward_rows of rows.py as one backend runs them."""

    def __init__(self, name: str, forward: Callable, backward: Callable):
        self.name, self.forward, self.backward = name, forward, backward


def _module_implementation(name: str, module: str) -> Callable[[], Implementation]:
    """The backend `name` as the forward_rows/backward_rows of kernels.<module>, imported on first use."""
    def load():
        try:
            functions = importlib.import_module(f"{__package__}.{module}")
        except ImportError as error:
            raise BackendUnavailable(f"cannot import {module}: {error}") from None
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


def run_or_fall_back(impl: Implementation, step: str, key: FailureKey, fallback: Implementation, *args):
    """impl.<step>(*args). If the backend fails (to build or to run), the same step runs by
    `fallback` (the one definition the backend implements): when that succeeds, the backend was
    at fault and `key` (or, BackendUnavailable, the whole backend) is skipped from then on (one
    warning); when it fails too, the input was, and its error is raised with the backend kept."""
    if failures.reason(key):
        return getattr(fallback, step)(*args)
    try:
        return getattr(impl, step)(*args)
    except torch.OutOfMemoryError:
        raise  # the input's size, not the backend: eager would need more memory still
    except Exception as error:
        failure = error
    result = getattr(fallback, step)(*args)  # outside the except: the input's error unchained
    failures.record(key, failure)
    return result
