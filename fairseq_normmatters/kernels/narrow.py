"""The norms accumulating in fp16/bf16 as implementations of one definition: a forward whose
statistics are accumulated in the format (accumulation.py's formulas; on CUDA the Triton kernel
of triton_narrow.py, which finds the same statistics bit for bit) and one backward on every
device: rows.py's float32 analytic backward at those statistics and the centered rows d as the
forward rounded them (a narrow kernel's backward, like LayerNorm's, reads its saved mean and
scale). A run whose kernel fails mid-training goes on with the emulation and the same backward."""

import functools

from ..accumulation import ACCUMULATE_FORMATS, rows_in_format
from . import rows as rows_math
from .backends import Implementation


def forward_rows(x, weight, bias, kind, constant, eps, k, accumulate):
    """(y, statistics in rows.py's layout) of the rows of x (2-D) by the emulation."""
    return rows_in_format(x, kind, weight, bias, eps, constant, k or None, ACCUMULATE_FORMATS[accumulate])


def backward_rows(grad, x, weight, statistics, kind, constant, eps, k, needs_weight_grad, needs_bias_grad,
                  accumulate):
    """The float32 analytic backward (rows.py) at the narrow forward's statistics and centered
    rows d, rounded to the format as the forward computed them (linf's maximum and topk's k-th
    largest are among those values, not among the float32 x - mean)."""
    dtype = ACCUMULATE_FORMATS[accumulate]
    v = x.to(dtype)
    d = v if kind == "rms" else v - statistics[0].unsqueeze(-1).to(dtype)
    return rows_math.backward_rows(grad, x, weight, statistics, kind, constant, eps, k, needs_weight_grad,
                                   needs_bias_grad, centered=d.float())


def _triton_forward(*args, accumulate):
    from . import triton_narrow  # imports Triton
    return triton_narrow.forward_rows(*args, accumulate)


@functools.lru_cache(maxsize=None)
def implementation(backend: str, accumulate: str) -> Implementation:
    """The narrow path `backend` ("triton" or "emulation") accumulating in `accumulate`."""
    forward = functools.partial(_triton_forward if backend == "triton" else forward_rows, accumulate=accumulate)
    return Implementation(backend, forward, functools.partial(backward_rows, accumulate=accumulate))
