"""Analytic forward and backward of the l1 / linf / topk layer norm over the rows of a 2-D input.

For a row x of n features, d = x - mean(x), m = scale(d) (mean|d|, max|d| or the mean of the
k largest |d|), s = C * m + eps and y = gamma * d / s + beta. With g = dL/dy, h = gamma * g:

    dL/dbeta  = sum_rows g                    dL/dgamma = sum_rows g * d / s
    dL/dd_j   = h_j / s - (C / s^2) * sum_i(h_i d_i) * dm/dd_j
    dL/dx_j   = dL/dd_j - mean_i(dL/dd_i)

    dm/dd_j = sign(d_j) / n                                   (l1)
            = sign(d_j) [|d_j| = m] / #{i: |d_i| = m}         (linf; ties share, as torch's amax)
            = sign(d_j) w_j / k,  w_j = 1 if |d_j| > t,       (topk; t = k-th largest |d|,
                                  (k - #{|d| > t}) / #{|d| = t} if |d_j| = t, else 0)

The forward saves the input and the statistics of each row, like LayerNorm's mean and rstd, in
one layout that every backend (rows.py, native, Triton) writes and reads, so that a backward of
one backend can follow the forward of another: a (count, rows) tensor in the compute dtype,
rows [mean, m, t] (t = m for l1/linf), [1/rms] for rms (no centering, eps inside the root), or
[mean, 1/s] for l2 (s = sqrt(mean(d^2) + eps); only the Triton kernels of a narrow accumulation
use it: float32 l2 is torch's LayerNorm).
Everything is computed in float32 (or float64) and returned in the input dtype. These are
plain torch functions: the "compiled" backend hands them to torch.compile, and native_rows.cpp
implements the same formulas for CPU.
"""

from typing import Optional, Tuple

import torch

Tensor = torch.Tensor


ROOT_MEAN_SQUARE_KINDS = ("rms", "l2")  # the kinds whose scale is a root mean square, eps inside the root


def compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for a narrower float input (fp16/bf16), else x's dtype: the reduction dtype."""
    return torch.promote_types(x.dtype, torch.float32)


def row_statistics(d: Tensor, kind: str, k: int) -> Tuple[Tensor, Tensor]:
    """(m, t): the scale statistic of each centered row and (topk) the k-th largest |d| (else m)."""
    a = d.abs()
    if kind == "l1":
        m = a.mean(-1, keepdim=True)
        return m, m
    if kind == "linf":
        m = a.amax(-1, keepdim=True)
        return m, m
    top = a.topk(k, dim=-1).values
    return top.mean(-1, keepdim=True), top[..., -1:]


def forward_rows(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], kind: str,
                 constant: float, eps: float, k: int):
    """(y, statistics) for the rows of x (2-D). l1/linf/topk: y = gamma * d / (C m + eps) + beta,
    statistics [mean, m, t]; rms: y = gamma * x / sqrt(mean(x^2) + eps) + beta, statistics [1/rms];
    l2: y = gamma * d / sqrt(mean(d^2) + eps) + beta, statistics [mean, 1/s]."""
    xf = x.to(compute_dtype(x))
    if kind in ROOT_MEAN_SQUARE_KINDS:
        mean = xf.mean(-1, keepdim=True) if kind == "l2" else None
        d = xf if mean is None else xf - mean
        inv_s = torch.rsqrt((d * d).mean(-1, keepdim=True) + eps)
        statistics = inv_s.view(1, -1) if mean is None else torch.cat((mean, inv_s), dim=1).t().contiguous()
        return affine(d * inv_s, weight, bias).to(x.dtype), statistics
    mean = xf.mean(-1, keepdim=True)
    d = xf - mean
    m, t = row_statistics(d, kind, k)
    statistics = torch.cat((mean, m, t), dim=1).t().contiguous()
    return affine(d / (constant * m + eps), weight, bias).to(x.dtype), statistics


def affine(y: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    """gamma * y + beta (either may be None), in y's dtype."""
    if weight is not None:
        y = y * weight.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


def scale_derivative(d: Tensor, kind: str, k: int) -> Tensor:
    """dm/dd_j for each element (see the module docstring). The ties are found among d's own
    values (its max, its k-th largest |d|), never by equality with a statistic saved by a forward
    computed elsewhere: two separately compiled graphs can round |d| one ulp apart, and then no
    element would equal it (0/0)."""
    a, sign = d.abs(), torch.sign(d)
    if kind == "l1":
        return sign / d.shape[-1]
    if kind == "linf":
        at_max = (a == a.amax(-1, keepdim=True)).to(d.dtype)
        return sign * at_max / at_max.sum(-1, keepdim=True)
    t = a.topk(k, dim=-1).values[..., -1:]
    above = (a > t).to(d.dtype)
    at_t = (a == t).to(d.dtype)
    share = (k - above.sum(-1, keepdim=True)) / at_t.sum(-1, keepdim=True)
    return sign * (above + at_t * share) / k


def backward_rows(grad: Tensor, x: Tensor, weight: Optional[Tensor], statistics: Tensor,
                  kind: str, constant: float, eps: float, k: int, needs_weight_grad: bool,
                  needs_bias_grad: bool, centered: Optional[Tensor] = None):
    """(dL/dx, dL/dgamma, dL/dbeta) for the rows of x from dL/dy (2-D); statistics from forward_rows.
    rms (s = sqrt(mean(x^2) + eps), no centering): dL/dx = h / s - x * mean(h x) / s^3; l2 the
    same of d = x - mean(x), then centered: dL/dx_j = dL/dd_j - mean_i(dL/dd_i). `centered`: d
    (x for rms) as the forward computed it, when that is not x - mean in the compute dtype (a
    narrow accumulation rounds it to its format: its max must be found among the same values)."""
    dtype = compute_dtype(x)
    g = grad.to(dtype)
    h = g * weight.to(dtype) if weight is not None else g
    if kind in ROOT_MEAN_SQUARE_KINDS:
        *mean, inv_s = statistics.unsqueeze(-1)
        d = centered if centered is not None else x.to(dtype) - mean[0] if mean else x.to(dtype)
        dd = inv_s * h - inv_s ** 3 * d * (h * d).mean(-1, keepdim=True)
        dx = dd - dd.mean(-1, keepdim=True) if mean else dd
    else:
        mean, m, _ = statistics.unsqueeze(-1)  # m for the scale only: the ties come from d
        d = centered if centered is not None else x.to(dtype) - mean
        inv_s = 1.0 / (constant * m + eps)
        coupling = constant * inv_s * inv_s * (h * d).sum(-1, keepdim=True)
        dd = h * inv_s - coupling * scale_derivative(d, kind, k)
        dx = dd - dd.mean(-1, keepdim=True)
    dweight = column_sum(g * d * inv_s) if needs_weight_grad else None
    dbias = column_sum(g) if needs_bias_grad else None
    return dx.to(x.dtype), dweight, dbias


def column_sum(p: Tensor, block: int = 32) -> Tensor:
    """p.sum(0), summed over blocks of rows first (zero rows pad the last block). Compiled for
    CPU, a plain sum(0) walks every row once per vector of columns; a block stays in cache."""
    padded = torch.nn.functional.pad(p, (0, 0, 0, (-p.shape[0]) % block))
    return padded.view(-1, block, p.shape[1]).sum(1).sum(0)

