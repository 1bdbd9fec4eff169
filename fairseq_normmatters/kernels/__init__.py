"""Fast l1 / linf / topk / rms layer norms: one autograd Function, several implementations of its math.

    backends.py        which implementation runs an input, the environment variable that forces
                       one, the ones that failed in this process
    function.py        RowNormPlan (what a norm module decides once) and RowNormFunction (the
                       autograd Function with the analytic backward)
    rows.py            the formulas: forward and backward over rows (the reference of the others)
    native.py          CPU: rows.py in C++ (native_rows.cpp) through ctypes
    compiled.py        rows.py through torch.compile
    triton_kernels.py  CUDA: hand-written Triton kernels
    triton_narrow.py   CUDA: the kernel of the norms accumulating in fp16/bf16 (accumulation.py)
"""

from .backends import (
    BACKEND_VARIABLE,
    BACKENDS,
    NATIVE_DTYPES,
    UNCOMPILED,
    Implementation,
    auto_choices,
    backend_for,
    check_backend,
    implementation,
    narrow_backend,
    requested_backend,
    run_or_fall_back,
    set_backend,
    triton_available,
)
from .function import NarrowTritonPlan, RowNormFunction, RowNormPlan, accumulating_norm, fused_norm

__all__ = [
    "BACKEND_VARIABLE", "BACKENDS", "NATIVE_DTYPES", "UNCOMPILED", "Implementation", "NarrowTritonPlan",
    "RowNormFunction", "RowNormPlan", "accumulating_norm", "auto_choices", "backend_for", "check_backend",
    "fused_norm", "implementation", "narrow_backend", "requested_backend", "run_or_fall_back", "set_backend",
    "triton_available",
]
