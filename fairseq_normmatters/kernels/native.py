"""The "native" CPU backend: `native_rows.cpp` (rows.py's forward and backward, one row in cache
at a time, dgamma/dbeta summed per thread) built with the system C++ compiler on first use and
called through ctypes.

The shared library is cached under $NORMMATTERS_CACHE_DIR (default
~/.cache/fairseq_normmatters), named by a hash of the source, the compiler command and this
CPU's feature flags, and written atomically so that parallel workers can build it at once. The
compiler is $CXX or g++; $NORMMATTERS_NATIVE_FLAGS (default -march=native) adds flags, e.g.
-march=x86-64-v2 for one library that every node of a mixed cluster can run. It takes
contiguous float32, float64 and bfloat16 rows; other dtypes go to the compiled backend
(kernels.backend_for).

Why g++ and ctypes rather than torch.utils.cpp_extension or a torch.library op: the source
includes only the C++ standard library, so it builds several times faster than the same source
as a TORCH_LIBRARY op or a pybind11 extension (which also needs Python's headers, absent from
many minimal images, and ninja for cpp_extension.load), and it does not depend on torch's C++
ABI, so a torch upgrade does not rebuild it. The price: autograd and dtype dispatch stay in
Python (kernels.RowNormFunction), and torch.compile sees the plain formula. docs/performance.md
has the build times and the cost of a call (scripts/bench/bench_native_build.py).
"""

import ctypes
import functools
import hashlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import torch

from .backends import BackendUnavailable

SOURCE = Path(__file__).with_name("native_rows.cpp")
FLAGS = ("-O3", "-fopenmp", "-std=c++17", "-shared", "-fPIC")
DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2}
KINDS = {"l1": 0, "linf": 1, "topk": 2, "rms": 3}
ERRORS = {1: "unknown dtype", 2: "unknown norm kind", 3: "top-k needs 1 <= k <= n"}


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fairseq_normmatters"
    return Path(os.environ.get("NORMMATTERS_CACHE_DIR") or default)


def compile_command(output: Path) -> list:
    target = shlex.split(os.environ.get("NORMMATTERS_NATIVE_FLAGS") or "-march=native")
    return [os.environ.get("CXX") or "g++", *FLAGS, *target, str(SOURCE), "-o", str(output)]


def cpu_flags() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line for line in lines if line.startswith("flags")), "")


def library_path() -> Path:
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(" ".join(compile_command(Path("out"))).encode() + cpu_flags().encode())
    return cache_dir() / f"native_rows-{key.hexdigest()[:16]}.so"


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    """The built library (building it first if no cached copy exists); raises
    BackendUnavailable with the compiler's message if the build fails."""
    path = library_path()
    if not path.exists():
        build(path)
    lib = ctypes.CDLL(str(path))
    pointer, size, real = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.normmatters_forward.argtypes = [ctypes.c_int, ctypes.c_int, size, size, pointer, pointer,
                                        pointer, pointer, real, real, size, pointer, ctypes.c_int]
    lib.normmatters_backward.argtypes = [ctypes.c_int, ctypes.c_int, size, size, pointer, pointer,
                                         pointer, pointer, real, real, size, pointer, pointer,
                                         pointer, ctypes.c_int]
    return lib


def build(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch_dir = tempfile.TemporaryDirectory(dir=path.parent)
    except OSError as error:
        raise BackendUnavailable(f"cannot write the cache directory {path.parent} ({error}); set "
                           "NORMMATTERS_CACHE_DIR to a writable directory") from None
    with scratch_dir as scratch:
        built = Path(scratch) / path.name
        command = compile_command(built)
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:
            raise BackendUnavailable(f"no C++ compiler: {command[0]} is not installed (set CXX to "
                               "another one)") from None
        if result.returncode != 0:
            raise BackendUnavailable(f"building {SOURCE.name} failed ({' '.join(command)}):"
                               f" {result.stderr.strip()[-2000:]}")
        os.replace(built, path)


def pointer(tensor) -> int:
    """The address of a tensor's data (None: a null pointer). The caller keeps the tensor alive."""
    return None if tensor is None else tensor.data_ptr()


def refused(step: str, kind: str, status: int):
    raise RuntimeError(f"native {step} of the {kind} norm refused its input: {ERRORS.get(status, status)}")


#: input dtype -> the dtype the kernels compute in and take gamma, beta and statistics in
COMPUTE_DTYPES = {torch.float32: torch.float32, torch.float64: torch.float64, torch.bfloat16: torch.float32}


def as_compute(tensor, dtype):
    """tensor (gamma, beta) contiguous in the compute dtype, or None."""
    if tensor is None or (tensor.dtype == dtype and tensor.is_contiguous()):
        return tensor
    return tensor.to(dtype).contiguous()


def forward_rows(x, weight, bias, kind, constant, eps, k):
    """rows.forward_rows, natively: (y, statistics) in rows.py's layout."""
    x = x.contiguous()
    dtype = COMPUTE_DTYPES[x.dtype]
    weight, bias = as_compute(weight, dtype), as_compute(bias, dtype)
    rows, n = x.shape
    y = torch.empty_like(x)
    statistics = torch.empty((1 if kind == "rms" else 3, rows), dtype=dtype)
    status = library().normmatters_forward(
        DTYPES[x.dtype], KINDS[kind], rows, n, x.data_ptr(), y.data_ptr(), pointer(weight), pointer(bias),
        constant, eps, k, statistics.data_ptr(), torch.get_num_threads())
    if status:
        refused("forward", kind, status)
    return y, statistics


def backward_rows(grad, x, weight, statistics, kind, constant, eps, k, needs_weight_grad,
                  needs_bias_grad):
    """rows.backward_rows, natively: (dL/dx, dL/dgamma, dL/dbeta) in the compute dtype."""
    grad, x, statistics = grad.contiguous(), x.contiguous(), statistics.contiguous()
    dtype = COMPUTE_DTYPES[x.dtype]
    weight = as_compute(weight, dtype)
    rows, n = x.shape
    dx = torch.empty_like(x)
    dweight = torch.empty(n, dtype=dtype) if needs_weight_grad else None
    dbias = torch.empty(n, dtype=dtype) if needs_bias_grad else None
    status = library().normmatters_backward(
        DTYPES[x.dtype], KINDS[kind], rows, n, grad.data_ptr(), x.data_ptr(), pointer(weight),
        statistics.data_ptr(), constant, eps, k, dx.data_ptr(), pointer(dweight), pointer(dbias),
        torch.get_num_threads())
    if status:
        refused("backward", kind, status)
    return dx, dweight, dbias
