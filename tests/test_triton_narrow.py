"""The Triton kernel of the norms accumulating in fp16/bf16 (kernels/triton_narrow.py) against the
emulation (accumulation.py): the statistics bit for bit, the output to its last bit, the rows
that overflow, the gradients against autograd of the emulation, and the fallback.

Without a GPU, conftest.py sets TRITON_INTERPRET=1 and the kernel runs in Triton's interpreter
on CPU tensors: the same source, its tree of sums, its rounding and its masks.
"""

import pytest
import torch

from fairseq_normmatters import build_norm, kernels
from fairseq_normmatters.accumulation import ACCUMULATE_FORMATS, narrow_norm, narrow_statistic, pairwise_sum
from fairseq_normmatters.constants import resolve_constant
from fairseq_normmatters.kernels import backends

pytest.importorskip("fairseq_normmatters.kernels.triton_narrow", reason="Triton is not installed")

pytestmark = pytest.mark.usefixtures("no_backend_broken")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KINDS = ("l2", "l1", "linf", "topk", "rms")
FORMATS = ("fp16", "bf16")
EPS = 1e-5
UNIT = {"fp16": 2.0 ** -10, "bf16": 2.0 ** -7}  # the largest relative spacing of each format


def constant_of(kind, n, k):
    return resolve_constant(kind, n, "paper", k) if kind in ("l1", "linf", "topk") else 1.0


def top_k(kind, n):
    return min(3, n) if kind == "topk" else 0


def rows_of(n, seed, rows=6, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, n, generator=g) * scale + 1).to(DEVICE)


def through_the_kernel(kind, x, weight, bias, accumulate, k):
    plan = kernels.NarrowTritonPlan(kind, x.shape[1], constant_of(kind, x.shape[1], k), EPS, k, accumulate)
    return plan.forward(x, weight, bias)


def emulated(kind, x, weight, bias, accumulate, k):
    return narrow_norm(x, kind, x.shape[1], weight, bias, EPS, constant_of(kind, x.shape[1], k), k or None,
                       accumulate)


def emulated_statistics(kind, x, accumulate, k):
    """The emulation's mean and raw statistic m (or 1/s for l2, rms), as the kernel stores them."""
    dtype = ACCUMULATE_FORMATS[accumulate]
    v = x.to(dtype)
    mean = pairwise_sum(v) / x.shape[1]
    d = v if kind == "rms" else v - mean
    m = narrow_statistic(d, kind, k or None)
    if kind in ("l2", "rms"):
        return mean.float().flatten(), torch.rsqrt(m + EPS).float().flatten()
    return mean.float().flatten(), m.float().flatten()


@pytest.mark.parametrize("accumulate", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 7, 64, 1000])
def test_the_kernel_finds_the_emulations_statistics_bit_for_bit_and_its_output_to_the_last_bit(kind, accumulate, n):
    """The mean and the sum, max or top-k statistic bit for bit; 1/s (l2, rms) within one unit in
    the last place (torch's rsqrt of fp16/bf16 is not always correctly rounded: 0.02% of
    values here); the output within two (a scale one unit off, then the product), and with
    gamma and beta within four units of the largest term, |gamma y| or |beta| (two more roundings)."""
    k = top_k(kind, n)
    x = rows_of(n, seed=n)
    y, statistics = through_the_kernel(kind, x, None, None, accumulate, k)
    mean, m = emulated_statistics(kind, x, accumulate, k)
    if kind == "rms":
        assert torch.allclose(statistics[0], m, rtol=UNIT[accumulate], atol=0)
    elif kind == "l2":
        assert torch.equal(statistics[0], mean)
        assert torch.allclose(statistics[1], m, rtol=UNIT[accumulate], atol=0)
    else:
        assert torch.equal(statistics[0], mean) and torch.equal(statistics[1], m)
    expected = emulated(kind, x, None, None, accumulate, k)
    assert y.dtype == x.dtype and torch.allclose(y, expected, rtol=2 * UNIT[accumulate], atol=0)
    g = torch.Generator().manual_seed(1)
    weight, bias = (torch.randn(n, generator=g).to(DEVICE) for _ in range(2))
    affine, _ = through_the_kernel(kind, x, weight, bias, accumulate, k)
    largest = torch.maximum((expected * weight).abs(), bias.abs())
    assert ((affine - emulated(kind, x, weight, bias, accumulate, k)).abs() <= 4 * UNIT[accumulate] * largest).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_the_kernel_takes_input_of_any_float_dtype_rounding_it_first(dtype):
    x = rows_of(64, seed=2).to(dtype)
    y, _ = through_the_kernel("l1", x, None, None, "fp16", 0)
    assert y.dtype == dtype and torch.equal(y, emulated("l1", x, None, None, "fp16", 0))


def test_in_fp16_the_kernels_l2_collapses_rows_of_deviation_20_at_width_1024_and_l1_linf_do_not():
    x = rows_of(1024, seed=3, rows=4, scale=20.0) - 1
    assert (through_the_kernel("l2", x, None, None, "fp16", 0)[0] == 0).all()
    for kind in ("l1", "linf"):
        y, _ = through_the_kernel(kind, x, None, None, "fp16", 0)
        exact = build_norm(kind, 1024).to(DEVICE).double()(x.double())
        assert ((y.double() - exact).norm(dim=1) / exact.norm(dim=1)).max() < 0.01


@pytest.mark.parametrize("accumulate", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_kernels_gradients_follow_autograd_of_the_emulation(kind, accumulate):
    """The kernel's backward (float32, analytic, at its statistics) against autograd through the
    emulation's rounded operations: within 1% (fp16) or 3% (bf16); x's gradient of linf and
    topk in bf16 within 15% (ties at the maximum after rounding to 8 bits; test_accumulation.py)."""
    n, k = 96, top_k(kind, 96)
    x, upstream = rows_of(n, seed=5, rows=8), rows_of(n, seed=6, rows=8)
    g = torch.Generator().manual_seed(7)
    parameters = [torch.randn(n, generator=g).to(DEVICE) for _ in range(2)]
    results = {}
    for name, plan in (("kernel", kernels.NarrowTritonPlan(kind, n, constant_of(kind, n, k), EPS, k, accumulate)),
                       ("emulation", None)):
        leaves = [t.clone().requires_grad_() for t in (x, *parameters)]
        y = plan.run(*leaves) if plan else emulated(kind, *leaves, accumulate, k)
        results[name] = torch.autograd.grad((y * upstream).sum(), leaves)
    tolerance = {"fp16": 0.01, "bf16": 0.03}[accumulate]
    for index, (ours, expected) in enumerate(zip(results["kernel"], results["emulation"])):
        allowed = 0.15 if index == 0 and kind in ("linf", "topk") and accumulate == "bf16" else tolerance
        error = ((ours - expected).norm() / expected.norm()).item()
        assert error < allowed, f"{kind} {accumulate}: gradient {index} off by {error:.4f}"


def test_a_module_runs_the_kernel_where_the_backend_says_and_falls_back_to_the_emulation_once(monkeypatch, caplog):
    norm = build_norm("linf", 64, accumulate="fp16").to(DEVICE)
    x = rows_of(64, seed=8)
    expected = emulated("linf", x, norm.weight, norm.bias, "fp16", 0)
    assert backends.narrow_backend(x) == ("triton" if DEVICE == "cuda" else "eager")
    monkeypatch.setattr(backends, "narrow_backend", lambda x: "triton")  # on CPU: the interpreter
    calls = []
    original = kernels.NarrowTritonPlan.forward
    monkeypatch.setattr(kernels.NarrowTritonPlan, "forward", lambda self, *a: calls.append(1) or original(self, *a))
    with torch.no_grad():
        assert torch.allclose(norm(x), expected, rtol=2e-3, atol=2e-3) and calls == [1]

    def broken(self, *args):
        calls.append(2)
        raise RuntimeError("no kernel today")
    monkeypatch.setattr(kernels.NarrowTritonPlan, "forward", broken)
    monkeypatch.setattr(backends, "narrow_backend", lambda x: "eager" if "triton" in backends._broken else "triton")
    with torch.no_grad():
        assert torch.equal(norm(x), expected) and torch.equal(norm(x), expected)
    assert calls == [1, 2], "the failed kernel is tried once, then the emulation runs"
    assert "norm backend 'triton' unavailable (RuntimeError: no kernel today)" in caplog.text
    assert backends._broken == {"triton": "RuntimeError: no kernel today"}
    backends._broken.clear()  # the failure was this test's own
