"""The layer-norm registry: calibration, gradients, reference formulas, precision, bad input.

Every test that takes `kind` runs for each registered kind, so a new kind is covered at once.
The norms run eager here (the formulas); tests/test_kernels.py holds the fast paths to them,
and test_module_matches_reference_formula runs the default path too.
"""

import copy
import functools
import math
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fairseq_normmatters import NORM_KINDS, DeviationNorm, build_norm, kernels
from calibrate_constants import measured_scale_over_sigma
from fairseq_normmatters.constants import LINF_LOWER_BOUND, LINF_UPPER_BOUND, resolve_constant
from fairseq_normmatters.norms import SCALE_FUNCTIONS, deviation_norm, rms_norm

OPTIONS = {"topk": {"k": 3}}


@pytest.fixture(autouse=True)
def eager_norms():
    kernels.set_backend("eager")
    yield
    kernels.set_backend(None)


def make(kind, n, **kw):
    return build_norm(kind, n, **{**OPTIONS.get(kind, {}), **kw})


CALIBRATED = [("l1", "paper", None), ("l1", "gaussian", None), ("linf", "gaussian", None),
              ("topk", "gaussian", 1), ("topk", "gaussian", 8), ("topk", "gaussian", 64)]


@pytest.mark.parametrize("n", [64, 512, 1024])
@pytest.mark.parametrize("kind,constant,k", CALIBRATED)
def test_calibrated_scale_estimates_sigma_within_one_percent(kind, constant, k, n):
    ratio = measured_scale_over_sigma(kind, n, constant, k)
    assert abs(ratio - 1) < 0.01, f"{kind}/{constant} k={k} n={n}: E[C*scale]/sigma = {ratio:.4f}"


@pytest.mark.parametrize("n", [64, 512, 1024])
def test_linf_paper_constant_within_supplement_bounds(n):
    measured = measured_scale_over_sigma("linf", n, "paper")
    assert LINF_LOWER_BOUND <= measured <= LINF_UPPER_BOUND, (
        f"n={n}: C_Linf*E[max|d|] = {measured:.4f} sigma, bounds "
        f"[{LINF_LOWER_BOUND:.4f}, {LINF_UPPER_BOUND:.4f}]")
    # within the bounds, the supplement's C_Linf over-estimates sigma by about 40% at these n
    # (constants.linf_constant); constant="gaussian" is the calibrated one
    assert 1.30 < measured < 1.50, f"n={n}: C_Linf*E[max|d|] = {measured:.4f} sigma"


def test_l1_without_constant_underestimates_sigma_by_sqrt_two_over_pi():
    ratio = measured_scale_over_sigma("l1", 512, 1.0)
    assert abs(ratio - math.sqrt(2 / math.pi)) < 0.01


def reference(kind, x, weight, bias, eps, k=3, constant="paper"):
    """Straightforward float64 formulas, written independently of the package's code path."""
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    d = x - mu
    n = x.shape[-1]
    if kind == "l2":
        y = d / torch.sqrt((d * d).mean(-1, keepdim=True) + eps)
    elif kind == "rms":
        y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    elif kind == "none":
        return x
    else:
        a = d.abs()
        stat = {"l1": a.mean(-1, keepdim=True),
                "linf": a.max(-1, keepdim=True).values,
                "topk": a.sort(-1, descending=True).values[..., :k].mean(-1, keepdim=True)}[kind]
        y = d / (resolve_constant(kind, n, constant, k) * stat + eps)
    return y * weight.double() + bias.double()


def with_random_affine(module, generator_seed=1):
    g = torch.Generator().manual_seed(generator_seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


@pytest.mark.parametrize("backend", ["eager", "auto"])
@pytest.mark.parametrize("kind", NORM_KINDS)
def test_module_matches_reference_formula(kind, backend):
    kernels.set_backend(backend)
    n = 48
    module = with_random_affine(make(kind, n))
    x = torch.randn(5, 7, n) * 2 + 1
    weight = getattr(module, "weight", torch.ones(n))
    bias = getattr(module, "bias", torch.zeros(n))
    expected = reference(kind, x, weight, bias, 1e-5)
    torch.testing.assert_close(module(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(SCALE_FUNCTIONS))
@pytest.mark.parametrize("constant", ["paper", "gaussian", 1.0])
def test_module_equals_functional(kind, constant):
    module = with_random_affine(make(kind, 32, constant=constant))
    x = torch.randn(6, 32)
    expected = deviation_norm(x, kind, 32, module.weight, module.bias, 1e-5, constant, module.k)
    torch.testing.assert_close(module(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_gradcheck_float64(kind):
    module = with_random_affine(make(kind, 9)).double()
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    params = tuple(module.parameters())
    assert torch.autograd.gradcheck(lambda inp, *p: module(inp), (x, *params))


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_constant_row_is_finite_and_gives_beta(kind):
    module = with_random_affine(make(kind, 16))
    y = module(torch.full((3, 16), 7.0))
    assert torch.isfinite(y).all()
    if kind not in ("none", "rms"):
        torch.testing.assert_close(y, module.bias.expand(3, 16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", NORM_KINDS)
def test_low_precision_rows_overflowing_fp16_squares_stay_finite(kind, dtype):
    x = torch.randn(8, 512) * 1e3  # sum of squares ~5e8, fp16 max is 65504
    module = make(kind, 512)
    y = module(x.to(dtype))
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    if kind != "none":
        torch.testing.assert_close(y.float(), module(x), rtol=0.02, atol=0.02)


def test_multi_dimensional_normalized_shape():
    module = build_norm("l1", (4, 8))
    x = torch.randn(3, 4, 8)
    flat = build_norm("l1", 32)(x.reshape(3, 32)).reshape(3, 4, 8)
    torch.testing.assert_close(module(x), flat)


@pytest.mark.parametrize("backend", ["eager", "auto"])
@pytest.mark.parametrize("kind", ["l1", "linf", "topk", "rms"])
def test_input_of_another_shape_or_an_integer_dtype_is_refused(kind, backend):
    # (4, 256) would flatten into two rows of 512 that straddle the input's own rows
    kernels.set_backend(backend)
    for normalized_shape, x in [(512, torch.randn(4, 256)), ((4, 8), torch.randn(3, 8, 4)),
                                ((4, 8), torch.randn(8))]:
        module = make(kind, normalized_shape)
        with pytest.raises(ValueError, match=r"normalized_shape \[.*\] needs input of shape "
                                             r"\[\*, .*\]; got \[.*\]"):
            module(x)
    with pytest.raises(ValueError, match="a norm needs floating-point input; got torch.int64"):
        make(kind, 8)(torch.arange(16).reshape(2, 8))  # was computed in float, cast back to int


@pytest.mark.parametrize("backend", ["eager", "auto"])
@pytest.mark.parametrize("kind", ["l1", "topk", "rms"])
@pytest.mark.parametrize("wrong", ["weight", "bias"])
def test_affine_parameters_of_another_shape_or_device_are_refused(kind, backend, wrong):
    # a 16-value gamma for 512 features: the native kernel would read past its end
    kernels.set_backend(backend)
    parameters = {"weight": torch.ones(512), "bias": torch.zeros(512), wrong: torch.ones(16)}
    norm = rms_norm if kind == "rms" else functools.partial(deviation_norm, kind=kind, k=3)
    with pytest.raises(ValueError, match=rf"normalized_shape \[512\] needs {wrong} of that "
                                         r"shape; got \[16\]"):
        norm(torch.randn(4, 512), normalized_shape=512, **parameters)
    parameters[wrong] = torch.ones(512, device="meta")  # the native kernel took it for no gamma
    with pytest.raises(ValueError, match=rf"the norm's {wrong} is on meta but its input on cpu; "
                                         "move both to one device"):
        norm(torch.randn(4, 512), normalized_shape=512, **parameters)


def test_l2_is_torch_layer_norm():
    module = with_random_affine(build_norm("l2", 24))
    x = torch.randn(5, 24)
    assert isinstance(module, torch.nn.LayerNorm)
    torch.testing.assert_close(module(x), F.layer_norm(x, (24,), module.weight, module.bias, 1e-5),
                               rtol=0, atol=0)


def test_without_affine_has_no_parameters():
    for kind in NORM_KINDS:
        assert not list(make(kind, 8, elementwise_affine=False).parameters())


@pytest.mark.parametrize("call,message", [
    (lambda: build_norm("bogus", 8), "'bogus' is unknown; known kinds: l2, l1, linf, topk, rms, none"),
    (lambda: build_norm("linf", 1), "n >= 2 normalized features, got n=1"),
    (lambda: build_norm("topk", 8, k=9), "1 <= k <= n=8, got k=9"),
    (lambda: build_norm("topk", 8, k=0), "1 <= k <= n=8, got k=0"),
    (lambda: build_norm("topk", 8), "needs the option k"),
    (lambda: build_norm("l1", 8, eps=0.0), "eps must be > 0, got eps=0.0"),
    (lambda: build_norm("l2", 8, eps=-1e-5), "eps must be > 0, got eps=-1e-05"),
    (lambda: build_norm("l1", 8, constant="exact"), "constant 'exact' is unknown; allowed: paper, gaussian"),
    (lambda: build_norm("l1", 8, constant=-1.0), "positive finite float, got -1.0"),
    (lambda: build_norm("l2", 8, k=3), "norm kind 'l2' does not take options ['k']; it takes accumulate"),
    (lambda: build_norm("none", 8, k=3), "norm kind 'none' does not take options ['k']; it takes no options"),
    (lambda: build_norm("l1", 8, k=3, beta=1), "norm kind 'l1' does not take options ['beta', 'k']; it takes constant"),
    (lambda: build_norm("l1", 0), "normalized_shape must be positive integers, got 0"),
])
def test_bad_input_raises_value_error_naming_the_value(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


def fused_layer_norm_class(module_name):
    """A stand-in for apex's FusedLayerNorm (same class name, attributes and module path)."""
    def init(self, n):
        nn.Module.__init__(self)
        self.normalized_shape, self.eps = (n,), 1e-5
        self.weight, self.bias = nn.Parameter(torch.randn(n)), nn.Parameter(torch.randn(n))
    return type("FusedLayerNorm", (nn.Module,), {"__init__": init, "__module__": module_name})


def test_apex_fused_layer_norm_is_swapped_keeping_its_weights_and_a_namesake_is_not():
    from fairseq_normmatters import replace_layer_norms
    apex = fused_layer_norm_class("apex.normalization.fused_layer_norm")(8)
    model = nn.Sequential(apex, fused_layer_norm_class("my_project.layers")(8))
    assert replace_layer_norms(model, "l1") == 1
    assert isinstance(model[0], DeviationNorm) and model[1].__class__.__module__ == "my_project.layers"
    torch.testing.assert_close(model[0].weight, apex.weight)
    torch.testing.assert_close(model[0].bias, apex.bias)


@pytest.mark.parametrize("kind", ["l1", "linf", "topk", "rms"])
def test_a_compiled_model_with_these_norms_gives_the_eager_result_without_graph_breaks(kind):
    """torch.compile(fullgraph=True) fails on any graph break; inside it the norms run their
    plain formula (the default backend's kernels are opaque to the compiler)."""
    kernels.set_backend(None)  # the default backend outside the compiled model
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), build_norm(kind, 32, **OPTIONS.get(kind, {})), nn.ReLU(),
                          nn.Linear(32, 8))
    x = torch.randn(6, 16)
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    grads = torch.autograd.grad(y.square().sum(), list(model.parameters()))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_a_norm_module_keeps_its_decisions_per_device_and_dtype_and_forgets_them_when_changed():
    """The plan made at the first call serves later calls; a cast, a new gain or another
    backend makes a new one; a pickled or copied module carries none."""
    kernels.set_backend(None)
    norm = build_norm("l1", 16)
    x = torch.randn(4, 16)
    y = norm(x)
    [plan] = norm._plans.values()
    torch.testing.assert_close(norm(x), y)
    assert list(norm._plans.values()) == [plan]
    norm.to(torch.float64)
    assert norm._plans == {}
    norm(x.double())
    norm.weight = nn.Parameter(torch.full((16,), 2.0, dtype=torch.float64))
    assert norm._plans == {}
    torch.testing.assert_close(norm(x.double()), 2 * y.double(), rtol=1e-5, atol=1e-5)
    kernels.set_backend("eager")
    try:
        norm(x.double())
        assert None in norm._plans.values()  # the eager reference, decided anew
    finally:
        kernels.set_backend(None)
    copied, unpickled = copy.deepcopy(norm), pickle.loads(pickle.dumps(norm))
    assert copied._plans == {} and unpickled._plans == {} and norm._plans != {}
    for twin in (copied, unpickled):
        torch.testing.assert_close(twin(x.double()), norm(x.double()), rtol=0, atol=0)
        assert twin._plans != {}  # planned anew at its first call
    with pytest.raises(ValueError, match=r"needs input of shape \[\*, 16\]; got \[4, 8\]"):
        norm(torch.randn(4, 8, dtype=torch.float64))


ROW_KINDS = ("l1", "linf", "topk", "rms")  # the kinds that run through kernels.RowNormPlan
CHANGES = {"l1": {"eps": 1.0, "constant": "gaussian"}, "linf": {"eps": 1.0, "constant": 2.5},
           "topk": {"eps": 1.0, "k": 7, "constant": "gaussian"}, "rms": {"eps": 1.0}}


@pytest.mark.parametrize("kind", ROW_KINDS)
def test_an_option_set_after_a_call_reaches_the_fast_path(kind):
    """eps, k or the constant set on a module that already ran (and made its plan) changes what
    the fast path computes exactly as it changes the reference."""
    kernels.set_backend(None)
    norm = with_random_affine(make(kind, 16))
    x = torch.randn(4, 16) * 3
    for name, value in CHANGES[kind].items():
        before = norm(x)
        setattr(norm, name, value)
        after = norm(x)
        assert not torch.allclose(after, before), f"setting {name}={value!r} changed nothing"
        torch.testing.assert_close(after, norm.reference(x), rtol=1e-5, atol=1e-5)
    assert norm.eps == 1.0


@pytest.mark.parametrize("kind, name, value, message", [
    ("l1", "eps", 0.0, r"eps must be > 0, got eps=0.0"),
    ("rms", "eps", -1.0, r"eps must be > 0, got eps=-1.0"),
    ("topk", "k", 17, r"top-k needs an integer k with 1 <= k <= n=16, got k=17"),
    ("linf", "constant", "loose", r"constant 'loose' is unknown; allowed: paper, gaussian or a positive float"),
])
def test_a_refused_option_changes_nothing(kind, name, value, message):
    norm = make(kind, 16)
    x = torch.randn(4, 16)
    before, options = norm(x), dict(vars(norm))
    with pytest.raises(ValueError, match=message):
        setattr(norm, name, value)
    assert {key: options[key] for key in ("eps", "k", "constant", "constant_value") if key in options} == \
        {key: vars(norm)[key] for key in ("eps", "k", "constant", "constant_value") if key in options}
    torch.testing.assert_close(norm(x), before)
