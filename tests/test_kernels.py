"""The fast l1 / linf / topk paths against the eager reference: values, gradients, dtypes, odd
and non-contiguous shapes, dynamic row counts, saved memory, backend choice and fallback."""

import logging
import math
import platform

import pytest
import torch

from fairseq_normmatters import kernels
from fairseq_normmatters.kernels import backends, native, rows
from fairseq_normmatters.kinds import build_norm
from fairseq_normmatters.norms import deviation_norm, rms_norm

from row_inputs import inputs, one_ulp_up

KINDS = ("l1", "linf", "topk")  # the deviation norms; rms is the fourth kind of the same Function
FAST = ["native", "compiled"] + (["triton"] if torch.cuda.is_available() and kernels.triton_available() else [])
DEVICE = {"native": "cpu", "compiled": "cuda" if torch.cuda.is_available() else "cpu", "triton": "cuda"}
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float64: 1e-10}
DTYPES = tuple(TOLERANCE)


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


def cases(kinds, dtypes):
    """(backend, kind, dtype) for every fast path, except that the compiled backend on CPU (auto's
    choice there only where native cannot run; each case costs a compilation) gets float32 for
    every kind and the other dtypes for l1 only."""
    return [(backend, kind, dtype) for backend in FAST for kind in kinds for dtype in dtypes
            if backend != "compiled" or DEVICE[backend] == "cuda" or dtype == torch.float32
            or kind == "l1"]


@pytest.mark.parametrize("backend, kind, dtype", cases(KINDS + ("rms",), DTYPES))
def test_fast_path_matches_eager_reference(backend, kind, dtype):
    assert_matches_reference(backend, kind, *inputs(37, 24, dtype, DEVICE[backend]))


@pytest.mark.parametrize("backend, kind, dtype", cases(KINDS + ("rms",), (torch.float32, torch.bfloat16)))
def test_odd_sizes_non_contiguous_and_no_affine(backend, kind, dtype):
    for rows_, n, affine in ((1, 7, True), (13, 33, False)):
        x, weight, bias = inputs(rows_, n, dtype, DEVICE[backend], contiguous=False, affine=affine)
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
    derivative = rows.scale_derivative(d, "topk", 4)
    torch.testing.assert_close((derivative * torch.sign(d)).sum(-1), torch.ones(4, dtype=torch.float64, device=d.device))


@pytest.mark.parametrize("kind", ["linf", "topk"])
@pytest.mark.parametrize("implementation", ["analytic", "native"])
def test_the_backward_finds_its_ties_among_its_own_values_not_the_saved_statistic(implementation, kind):
    """The saved max (linf) or k-th largest |d| (topk) one ulp off, as a separately compiled
    forward can leave it: no |d_j| equals it, so a backward that found the ties by equality with
    it divided 0 by 0 (the compiled backend's NaN dx for linf and topk on CUDA). The backward
    takes its ties from its own |d|: the gradients are finite and those of the exact statistics."""
    from fairseq_normmatters.kernels import native
    backward = {"analytic": rows.backward_rows, "native": native.backward_rows}[implementation]
    x, weight, _ = inputs(8, 64, torch.float32, "cpu")
    x, weight = x.detach(), weight.detach()
    grad = torch.randn_like(x)
    _, statistics = rows.forward_rows(x, weight, None, kind, 1.3, 1e-5, 4)
    exact = backward(grad, x, weight, statistics, kind, 1.3, 1e-5, 4, True, False)
    off = backward(grad, x, weight, one_ulp_up(statistics), kind, 1.3, 1e-5, 4, True, False)
    assert torch.isfinite(off[0]).all() and torch.isfinite(off[1]).all()
    torch.testing.assert_close(off[0], exact[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(off[1], exact[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_native_topk_on_wide_rows_and_ties(dtype):
    """Rows wider than the runs that bound the k-th value (n=333; k=5 and 8), some with ten
    equal largest values: against rows.py's analytic formulas, which share tied gradients
    (eager topk picks among ties arbitrarily)."""
    for k in (5, 8):
        x, weight, bias = inputs(29, 333, dtype, "cpu")
        with torch.no_grad():
            x[:4, 10:20] = 40.0
        grad = torch.randn_like(x)
        results = []
        for impl in (kernels.implementation("native"), kernels.UNCOMPILED):
            plan = kernels.RowNormPlan("topk", x.shape[1], 1.2533, 1e-5, k, impl)
            y = kernels.RowNormFunction.apply(x, weight, bias, plan)
            results.append([y, *torch.autograd.grad(y, (x, weight, bias), grad)])
        for name, a, b in zip(("y", "dx", "dweight", "dbias"), *results):
            error = (a.double() - b.double()).abs().max() / b.double().abs().max()
            assert error < TOLERANCE[dtype], f"k={k} {dtype} {name}: relative error {error:.2e}"


@pytest.mark.parametrize("kind", KINDS + ("rms",))
def test_native_rows_with_nan_come_out_nan_like_eager(kind):
    x, weight, bias = inputs(5, 300, torch.float32, "cpu")
    with torch.no_grad():
        x[1, 7] = float("nan")
        x[3, :] = float("nan")
    native_y, eager_y = (norm(x, kind, weight, bias, backend) for backend in ("native", "eager"))
    assert torch.equal(native_y.isnan(), eager_y.isnan()) and native_y[[1, 3]].isnan().all()
    torch.testing.assert_close(native_y[[0, 2, 4]], eager_y[[0, 2, 4]])


@pytest.mark.parametrize("kind", KINDS + ("rms",))
@pytest.mark.parametrize("implementation", ["native", "analytic"])
def test_analytic_backward_gradcheck_float64(implementation, kind):
    """The hand-derived backward (native_rows.cpp, and rows.py run plainly: the math every other
    backend compiles) against finite differences."""
    impl = kernels.implementation("native") if implementation == "native" else kernels.UNCOMPILED
    x, weight, bias = inputs(6, 11, torch.float64, "cpu")
    constant = 0.0 if kind == "rms" else 1.2533
    plan = kernels.RowNormPlan(kind, x.shape[1], constant, 1e-5, 3, impl)
    assert torch.autograd.gradcheck(lambda *t: kernels.RowNormFunction.apply(*t, plan), (x, weight, bias))


def test_rows_py_l2_is_torchs_layer_norm_and_its_backward_passes_gradcheck():
    """rows.py's l2 (the backward of the narrow-accumulation kernel, at float32): y equals
    LayerNorm's in float64, and the analytic backward agrees with finite differences."""
    x, weight, bias = inputs(6, 11, torch.float64, "cpu")
    plan = kernels.RowNormPlan("l2", x.shape[1], 1.0, 1e-5, 0, kernels.UNCOMPILED)
    expected = torch.nn.functional.layer_norm(x, (11,), weight, bias, 1e-5)
    assert torch.allclose(kernels.RowNormFunction.apply(x, weight, bias, plan), expected, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: kernels.RowNormFunction.apply(*t, plan), (x, weight, bias))


@pytest.mark.parametrize("kind", KINDS + ("rms",))
@pytest.mark.parametrize("backend", ["native", "compiled"])
def test_backward_twice_through_a_retained_graph(backend, kind):
    x, weight, bias = inputs(37, 24, torch.float32, "cpu")  # the graphs compiled above
    y = norm(x, kind, weight, bias, backend)
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
@pytest.mark.parametrize("backend", ["native", "compiled"])
def test_saves_no_more_than_layer_norm(backend, kind):
    x = torch.randn(512, 24, requires_grad=True)
    layer_norm = torch.nn.LayerNorm(24)
    ours = saved_bytes(lambda t: norm(t, kind, layer_norm.weight, layer_norm.bias, backend, 8), x)
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
    assert kernels.backend_for(x) == "native"
    assert kernels.backend_for(x.half()) == "compiled"  # native takes float32/64 and bfloat16
    kernels.set_backend("eager")
    try:
        assert kernels.backend_for(x) == "eager"
    finally:
        kernels.set_backend(None)
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "fastest")
    with pytest.raises(ValueError, match="norm backend 'fastest' is unknown; allowed: auto, eager, "
                                         "native, compiled, triton"):
        kernels.backend_for(x)


def test_eager_backend_runs_the_reference(monkeypatch):
    def refuse(*args):
        raise AssertionError("the fast path ran")
    monkeypatch.setattr(kernels, "fused_norm", refuse)
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "eager")
    x = torch.randn(3, 8, dtype=torch.float64)
    d = x - x.mean(-1, keepdim=True)
    by_hand = d / (math.sqrt(math.pi / 2) * d.abs().mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(deviation_norm(x, "l1", 8), by_hand, rtol=1e-12, atol=1e-12)


def test_broken_backend_falls_back_with_one_warning(falls_back, monkeypatch, caplog):
    def fail(*args):
        raise RuntimeError("no C++ compiler")
    broken = kernels.Implementation("compiled", fail, fail)
    monkeypatch.setitem(backends._implementations, "compiled", broken)
    x, weight, bias = inputs(9, 16, torch.float32, "cpu")
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        for _ in range(3):
            assert_matches_reference("compiled", "l1", x, weight, bias)
    warnings = [r.getMessage() for r in caplog.records if r.name == kernels.__name__]
    assert warnings == ["norm backend 'compiled' failed for l1 norms of float32 rows of up to 16 features on "
                        "cpu, accumulating in float32 (RuntimeError: no C++ compiler); those take the next path "
                        "from now on"]
    assert kernels.backend_for(x, "compiled") == "eager"
    assert kernels.backend_for(x, "compiled", "linf") == "compiled", "another kind was not what failed"
    assert kernels.backend_for(torch.randn(2, 40), "compiled") == "compiled", "nor another width class"


@pytest.mark.parametrize("failing_step", ["forward", "backward"])
def test_under_strict_backends_a_failing_backend_raises_in_the_caller(monkeypatch, failing_step):
    """$NORMMATTERS_STRICT_BACKENDS=1 (the tests run so): the failure surfaces where the norm
    ran, named and chained to the kernel's own error, and nothing is kept as failed."""
    def fail(*args):
        raise RuntimeError("kernel crashed")
    steps = {"forward": native.forward_rows, "backward": native.backward_rows, failing_step: fail}
    monkeypatch.setitem(backends._implementations, "native",
                        kernels.Implementation("native", steps["forward"], steps["backward"]))
    monkeypatch.setenv(kernels.STRICT_VARIABLE, "1")
    x, weight, bias = inputs(9, 16, torch.float32, "cpu")
    with pytest.raises(kernels.BackendFailed, match=r"norm backend 'native' failed for l1 norms of float32 rows of "
                       r"up to 16 features on cpu, accumulating in float32 \(RuntimeError: kernel crashed\); "
                       r"\$NORMMATTERS_STRICT_BACKENDS=1 forbids falling back") as raised:
        norm(x.requires_grad_(), "l1", weight, bias, "native").sum().backward()
    assert str(raised.value.__cause__) == "kernel crashed"
    assert not backends.failures
    monkeypatch.setenv(kernels.STRICT_VARIABLE, "yes")
    monkeypatch.setitem(backends._implementations, "native", kernels.Implementation("native", fail, fail))
    with pytest.raises(ValueError, match=r"\$NORMMATTERS_STRICT_BACKENDS='yes': allowed 0 .* or 1"):
        norm(x, "l1", weight, bias, "native")


@pytest.mark.parametrize("kind", KINDS + ("rms",))
@pytest.mark.parametrize("failing_step", ["forward", "backward"])
def test_backend_failing_in_one_step_gives_the_reference_result(falls_back, monkeypatch, caplog, kind, failing_step):
    """A native forward followed by the plain backward (or the reverse) reads the same
    statistics: one warning and the reference's values and gradients."""
    def fail(*args):
        raise RuntimeError("kernel crashed")
    steps = {"forward": native.forward_rows, "backward": native.backward_rows, failing_step: fail}
    monkeypatch.setitem(backends._implementations, "native",
                        kernels.Implementation("native", steps["forward"], steps["backward"]))
    x, weight, bias = inputs(9, 16, torch.float32, "cpu")
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert_matches_reference("native", kind, x, weight, bias)
    warnings = [r.getMessage() for r in caplog.records if r.name == kernels.__name__]
    assert warnings == [f"norm backend 'native' failed for {kind} norms of float32 rows of up to 16 features on "
                        "cpu, accumulating in float32 (RuntimeError: kernel crashed); those take the next path "
                        "from now on"]


def test_input_that_the_reference_refuses_too_raises_its_error_and_keeps_the_backend():
    """A failure that is the input's (here a gamma of the wrong size, past the checks of
    deviation_norm) is raised as the plain formula's error, unchained; the backend stays."""
    def refuse(*args):
        raise RuntimeError("native forward of the l1 norm refused its input")
    impl = kernels.Implementation("native", refuse, refuse)
    x, wrong_weight = torch.randn(4, 8), torch.randn(5)
    with pytest.raises(RuntimeError, match="size of tensor a .8. must match the size of tensor b .5.") as raised:
        key = kernels.FailureKey("native", "l1", x.dtype, 8, "cpu", "float32")
        kernels.run_or_fall_back(impl, "forward", key, kernels.UNCOMPILED, x, wrong_weight, None, "l1", 1.25, 1e-5, 0)
    assert raised.value.__context__ is None
    assert not backends.failures


def test_native_build_failure_warns_once_and_auto_moves_on(falls_back, monkeypatch, caplog, tmp_path):
    """A machine without a working C++ compiler: one warning with the compiler's command, the
    result of the plain formula, and auto's next choice (compiled) from then on."""
    monkeypatch.setenv("NORMMATTERS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")
    native.library.cache_clear()
    try:
        x, weight, bias = inputs(9, 16, torch.float32, "cpu")
        with caplog.at_level(logging.WARNING, logger=kernels.__name__):
            for _ in range(2):
                assert_matches_reference("native", "l1", x, weight, bias)
        warnings = [r.getMessage() for r in caplog.records if r.name == kernels.__name__]
        assert len(warnings) == 1 and "building native_rows.cpp failed (false -O3" in warnings[0]
        assert kernels.backend_for(x, "auto") == "compiled"
        assert kernels.backend_for(x, "native") == "eager"
        assert not list(tmp_path.glob("*.so"))
    finally:
        native.library.cache_clear()


@pytest.mark.parametrize("problem", ["unwritable cache", "no compiler"])
def test_native_build_problem_is_named_in_the_one_warning(falls_back, monkeypatch, caplog, tmp_path, problem):
    """A cache directory that cannot be written (here: under a file; root ignores read-only
    modes) or no compiler at all: the warning says what to set, and the result is the reference's."""
    if problem == "unwritable cache":
        (tmp_path / "a-file").write_text("")
        monkeypatch.setenv("NORMMATTERS_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
        expected = f"cannot write the cache directory {tmp_path}/a-file/cache ("
        hint = "set NORMMATTERS_CACHE_DIR to a writable directory"
    else:
        monkeypatch.setenv("NORMMATTERS_CACHE_DIR", str(tmp_path))
        monkeypatch.setenv("CXX", "no-such-compiler-here")
        expected, hint = "no C++ compiler: no-such-compiler-here is not installed", "set CXX"
    native.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=kernels.__name__):
            assert_matches_reference("native", "l1", *inputs(9, 16, torch.float32, "cpu"))
        warnings = [r.getMessage() for r in caplog.records if r.name == kernels.__name__]
        assert len(warnings) == 1 and expected in warnings[0] and hint in warnings[0]
    finally:
        native.library.cache_clear()


def test_native_library_is_built_once_per_source_and_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMMATTERS_CACHE_DIR", str(tmp_path))
    native.library.cache_clear()
    try:
        path = native.library_path()
        assert path.parent == tmp_path and path.name.startswith("native_rows-")
        native.library()
        built = path.stat().st_mtime_ns
        native.library.cache_clear()
        native.library()
        assert path.stat().st_mtime_ns == built and [p.name for p in tmp_path.iterdir()] == [path.name]
        monkeypatch.setenv("CXX", "c++")
        assert native.library_path() != path  # another compiler: another library
    finally:
        native.library.cache_clear()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="an x86-64 target without AVX2")
def test_native_without_avx2_matches_the_reference(monkeypatch, tmp_path):
    """The portable code under the AVX2 paths (top-k selection) built for baseline x86-64."""
    monkeypatch.setenv("NORMMATTERS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NORMMATTERS_NATIVE_FLAGS", "-march=x86-64")
    native.library.cache_clear()
    try:
        for dtype in (torch.float32, torch.bfloat16):
            for kind in KINDS:
                assert_matches_reference("native", kind, *inputs(37, 61, dtype, "cpu"))
        assert len(list(tmp_path.glob("*.so"))) == 1
    finally:
        native.library.cache_clear()


def test_out_of_memory_is_raised_not_taken_for_a_broken_backend(monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setitem(backends._implementations, "compiled",
                        kernels.Implementation("compiled", out_of_memory, out_of_memory))
    with pytest.raises(torch.OutOfMemoryError):
        deviation_norm(torch.randn(4, 8), "l1", 8, backend="compiled")


def test_native_runs_cpu_tensors_only(monkeypatch, caplog):
    """Forced on another device it warns once and runs eager there, and still serves the CPU."""
    monkeypatch.setattr(backends, "_wrong_devices_warned", set())
    meta = torch.empty(2, 4, device="meta")  # any device but the CPU
    assert kernels.backend_for(meta, "auto") == "compiled"
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.backend_for(meta, "native") == "eager"
        assert kernels.backend_for(meta, "native") == "eager"
    assert [r.getMessage() for r in caplog.records if r.name == kernels.__name__] == [
        "norm backend 'native' runs on cpu tensors only, not meta; those run eager"]
    assert kernels.backend_for(torch.randn(2, 4), "native") == "native"


def test_triton_forced_on_cpu_falls_back_once(monkeypatch, caplog):
    monkeypatch.setattr(backends, "_wrong_devices_warned", set())
    monkeypatch.setenv(kernels.BACKEND_VARIABLE, "triton")
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        assert kernels.backend_for(torch.randn(2, 4)) == "eager"
        assert kernels.backend_for(torch.randn(2, 4)) == "eager"
    assert len([r for r in caplog.records if r.name == kernels.__name__]) == 1


def test_double_backward_through_a_fast_path_is_refused_with_a_message():
    x, weight, bias = inputs(4, 16, torch.float32, "cpu")
    y = deviation_norm(x, "l1", 16, weight, bias, backend="native")
    with pytest.raises(RuntimeError, match="fast backward is not differentiable .no double backward.; run them "
                                           "with the eager backend"):
        torch.autograd.grad(y.square().sum(), x, create_graph=True)


def test_without_gradients_the_forward_runs_alone_and_matches():
    x, weight, bias = inputs(4, 16, torch.float32, "cpu")
    expected = deviation_norm(x, "l1", 16, weight, bias, backend="native")
    with torch.no_grad():
        y = deviation_norm(x, "l1", 16, weight, bias, backend="native")
    assert y.grad_fn is None and torch.equal(y, expected.detach())


@pytest.mark.parametrize("kind", KINDS + ("rms",))
def test_a_multi_dimensional_normalized_shape_on_two_dimensional_input(kind):
    """normalized_shape (4, 8) over x of shape (4, 8): one row of 32 features, not 4 rows of 8."""
    x, weight, bias = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    options = {"k": 3} if kind == "topk" else {}
    fast, eager = (build_norm(kind, (4, 8), **options) for _ in range(2))
    for module in (fast, eager):
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
    kernels.set_backend("eager")
    try:
        expected = eager(x)
    finally:
        kernels.set_backend(None)
    torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, width, dtype, device, k, backend, reason", [
    ("l1", 512, torch.float32, "cpu", None, "native", "auto's first choice on cpu"),
    ("l1", 512, torch.float16, "cpu", None, "compiled", "native takes float32, float64 and bfloat16, not float16: compiled"),
    ("rms", 512, torch.float16, "cuda", None, "triton", "auto's first choice on cuda"),
    ("linf", 512, torch.float64, "cuda", None, "compiled", "the Triton kernels compute in float32, not float64: compiled"),
    ("l1", 40000, torch.float16, "cuda", None, "compiled",
     "the Triton kernels take rows of at most 32768 features, not 40000: compiled"),
    ("topk", 4096, torch.float32, "cuda", 65, "compiled",
     "the Triton top-k unrolls a loop over k: at most k = 64, not 65: compiled"),
    ("topk", 4096, torch.float32, "cuda", 64, "triton", "auto's first choice on cuda"),
])
def test_the_route_names_the_path_and_why(kind, width, dtype, device, k, backend, reason):
    """What runs a norm, and why in words: no reroute is silent (decided without the device)."""
    if device == "cuda" and not kernels.triton_available():
        pytest.skip("Triton is not installed: CUDA's auto would be compiled")
    assert kernels.route(kind, width, dtype, device, k=k) == kernels.Path(backend, reason)


def test_a_forced_backend_and_a_narrow_accumulation_say_their_path():
    assert kernels.route("l1", 64, torch.float32, "cpu", requested="compiled") == \
        kernels.Path("compiled", "forced by NORMMATTERS_NORM_BACKEND")
    assert kernels.route("l1", 64, torch.float32, "cpu", requested="triton") == \
        kernels.Path("eager", "NORMMATTERS_NORM_BACKEND=triton, which runs on cuda tensors only")
    assert kernels.route("l2", 64, torch.float16, "cpu", "fp16") == \
        kernels.Path("emulation", "no Triton kernel on this device")
    assert kernels.route("l2", 64, torch.float16, "cuda", "fp16", requested="compiled") == \
        kernels.Path("emulation", "NORMMATTERS_NORM_BACKEND=compiled: the kernel is the triton backend's")


def test_a_backend_that_cannot_run_here_at_all_is_skipped_for_every_input(falls_back, monkeypatch, caplog):
    """BackendUnavailable (no compiler, no Triton) is the backend's, not one input's: one warning,
    and auto skips it for every kind and width."""
    def unavailable(*args):
        raise kernels.BackendUnavailable("no C++ compiler: g++ is not installed")
    monkeypatch.setitem(backends._implementations, "native", kernels.Implementation("native", unavailable, unavailable))
    with caplog.at_level(logging.WARNING, logger=kernels.__name__):
        for n in (16, 40):
            assert_matches_reference("native", "l1", *inputs(9, n, torch.float32, "cpu"))
    assert [r.getMessage() for r in caplog.records if r.name == kernels.__name__] == [
        "norm backend 'native' cannot run here (BackendUnavailable: no C++ compiler: g++ is not installed); norms "
        "take the next path"]
    assert kernels.route("linf", 1000, torch.bfloat16, "cpu") == kernels.Path(
        "compiled", "native failed here before (BackendUnavailable: no C++ compiler: g++ is not installed): compiled")


def test_a_module_says_its_path_once_in_the_log(caplog):
    norm_a, norm_b = build_norm("linf", 24), build_norm("linf", 24)
    backends.announce_again()
    with caplog.at_level(logging.INFO, logger=kernels.__name__):
        for module in (norm_a, norm_b, norm_a):
            module(torch.randn(3, 24))
        norm_a(torch.randn(3, 24, dtype=torch.float64))
    said = [r.getMessage() for r in caplog.records if r.name == kernels.__name__]
    assert said == ["norm path: linf over 24 features, float32 on cpu, accumulating in float32: native (auto's "
                    "first choice on cpu)",
                    "norm path: linf over 24 features, float64 on cpu, accumulating in float32: native (auto's "
                    "first choice on cpu)"]


def test_the_path_command_prints_the_path_and_refuses_a_bad_shape(capsys):
    """python -m fairseq_normmatters.kernels.path (its main, in this process)."""
    from fairseq_normmatters.kernels import path
    assert path.main(["--kind", "topk", "--k", "100", "--shape", "64x4096", "--device", "cuda"]) == 0
    expected = ("topk over 4096 features (64 rows), float32 on cuda, accumulating in float32: compiled (the Triton "
                "top-k unrolls a loop over k: at most k = 64, not 100: compiled)")
    if not kernels.triton_available():
        expected = "topk over 4096 features (64 rows), float32 on cuda, accumulating in float32: compiled (auto's " \
                   "first choice on cuda)"
    assert capsys.readouterr().out.strip() == expected
    with pytest.raises(SystemExit) as refused:
        path.main(["--kind", "l1", "--shape", "64by512"])
    assert refused.value.code == 2 and "--shape '64by512': give positive sizes like 4096x1024" in capsys.readouterr().err
