"""Fast l1 / linf / topk / rms layer norms: one autograd Function, several implementations of its math.

    backends.py        which path runs a norm and why (route), the environment variable that
                       forces a backend, the paths that failed in this process
    path.py            `python -m fairseq_normmatters.kernels.path`: prints the path of a norm
    function.py        RowNormPlan (what a norm module decides once) and RowNormFunction (the
                       autograd Function with the analytic backward)
    rows.py            the formulas: forward and backward over rows (the reference of the others)
    native.py          CPU: rows.py in C++ (native_rows.cpp) through ctypes
    compiled.py        rows.py through torch.compile
    triton_kernels.py  CUDA: hand-written Triton kernels
    narrow.py          the norms accumulating in fp16/bf16 (accumulation.py): forward, one backward
    triton_narrow.py   CUDA: the kernel of their forward
"""

from .backends import (
    BACKEND_VARIABLE,
    BACKENDS,
    NATIVE_DTYPES,
    STRICT_VARIABLE,
    UNCOMPILED,
    BackendFailed,
    BackendUnavailable,
    FailureKey,
    Implementation,
    Path,
    auto_choices,
    backend_for,
    check_backend,
    failures,
    implementation,
    requested_backend,
    route,
    run_or_fall_back,
    set_backend,
    triton_available,
)
from .function import RowNormFunction, RowNormPlan, fused_norm, plan_norm

__all__ = [
    "BACKEND_VARIABLE", "BACKENDS", "NATIVE_DTYPES", "STRICT_VARIABLE", "UNCOMPILED", "BackendFailed",
    "BackendUnavailable", "FailureKey",
    "Implementation", "Path", "RowNormFunction", "RowNormPlan", "auto_choices", "backend_for", "check_backend",
    "failures", "fused_norm", "implementation", "plan_norm", "requested_backend", "route", "run_or_fall_back",
    "set_backend", "triton_available",
]
