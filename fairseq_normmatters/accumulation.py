"""Norms whose statistics are accumulated in a narrow float format (fp16, bf16), emulated exactly.

A norm kernel that accumulates in fp16 rounds every partial sum to fp16; torch's CPU reductions
of fp16/bf16 tensors accumulate in float32 and round once at the end, so running the plain
formula on half tensors does not show what such a kernel computes. Here every operation's
result is rounded to the format F, and sums are pairwise trees (as a GPU block reduction adds),
each level rounded:

    v = round_F(x)                          S(.) = pairwise_sum, every partial sum in F
    d = v - S(v) / n                        (rms: d = v, no centering)
    l2, rms:  y = d * r(1 / sqrt(S(d * d) / n + eps))     (r: 1 / sqrt in float32, then rounded to F)
    l1:       y = d / (C * S(|d|) / n + eps)
    linf:     y = d / (C * max|d| + eps)                    (a maximum is exact in any format)
    topk:     y = d / (C * S(k largest |d|) / k + eps)
    y = gamma * y + beta, in F, returned in x's dtype

A sum of n terms of size a overflows fp16 (largest finite 65504) once n * a > 65504: at n = 1024
the sum of squares once |d| > 8, the sum of |d| once |d| > 64; bf16 has float32's range but
an eps of 2^-7. An elementwise operation on two fp16/bf16 tensors is correctly rounded (torch
computes it in float32, whose 24 bits are at least 2p + 2 of either format: the double rounding
is exact), so the emulation is bit for bit what an F accumulator of this order gives. Its
backward is autograd's through the same rounded operations.

    >>> from fairseq_normmatters import build_norm
    >>> norm = build_norm("l2", 1024, accumulate="fp16")   # an L2 layer norm of an fp16 kernel
"""

from typing import Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

#: accumulate= names -> the format of the accumulator (None: float32, the fast paths' own)
ACCUMULATE_FORMATS = {"float32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
FLOAT32 = "float32"


def check_accumulate(name) -> str:
    if name not in ACCUMULATE_FORMATS:
        raise ValueError(f"accumulate={name!r} is unknown; allowed: {', '.join(ACCUMULATE_FORMATS)}")
    return name


def pairwise_sum(v: Tensor) -> Tensor:
    """The sum over v's last dimension (kept) in v's dtype as a pairwise tree: zeros pad the row
    to a power of two (exact), then neighbours are added level by level, each sum rounded."""
    n = v.shape[-1]
    v = F.pad(v, (0, (1 << (n - 1).bit_length()) - n))
    while v.shape[-1] > 1:
        v = v[..., 0::2] + v[..., 1::2]
    return v


def narrow_statistic(d: Tensor, kind: str, k: Optional[int]) -> Tensor:
    """The raw scale statistic of the centered rows d (last dimension, kept), in d's dtype:
    S(d^2)/n (l2, rms), S(|d|)/n (l1), max|d| (linf), S(top k |d|)/k (topk)."""
    if kind in ("l2", "rms"):
        return pairwise_sum(d * d) / d.shape[-1]
    a = d.abs()
    if kind == "l1":
        return pairwise_sum(a) / d.shape[-1]
    if kind == "linf":
        return a.amax(-1, keepdim=True)
    return pairwise_sum(a.topk(k, dim=-1).values) / k


def narrow_norm(x: Tensor, kind: str, size: int, weight: Optional[Tensor], bias: Optional[Tensor],
                eps: float, constant: float, k: Optional[int], accumulate: str) -> Tensor:
    """The `kind` norm (l2, l1, linf, topk, rms) of x over its last `size` elements accumulated
    in the format `accumulate` names ("fp16" or "bf16")."""
    dtype = ACCUMULATE_FORMATS[check_accumulate(accumulate)]
    if dtype is None:
        raise ValueError("narrow_norm emulates fp16 or bf16 accumulation; float32 is the norms' own path")
    return norm_in_format(x, kind, size, weight, bias, eps, constant, k, dtype)


def norm_in_format(x: Tensor, kind: str, size: int, weight: Optional[Tensor], bias: Optional[Tensor],
                   eps: float, constant: float, k: Optional[int], dtype: torch.dtype) -> Tensor:
    """The module docstring's formulas with every operation in `dtype` (any float dtype: in
    float64 they are the norms' reference formulas, which the tests check by gradcheck)."""
    return rows_in_format(x.reshape(-1, size), kind, weight, bias, eps, constant, k, dtype)[0].view(x.shape)


def rows_in_format(x: Tensor, kind: str, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                   constant: float, k: Optional[int], dtype: torch.dtype, float32_mean: bool = False):
    """(y in x's dtype, statistics) of the rows of x (2-D) by the module docstring's formulas in
    `dtype`; statistics in kernels/rows.py's layout, float32: [mean, m, t] (l1, linf, topk: m the
    raw statistic, t the k-th largest |d|), [mean, 1/s] (l2), [1/s] (rms). float32_mean: the
    centering mean in float32 (a kernel that keeps its mean wide, or Welford's running mean,
    which cannot overflow), d = round(x - mean), the rest in `dtype`."""
    v = x.to(dtype)
    n = x.shape[-1]
    if kind == "rms":
        mean, d = None, v
    elif float32_mean:
        wide_mean = v.float().sum(-1, keepdim=True) / n
        mean, d = wide_mean, (v.float() - wide_mean).to(dtype)
    else:
        mean = pairwise_sum(v) / n
        d = v - mean
    statistic = narrow_statistic(d, kind, k)
    if kind in ("l2", "rms"):
        wide = (statistic + eps).to(torch.promote_types(dtype, torch.float32))
        inverse = (1.0 / torch.sqrt(wide)).to(dtype)  # as the kernel: float32 sqrt and divide, then F
        y, statistics = d * inverse, [inverse] if mean is None else [mean, inverse]
    else:
        y = d / (statistic * constant + eps)
        t = d.abs().topk(k, dim=-1).values[..., -1:] if kind == "topk" else statistic
        statistics = [mean, statistic, t]
    if weight is not None:
        y = y * weight.reshape(-1).to(dtype)
    if bias is not None:
        y = y + bias.reshape(-1).to(dtype)
    return y.to(x.dtype), torch.cat([s.float() for s in statistics], dim=1).t().contiguous()
