"""The Triton kernel of the norms accumulating in fp16/bf16 (kernels/triton_narrow.py) against the
emulation (accumulation.py): the statistics bit for bit, the output to its last bit, the rows
that overflow, rows up to 32768 wide; one backward on both (kernels/narrow.py), its gradients
against autograd of the emulation; the fallback kept to what failed.

Without a GPU, conftest.py sets TRITON_INTERPRET=1 and the kernel runs in Triton's interpreter
on CPU tensors: the same source, its tree of sums, its rounding and its masks.
"""

import pytest
import torch

from fairseq_normmatters import build_norm, kernels
from fairseq_normmatters.accumulation import ACCUMULATE_FORMATS, narrow_norm, narrow_statistic, pairwise_sum
from fairseq_normmatters.constants import resolve_constant
from fairseq_normmatters.kernels import backends, narrow

pytest.importorskip("fairseq_normmatters.kernels.triton_narrow", reason="Triton is not installed")

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


def plan_of(path, kind, n, accumulate, k):
    """The plan of the narrow path `path` ("triton": the kernel, "emulation")."""
    return kernels.RowNormPlan(kind, n, constant_of(kind, n, k), EPS, k, narrow.implementation(path, accumulate),
                               accumulate)


def through_the_kernel(kind, x, weight, bias, accumulate, k):
    return plan_of("triton", kind, x.shape[1], accumulate, k).forward(x, weight, bias)


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
        return mean.float().flatten(), (1 / torch.sqrt((m + EPS).float())).to(dtype).float().flatten()
    return mean.float().flatten(), m.float().flatten()


@pytest.mark.parametrize("accumulate", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 7, 64, 1000])
def test_the_kernel_finds_the_emulations_statistics_bit_for_bit_and_its_output_to_the_last_bit(kind, accumulate, n):
    """The mean and the sum, max or top-k statistic or 1/s (l2, rms) bit for bit; the output within
    two units in the last place (C * m: a float32 constant in the kernel, torch's scalar in the
    emulation), and with gamma and beta within four units of the largest term, |gamma y| or
    |beta| (two more roundings)."""
    k = top_k(kind, n)
    x = rows_of(n, seed=n)
    y, statistics = through_the_kernel(kind, x, None, None, accumulate, k)
    mean, m = emulated_statistics(kind, x, accumulate, k)
    if kind == "rms":
        assert torch.equal(statistics[0], m)
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


def gradients_of(norm, n):
    """The gradients of (x, gamma, beta) through norm(x, gamma, beta) on seeded rows of n features."""
    x, upstream = rows_of(n, seed=5, rows=8), rows_of(n, seed=6, rows=8)
    g = torch.Generator().manual_seed(7)
    leaves = [t.requires_grad_() for t in (x, *(torch.randn(n, generator=g).to(DEVICE) for _ in range(2)))]
    return torch.autograd.grad((norm(*leaves) * upstream).sum(), leaves)


@pytest.mark.parametrize("accumulate", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_kernel_and_the_emulation_have_one_backward(kind, accumulate):
    """The same gradients, bit for bit, from the kernel's path and the emulation's: one backward
    (narrow.py) at the statistics each found, which are the same bit for bit."""
    n, k = 96, top_k(kind, 96)
    kernel, emulation = (gradients_of(plan_of(path, kind, n, accumulate, k).run, n) for path in ("triton", "emulation"))
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(kernel, emulation))


@pytest.mark.parametrize("accumulate", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_the_one_backward_follows_autograd_of_the_emulations_rounded_operations(kind, accumulate):
    """The float32 analytic backward at the narrow statistics against autograd through the
    emulation's rounded operations: within 1% (fp16) or 3% (bf16); x's gradient of linf and
    topk in bf16 within 15% (ties at the maximum after rounding to 8 bits; test_accumulation.py)."""
    n, k = 96, top_k(kind, 96)
    plan = gradients_of(plan_of("triton", kind, n, accumulate, k).run, n)
    autograd = gradients_of(lambda *leaves: emulated(kind, *leaves, accumulate, k), n)
    tolerance = {"fp16": 0.01, "bf16": 0.03}[accumulate]
    for index, (ours, expected) in enumerate(zip(plan, autograd)):
        allowed = 0.15 if index == 0 and kind in ("linf", "topk") and accumulate == "bf16" else tolerance
        error = ((ours - expected).norm() / expected.norm()).item()
        assert error < allowed, f"{kind} {accumulate}: gradient {index} off by {error:.4f}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [8192, 32768])
def test_the_kernel_takes_rows_up_to_32768_features(kind, n):
    """Wide rows (a 2^15 block, 15 levels of sums): the emulation's statistics and output."""
    k = 8 if kind == "topk" else 0
    x = rows_of(n, seed=n + 1, rows=2)
    y, statistics = through_the_kernel(kind, x, None, None, "fp16", k)
    mean, m = emulated_statistics(kind, x, "fp16", k)
    assert torch.equal(statistics[0 if kind == "rms" else 1], m)
    assert torch.allclose(y, emulated(kind, x, None, None, "fp16", k), rtol=2 * UNIT["fp16"], atol=0)


def on_the_interpreter(monkeypatch):
    """Without a GPU: make the CPU a device the triton backend serves (TRITON_INTERPRET=1)."""
    if DEVICE == "cpu":
        monkeypatch.setitem(backends._DEVICES, "triton", "cpu")
        monkeypatch.setattr(backends, "auto_choices", lambda device: ("triton", "compiled"))


def test_a_module_runs_the_kernel_where_the_route_says_and_a_failure_stays_where_it_happened(falls_back, monkeypatch,
                                                                                             caplog):
    """The kernel runs where route() says; when it fails, that one key (kind, dtype, width class,
    device, fp16) falls back to the emulation with one warning naming it, its gradients unchanged
    (one backward), while the float32 Triton path and other widths keep their kernels."""
    assert backends.route("linf", 64, torch.float32, DEVICE, "fp16").backend == \
        ("triton" if DEVICE == "cuda" else "emulation")
    on_the_interpreter(monkeypatch)
    norm = build_norm("linf", 64, accumulate="fp16").to(DEVICE)
    x = rows_of(64, seed=8).requires_grad_()
    calls = []
    original = narrow._triton_forward
    monkeypatch.setattr(narrow, "_triton_forward", lambda *a, **o: calls.append(1) or original(*a, **o))
    narrow.implementation.cache_clear()
    y = norm(x)
    before = torch.autograd.grad(y.sum(), (x, norm.weight))
    assert calls == [1] and torch.equal(y, emulated("linf", x, norm.weight, norm.bias, "fp16", 0))

    def broken(*args, **options):
        calls.append(2)
        raise RuntimeError("no kernel today")
    monkeypatch.setattr(narrow, "_triton_forward", broken)
    narrow.implementation.cache_clear()
    norm.accumulate = "fp16"  # plans made again: the broken kernel is tried
    y = norm(x)
    after = torch.autograd.grad(y.sum(), (x, norm.weight))
    assert torch.equal(norm(x), y) and calls == [1, 2], "the failed kernel is tried once, then the emulation runs"
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert caplog.text.count("norm backend 'triton' failed for linf norms of float32 rows of up to 64 features "
                             f"on {DEVICE}, accumulating in fp16 (RuntimeError: no kernel today)") == 1
    assert backends.route("linf", 64, torch.float32, DEVICE, "fp16").backend == "emulation"
    assert backends.route("linf", 64, torch.float32, DEVICE).backend == "triton"
    assert backends.route("linf", 200, torch.float32, DEVICE, "fp16").backend == "triton"
    assert backends.route("l1", 64, torch.float32, DEVICE, "fp16").backend == "triton"
    narrow.implementation.cache_clear()
