"""Inputs for the tests of the fast norm paths."""

import torch


def has_ties(x: torch.Tensor, top: int = 6) -> bool:
    """Whether any row's `top` largest |x - mean| (as the kernels compute them) repeat a value."""
    d = x.float() - x.float().mean(-1, keepdim=True)
    largest = d.abs().topk(min(top, x.shape[-1]), dim=-1).values
    return bool((largest[:, 1:] == largest[:, :-1]).any())


def inputs(rows_, n, dtype, device, contiguous=True, affine=True):
    """x (rows_, n) in dtype without ties among the top |d| (where eager topk picks arbitrarily
    and the kernels share: test_ties_share_the_gradient_like_torch), and fp32/fp64 gamma, beta."""
    x = torch.randn(rows_, 2, n, device=device, dtype=torch.float64) * 3 + 1
    while has_ties(x[:, 1, :].to(dtype)):
        x = torch.randn(rows_, 2, n, device=device, dtype=torch.float64) * 3 + 1
    x = x.to(dtype)[:, 1, :]
    x = (x if not contiguous else x.contiguous()).requires_grad_()
    param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    weight = torch.randn(n, device=device, dtype=param_dtype, requires_grad=True) if affine else None
    bias = torch.randn(n, device=device, dtype=param_dtype, requires_grad=True) if affine else None
    return x, weight, bias


def one_ulp_up(statistics):
    """Statistics [mean, m, t] with m and t one ulp larger: what a forward compiled apart (FMA
    contraction, approximate division) can save for the same row."""
    off = statistics.clone()
    off[1:] = torch.nextafter(off[1:], torch.full_like(off[1:], float("inf")))
    return off
