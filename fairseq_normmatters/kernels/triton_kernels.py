"""Triton kernels of the l1 / linf / topk / rms / l2 layer norms (CUDA): the math of rows.py in
float32, one template for every kind (so that l2 here against l1 here compares norms, not
kernels), one row per program in the forward (one launch); the backward walks a share of the
rows per program and writes partial sums of dL/dgamma, dL/dbeta that a second kernel adds up
into the parameters' dtype (two launches, no atomics: deterministic). The statistics travel as
one buffer in rows.py's layout. The modules' float32 l2 is torch's LayerNorm; this l2 is for
like-for-like comparisons (scripts/bench/bench_norms.py) and the tests."""

import contextlib
import functools
import os

import torch
import triton
import triton.language as tl

from . import rows as rows_math
from .backends import TRITON_MAX_FEATURES

KIND_CODES = {"l1": 0, "linf": 1, "topk": 2, "l2": 3, "rms": 4}  # l2, rms: a root mean square
STATISTICS = {"l1": 3, "linf": 3, "topk": 3, "l2": 2, "rms": 1}  # rows.py's layouts
MAX_FEATURES = TRITON_MAX_FEATURES


@triton.jit
def _row_scale(a, valid, n, KIND: tl.constexpr, K: tl.constexpr):
    """(m, t) of one row of |d|: mean, max, or the mean of the K largest and the K-th largest."""
    if KIND == 0:
        m = tl.sum(a, 0) / n
        t = m
    elif KIND == 1:
        m = tl.max(a, 0)
        t = m
    else:
        rest = tl.where(valid, a, -1.0)
        remaining = K * 1.0
        total = 0.0
        t = 0.0
        for _ in tl.static_range(K):
            top = tl.max(rest, 0)
            ties = tl.sum((rest == top).to(tl.float32), 0)
            take = tl.minimum(ties, remaining)
            total += take * top
            t = tl.where(remaining > 0, top, t)
            remaining -= take
            rest = tl.where(rest == top, -1.0, rest)
        m = total / K
    return m, t


@triton.jit
def _scale_derivative(d, a, valid, m, t, n, KIND: tl.constexpr, K: tl.constexpr):
    sign = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
    if KIND == 0:
        return sign / n
    elif KIND == 1:
        at_max = tl.where(valid & (a == m), 1.0, 0.0)
        return sign * at_max / tl.sum(at_max, 0)
    else:
        above = tl.where(valid & (a > t), 1.0, 0.0)
        at_t = tl.where(valid & (a == t), 1.0, 0.0)
        share = (K - tl.sum(above, 0)) / tl.sum(at_t, 0)
        return sign * (above + at_t * share) / K


@triton.jit
def _forward_kernel(X, W, B, Y, S, rows, x_stride, y_stride, n, constant, eps,
                    KIND: tl.constexpr, K: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                    BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # row x stride passes int32 in large tensors
    cols = tl.arange(0, BLOCK)
    valid = cols < n
    x = tl.load(X + row * x_stride + cols, mask=valid, other=0.0).to(tl.float32)
    mean = 0.0
    if KIND == 4:
        d = x
    else:
        mean = tl.sum(x, 0) / n
        d = tl.where(valid, x - mean, 0.0)
    if KIND >= 3:
        inv_s = 1.0 / tl.sqrt(tl.sum(d * d, 0) / n + eps)
        y = d * inv_s
    else:
        m, t = _row_scale(tl.abs(d), valid, n, KIND, K)
        y = d / (constant * m + eps)
    if HAS_W:
        y = y * tl.load(W + cols, mask=valid, other=0.0).to(tl.float32)
    if HAS_B:
        y = y + tl.load(B + cols, mask=valid, other=0.0).to(tl.float32)
    tl.store(Y + row * y_stride + cols, y.to(Y.dtype.element_ty), mask=valid)
    if KIND == 4:  # the statistics (count, rows), row-major: slot i of this row at S + i * rows + row
        tl.store(S + row, inv_s)
    elif KIND == 3:
        tl.store(S + row, mean)
        tl.store(S + rows + row, inv_s)
    else:
        tl.store(S + row, mean)
        tl.store(S + rows + row, m)
        tl.store(S + 2 * rows + row, t)


@triton.jit
def _backward_kernel(G, X, W, S, DX, PART, rows, rows_per_program, g_stride,
                     x_stride, dx_stride, n, constant, eps, KIND: tl.constexpr, K: tl.constexpr,
                     HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    program = tl.program_id(0).to(tl.int64)  # row x stride passes int32 in large tensors
    cols = tl.arange(0, BLOCK)
    valid = cols < n
    if HAS_W:
        w = tl.load(W + cols, mask=valid, other=0.0).to(tl.float32)
    else:
        w = tl.full((BLOCK,), 1.0, tl.float32)
    dw = tl.zeros((BLOCK,), tl.float32)
    db = tl.zeros((BLOCK,), tl.float32)
    for i in range(0, rows_per_program):
        row = program * rows_per_program + i
        # Past the last row (the last program's share may be short) the row's data are masked off
        # and its statistics read from the last row: tensor masks only (the interpreter refuses
        # a scalar mask), and nothing of it is stored or summed (g = 0 there).
        here = cols < tl.where(row < rows, n, 0)
        statistic = tl.minimum(row, rows - 1)
        g = tl.load(G + row * g_stride + cols, mask=here, other=0.0).to(tl.float32)
        x = tl.load(X + row * x_stride + cols, mask=here, other=0.0).to(tl.float32)
        h = g * w
        if KIND >= 3:  # rows.py: dd = h / s - d mean(h d) / s^3, centered for l2
            if KIND == 4:
                inv_s = tl.load(S + statistic)
                d = x
            else:
                inv_s = tl.load(S + rows + statistic)
                d = tl.where(here, x - tl.load(S + statistic), 0.0)
            dd = tl.where(here, inv_s * h - inv_s * inv_s * inv_s * d * (tl.sum(h * d, 0) / n), 0.0)
        else:
            m = tl.load(S + rows + statistic)
            d = tl.where(here, x - tl.load(S + statistic), 0.0)
            inv_s = 1.0 / (constant * m + eps)
            coupling = constant * inv_s * inv_s * tl.sum(h * d, 0)
            a = tl.abs(d)
            own_m, own_t = m, m  # l1's derivative reads neither
            if KIND != 0:
                # the ties among this kernel's own |d| (the saved m, t only for the scale): a forward
                # compiled apart can round them one ulp away, and nothing would equal it
                own_m, own_t = _row_scale(a, here, n, KIND, K)
            derivative = _scale_derivative(d, a, here, own_m, own_t, n, KIND, K)
            dd = tl.where(here, h * inv_s - coupling * derivative, 0.0)
        if KIND == 4:
            dx = dd
        else:
            dx = dd - tl.sum(dd, 0) / n
        tl.store(DX + row * dx_stride + cols, dx.to(DX.dtype.element_ty), mask=here)
        dw += g * d * inv_s
        db += g
    programs = tl.num_programs(0)
    tl.store(PART + program * BLOCK + cols, dw)  # PART (2, programs, BLOCK): dgamma's, then dbeta's
    tl.store(PART + (programs + program) * BLOCK + cols, db)


@triton.jit
def _parameter_grad_kernel(PART, DW, DB, programs, n, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr,
                           BLOCK: tl.constexpr, COLUMNS: tl.constexpr):
    """dgamma and dbeta: the backward programs' float32 partial sums added up over COLUMNS
    features a program, stored in the parameters' dtype (no sum or cast issued from Python)."""
    cols = tl.program_id(0) * COLUMNS + tl.arange(0, COLUMNS)
    valid = cols < n
    dw = tl.zeros((COLUMNS,), tl.float32)
    db = tl.zeros((COLUMNS,), tl.float32)
    for program in range(0, programs):
        if HAS_DW:
            dw += tl.load(PART + program * BLOCK + cols, mask=valid, other=0.0)
        if HAS_DB:
            db += tl.load(PART + (programs + program) * BLOCK + cols, mask=valid, other=0.0)
    if HAS_DW:
        tl.store(DW + cols, dw.to(DW.dtype.element_ty), mask=valid)
    if HAS_DB:
        tl.store(DB + cols, db.to(DB.dtype.element_ty), mask=valid)


#: the most warps a program of a wide row gets (default 16; Liger goes to 32: scripts/bench/bench_norms.py
#: --max-warps 32, part 10 of scripts/bench/device_checks.sh, compares them on a GPU)
MAX_WARPS = int(os.environ.get("NORMMATTERS_TRITON_MAX_WARPS") or 16)


@functools.lru_cache(maxsize=None)
def _launch_options(n: int, max_warps: int):
    """(BLOCK, warps) of rows of n features: computed once per width (Triton's own
    next_power_of_2 and cdiv are jit functions, ~10 us a call from Python)."""
    block = 1 << max(n - 1, 0).bit_length()
    return block, min(max(block // 256, 1), max_warps)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _takes(x: torch.Tensor) -> bool:
    """Whether the kernels take these rows: some rows (an empty batch has nothing to launch) of
    at most MAX_FEATURES features (one row is one block of registers). Other inputs run rows.py,
    for that input only."""
    return x.shape[0] > 0 and x.shape[1] <= MAX_FEATURES


def _unit_stride(t):
    """t with unit stride along its last dimension (the kernels index gamma, beta and a row's
    features as base + column), or None."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _on_device_of(x: torch.Tensor):
    """The context of a launch for x: Triton launches on the current CUDA device, so a model
    spread over two GPUs would hand cuda:1 tensors to a launch on cuda:0 without it. (CPU
    tensors, in the interpreter: nothing to set.)"""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    if device.type != "cuda":  # TRITON_INTERPRET=1 runs the kernels on CPU tensors
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def forward_rows(x, weight, bias, kind, constant, eps, k):
    """rows.forward_rows on CUDA: (y, statistics) in rows.py's layout."""
    if not _takes(x):
        return rows_math.forward_rows(x, weight, bias, kind, constant, eps, k)
    x, weight, bias = _unit_stride(x), _unit_stride(weight), _unit_stride(bias)
    rows, n = x.shape
    block, warps = _launch_options(n, MAX_WARPS)
    y = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    statistics = torch.empty((STATISTICS[kind], rows), dtype=torch.float32, device=x.device)
    with _on_device_of(x):
        _forward_kernel[(rows,)](x, weight if weight is not None else x, bias if bias is not None else x,
                                 y, statistics, rows, x.stride(0), y.stride(0), n, constant, eps,
                                 KIND=KIND_CODES[kind], K=max(k, 1), HAS_W=weight is not None,
                                 HAS_B=bias is not None, BLOCK=block, num_warps=warps)
    return y, statistics


def backward_rows(grad, x, weight, statistics, kind, constant, eps, k, needs_weight_grad,
                  needs_bias_grad):
    """rows.backward_rows on CUDA: (dL/dx, dL/dgamma, dL/dbeta), dgamma and dbeta in gamma's
    dtype (float32 without gamma), added up on the device: two launches, no sum or cast after."""
    if not _takes(x):
        return rows_math.backward_rows(grad, x, weight, statistics, kind, constant, eps, k,
                                       needs_weight_grad, needs_bias_grad)
    statistics = statistics.contiguous()
    grad, x, weight = _unit_stride(grad), _unit_stride(x), _unit_stride(weight)
    rows, n = x.shape
    block, warps = _launch_options(n, MAX_WARPS)
    programs = max(1, min(_cdiv(rows, 16), 4 * _multiprocessors(x.device)))
    rows_per_program = _cdiv(rows, programs)
    programs = _cdiv(rows, rows_per_program)
    dx = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    parts = torch.empty((2, programs, block), dtype=torch.float32, device=x.device)
    parameter_dtype = weight.dtype if weight is not None else torch.float32
    dweight = torch.empty(n, dtype=parameter_dtype, device=x.device) if needs_weight_grad else None
    dbias = torch.empty(n, dtype=parameter_dtype, device=x.device) if needs_bias_grad else None
    with _on_device_of(x):
        _backward_kernel[(programs,)](grad, x, weight if weight is not None else x, statistics, dx, parts, rows,
                                      rows_per_program, grad.stride(0), x.stride(0), dx.stride(0), n, constant,
                                      eps, KIND=KIND_CODES[kind], K=max(k, 1), HAS_W=weight is not None,
                                      BLOCK=block, num_warps=warps)
        if needs_weight_grad or needs_bias_grad:
            _parameter_grad_kernel[(_cdiv(n, PARAMETER_COLUMNS),)](
                parts, dweight if needs_weight_grad else parts, dbias if needs_bias_grad else parts, programs, n,
                HAS_DW=needs_weight_grad, HAS_DB=needs_bias_grad, BLOCK=block, COLUMNS=PARAMETER_COLUMNS)
    return dx, dweight, dbias


PARAMETER_COLUMNS = 256  # features a program of _parameter_grad_kernel adds up
