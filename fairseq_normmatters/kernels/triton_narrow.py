"""Triton kernel of the norms accumulating in fp16 or bf16 (CUDA): accumulation.py's formulas,
one row per program, every operation's result rounded to the format and every sum a pairwise
tree of neighbours in accumulation.pairwise_sum's order, so that it gives the emulation's
statistics bit for bit (and its output within the last bit of the rsqrt and the C * m).

Values live in float32 registers and are rounded to the format after each operation: fp16 by
Triton's conversion, bf16 by integer rounding (ties to even), because Triton's interpreter,
which tests the kernel on CPU, truncates a float32 -> bf16 conversion and cannot add bf16
numbers. An operation on two numbers of the format computed in float32 and rounded is the
correctly rounded operation of the format (float32 has at least 2p + 2 bits of either).

Its backward is narrow.py's, the one of every narrow path.
"""

import torch
import triton
import triton.language as tl

from . import triton_kernels

KIND_CODES = triton_kernels.KIND_CODES
FORMAT_CODES = {"fp16": 0, "bf16": 1}


@triton.jit
def _round(v, FORMAT: tl.constexpr):
    """float32 v rounded to the nearest number of the format (ties to even), as float32."""
    if FORMAT == 0:
        return v.to(tl.float16).to(tl.float32)
    else:
        bits = v.to(tl.uint32, bitcast=True)
        kept = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return tl.where(v != v, v, kept.to(tl.float32, bitcast=True))


@triton.jit
def _pairwise_sum(v, FORMAT: tl.constexpr, BLOCK: tl.constexpr, LEVELS: tl.constexpr):
    """The sum of the BLOCK = 2^LEVELS values v: neighbours added level by level, each sum rounded."""
    for level in tl.static_range(LEVELS):
        first, second = tl.split(tl.reshape(v, (BLOCK >> (level + 1), 2)))
        v = _round(first + second, FORMAT)
    return tl.sum(v, 0)  # the one value left


@triton.jit
def _divide(a, b, FORMAT: tl.constexpr):
    return _round(tl.math.div_rn(a, b), FORMAT)


@triton.jit
def _top_k_sum(a, valid, cols, FORMAT: tl.constexpr, K: tl.constexpr, K_BLOCK: tl.constexpr,
               K_LEVELS: tl.constexpr):
    """(pairwise sum of the K largest of a, largest first; the K-th largest)."""
    rest = tl.where(valid, a, -1.0)
    slots = tl.arange(0, K_BLOCK)
    tops = tl.zeros((K_BLOCK,), tl.float32)
    top = 0.0
    for i in tl.static_range(K):
        top = tl.max(rest, 0)
        tops = tl.where(slots == i, top, tops)
        rest = tl.where(cols == tl.argmax(rest, 0), -1.0, rest)  # one of the ties at a time
    return _pairwise_sum(tops, FORMAT, K_BLOCK, K_LEVELS), top


@triton.jit
def _narrow_forward_kernel(X, W, B, Y, S, rows, x_stride, y_stride, n, constant, eps,
                           KIND: tl.constexpr, FORMAT: tl.constexpr, K: tl.constexpr, K_BLOCK: tl.constexpr,
                           K_LEVELS: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                           BLOCK: tl.constexpr, LEVELS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # row x stride passes int32 in large tensors
    cols = tl.arange(0, BLOCK)
    valid = cols < n
    v = _round(tl.load(X + row * x_stride + cols, mask=valid, other=0.0).to(tl.float32), FORMAT)
    mean = 0.0
    if KIND == 4:
        d = v
    else:
        mean = _divide(_pairwise_sum(v, FORMAT, BLOCK, LEVELS), n * 1.0, FORMAT)
        d = tl.where(valid, _round(v - mean, FORMAT), 0.0)
    a = tl.abs(d)
    if KIND >= 3:
        m = _divide(_pairwise_sum(_round(d * d, FORMAT), FORMAT, BLOCK, LEVELS), n * 1.0, FORMAT)
        inv_s = _round(tl.math.div_rn(1.0, tl.math.sqrt_rn(_round(m + eps, FORMAT))), FORMAT)
        y = _round(d * inv_s, FORMAT)
        t = m
    else:
        if KIND == 0:
            m = _divide(_pairwise_sum(a, FORMAT, BLOCK, LEVELS), n * 1.0, FORMAT)
            t = m
        elif KIND == 1:
            m = tl.max(a, 0)
            t = m
        else:
            total, t = _top_k_sum(a, valid, cols, FORMAT, K, K_BLOCK, K_LEVELS)
            m = _divide(total, K * 1.0, FORMAT)
        scale = _round(_round(m * constant, FORMAT) + eps, FORMAT)
        y = _divide(d, scale, FORMAT)
    if HAS_W:
        y = _round(y * _round(tl.load(W + cols, mask=valid, other=0.0).to(tl.float32), FORMAT), FORMAT)
    if HAS_B:
        y = _round(y + _round(tl.load(B + cols, mask=valid, other=0.0).to(tl.float32), FORMAT), FORMAT)
    if Y.dtype.element_ty == tl.bfloat16:  # rounded here: the interpreter's conversion truncates
        y = _round(y, 1)
    tl.store(Y + row * y_stride + cols, y.to(Y.dtype.element_ty), mask=valid)
    if KIND == 3:  # rows.py's layouts: l2 [mean, 1/s], rms [1/s], l1/linf/topk [mean, m, t]; slot i of
        tl.store(S + row, mean)  # this row at S + i * rows + row
        tl.store(S + rows + row, inv_s)
    elif KIND == 4:
        tl.store(S + row, inv_s)
    else:
        tl.store(S + row, mean)
        tl.store(S + rows + row, m)
        tl.store(S + 2 * rows + row, t)


def _levels(block: int) -> int:
    return block.bit_length() - 1


def forward_rows(x, weight, bias, kind, constant, eps, k, accumulate):
    """(y, statistics in rows.py's layout) of the rows of x (2-D) accumulated in `accumulate`."""
    if x.shape[1] > triton_kernels.MAX_FEATURES:
        raise ValueError(f"the narrow-accumulation kernel takes rows of at most {triton_kernels.MAX_FEATURES} "
                         f"features; got {x.shape[1]}")
    x, weight, bias = (triton_kernels._unit_stride(t) for t in (x, weight, bias))
    rows, n = x.shape
    block, warps = triton_kernels._launch_options(n, triton_kernels.MAX_WARPS)
    k_block = triton.next_power_of_2(max(k, 1))
    y = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    statistics = torch.empty((triton_kernels.STATISTICS[kind], rows), dtype=torch.float32, device=x.device)
    if rows:
        with triton_kernels._on_device_of(x):
            _narrow_forward_kernel[(rows,)](
                x, weight if weight is not None else x, bias if bias is not None else x, y, statistics, rows,
                x.stride(0), y.stride(0), n, constant, eps, KIND=KIND_CODES[kind],
                FORMAT=FORMAT_CODES[accumulate], K=max(k, 1), K_BLOCK=k_block, K_LEVELS=_levels(k_block),
                HAS_W=weight is not None, HAS_B=bias is not None, BLOCK=block, LEVELS=_levels(block),
                num_warps=warps)
    return y, statistics

