"""The fast l1 / linf / topk paths against the eager reference: values, gradients, dtypes, odd
and non-contiguous shapes, dynamic row counts, saved memory, backend choice and fallback."""

import logging

import pytest
import torch

from fairseq_normmatters import kernels
from fairseq_normmatters.kernels import rows
from fairseq_normmatters.norms import deviation_norm, rms_norm

KINDS = ("l1", "linf", "topk")  # the analytic Function; rms is compiled from its formula
FAST = ["compiled"] + (["triton"] if torch.cuda.is_available() and kernels.triton_available() else [])
DEVICE = {"compiled": "cuda" if torch.cuda.is_available() else "cpu", "triton": "cuda"}
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float64: 1e-10}


@pytest.fixture(autouse=True)
def _no_backend_broken():
    kernels._broken.clear()
    yield
    assert not kernels._broken, f"a fast path fell back to eager: {kernels._broken}"


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


def norm(x, kind, weight, bias, backend, k=5):
    if kind == "rms":
        return rms_norm(x, x.shape[-1], weight, bias, 1e-5, backend=backend)
    return deviation_norm(x, kind, x.shape[-1], weight, bias, 1e-5, "paper", k, backend=backend)


def values_and_gradients(backend, kind, x, weight, bias, grad):
    y = norm(x, kind, weight, bias, backend)
    wanted = [t for t in (x, weight, bias) if t is not None]
    return [y] + list(torch.autograd.grad(y, wanted, grad))


def assert_matches_reference(backend, kind, x, weight, bias):
    grad = torch.randn_like(x)
    fast = values_and_gradients(backend, kind, x, weight, bias, grad)
    eager = values_and_gradients("eager", kind, x, weight, bias, grad)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), fast, eager):
        assert a.dtype == b.dtype and a.shape == b.shape
        error = (a.double() - b.double()).abs().max() / b.double().abs().max()
        assert error < TOLERANCE[x.dtype], f"{backend} {kind} {x.dtype} {name}: relative error {error:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("kind", KINDS + ("rms",))
@pytest.mark.parametrize("backend", FAST)
def test_fast_path_matches_eager_reference(backend, kind, dtype):
    assert_matches_reference(backend, kind, *inputs(37, 24, dtype, DEVICE[backend]))


@pytest.mark.parametrize("kind", KINDS + ("rms",))
@pytest.mark.parametrize("backend", FAST)
def test_odd_sizes_non_contiguous_and_no_affine(backend, kind):
    for rows_, n, affine in ((1, 7, True), (13, 33, False)):
        x, weight, bias = inputs(rows_, n, torch.float32, DEVICE[backend], contiguous=False, affine=affine)
        assert rows_ == 1 or not x.is_contiguous()
        assert_matches_reference(backend, kind, x, weight, bias)


@pytest.mark.parametrize("backend", FAST)
def test_empty_batch(backend):
    x, weight, bias = inputs(3, 16, torch.float32, DEVICE[backend])
    empty = x[:0].detach().requires_grad_()
    y = deviation_norm(empty, "l1", 16, weight, bias, backend=backend)
    y.sum().backward()
    assert y.shape == empty.grad.shape == (0, 16) and not weight.grad.any()


@pytest.mark.parametrize("backend", FAST)
def test_ties_share_the_gradient_like_torch(backend):
    """linf ties split the gradient evenly (torch's amax does the same); topk ties at the k-th
    value share what is left of k, so the scale's gradient stays a subgradient summing to one."""
    x, weight, bias = inputs(4, 16, torch.float32, DEVICE[backend])
    with torch.no_grad():
        x[:, :3] = 5.0
        x[:, 3:6] = -5.0
    assert_matches_reference(backend, "linf", x, weight, bias)
    d = x.detach().double() - x.detach().double().mean(-1, keepdim=True)
    m, t = rows.row_statistics(d, "topk", 4)
    derivative = rows.scale_derivative(d, m, t, "topk", 4)
    torch.testing.assert_close((derivative * torch.sign(d)).sum(-1), torch.ones(4, dtype=torch.float64, device=d.device))


@pytest.mark.parametrize("kind", KINDS)
def test_analytic_backward_gradcheck_float64(kind):
    x, weight, bias = inputs(6, 11, torch.float64, "cpu")
    assert torch.autograd.gradcheck(
        lambda *t: deviation_norm(t[0], kind, 11, t[1], t[2], 1e-5, "paper", 3, backend="compiled"),
        (x, weight, bias))


@pytest.mark.parametrize("kind", KINDS + ("rms",))
def test_backward_twice_through_a_retained_graph(kind):
    x, weight, bias = inputs(6, 16, torch.float32, "cpu")
    y = norm(x, kind, weight, bias, "compiled")
    first = torch.autograd.grad(y.sum(), x, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], first)


def test_varying_row_counts_compile_once():
    """Rows vary freely; torch specializes one block of rows (<= 32) apart, so both are warmed up."""
    counters = torch._dynamo.utils.counters
    for rows_ in (40, 3):
        x, weight, bias = inputs(rows_, 64, torch.float32, "cpu")
        deviation_norm(x, "l1", 64, weight, bias, backend="compiled").sum().backward()
    graphs = counters["stats"]["unique_graphs"]
    for rows_ in (17, 65, 300, 1031, 4097):
        x, weight, bias = inputs(rows_, 64, torch.float32, "cpu")
        deviation_norm(x, "l1", 64, weight, bias, backend="compiled").sum().backward()
    assert counters["stats"]["unique_graphs"] == graphs


def saved_bytes(function, x):
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        function(x)
    return sum(total)


@pytest.mark.parametrize("kind", KINDS + ("rms",))
def test_saves_no_more_than_layer_norm(kind):
    x = torch.randn(512, 256, requires_grad=True)
    layer_norm = torch.nn.LayerNorm(256)
    ours = saved_bytes(lambda t: norm(t, kind, layer_norm.weight, layer_norm.bias, "compiled", 8), x)
    eager = saved_bytes(lambda t: norm(t, kind, layer_norm.weight, layer_norm.bias, "eager", 8), x)
    reference = saved_bytes(layer_norm, x)
    per_row = 4 * 512  # one float per row: topk keeps its threshold besides mean and scale
    assert ours <= reference + per_row, (ours, reference)
    assert eager > 2 * reference  # what the fast path saves: the eager graph keeps d, |d|, ...


def test_backend_choice_by_environment(monkeypatch):
    x = torch.randn(3, 8)
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "eager")
    assert kernels.backend_for(x) == "eager"
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "auto")
    assert kernels.backend_for(x) == "compiled"
    kernels.set_backend("eager")
    try:
        assert kernels.backend_for(x) == "eager"
    finally:
        kernels.set_backend(None)
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "fastest")
    with pytest.raises(ValueError, match="norm backend 'fastest' is unknown; allowed: auto, eager, "
                                         "compiled, triton"):
        kernels.backend_for(x)


def test_eager_backend_runs_the_reference(monkeypatch):
    def refuse(*args):
        raise AssertionError("the fast path ran")
    monkeypatch.setattr(kernels, "fused_norm", refuse)
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "eager")
    deviation_norm(torch.randn(3, 8), "l1", 8)


def test_broken_backend_falls_back_with_one_warning(monkeypatch, caplog):
    def fail(*args):
        raise RuntimeError("no C++ compiler")
    broken = kernels.Implementation("compiled", fail, fail)
    monkeypatch.setitem(kernels._implementations, "compiled", broken)
    x, weight, bias = inputs(9, 16, torch.float32, "cpu")
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        for _ in range(3):
            assert_matches_reference("compiled", "l1", x, weight, bias)
    warnings = [r.getMessage() for r in caplog.records if r.name == kernels.__name__]
    assert warnings == ["norm backend 'compiled' unavailable (RuntimeError: no C++ compiler); using eager"]
    assert kernels.backend_for(x) == "eager"
    kernels._broken.clear()


def test_out_of_memory_is_raised_not_taken_for_a_broken_backend(monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setitem(kernels._implementations, "compiled",
                        kernels.Implementation("compiled", out_of_memory, out_of_memory))
    with pytest.raises(torch.OutOfMemoryError):
        deviation_norm(torch.randn(4, 8), "l1", 8, backend="compiled")


def test_triton_forced_on_cpu_falls_back_once(monkeypatch, caplog):
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "triton")
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.backend_for(torch.randn(2, 4)) == "eager"
        assert kernels.backend_for(torch.randn(2, 4)) == "eager"
    assert len([r for r in caplog.records if r.name == kernels.__name__]) == 1
    kernels._broken.clear()
