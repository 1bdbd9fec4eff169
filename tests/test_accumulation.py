"""Norms accumulating in fp16 / bf16 (accumulation.py): the emulation against a reference that
rounds after every operation, what breaks where, gradients, and the option on every kind."""

import functools
import math

import pytest
import torch

from fairseq_normmatters import NORM_KINDS, build_batch_norm, build_norm
from fairseq_normmatters.accumulation import norm_in_format, pairwise_sum, rows_in_format
from fairseq_normmatters.kernels import narrow
from fairseq_normmatters.constants import resolve_constant

ACCUMULATING_KINDS = [kind for kind in NORM_KINDS if kind != "none"]
OPTIONS = {"topk": {"k": 8}}
#: dtype -> (bits of the significand with the implicit one, frexp exponent of the smallest
#: normal number, largest finite value), from IEEE 754 binary16 and bfloat16
FORMATS = {torch.float16: (11, -13, 65504.0), torch.bfloat16: (8, -125, (2 - 2 ** -7) * 2.0 ** 127)}


def rounded(value: float, dtype) -> float:
    """value rounded to the nearest number of `dtype` (ties to even), written from the format's
    definition (not by torch's conversion): subnormals have the smallest normal's spacing, and a
    value that rounds past the largest finite number is inf."""
    bits, smallest_exponent, largest = FORMATS[dtype]
    if value == 0 or not math.isfinite(value):
        return value
    exponent = max(math.frexp(value)[1], smallest_exponent)
    spacing = 2.0 ** (exponent - bits)
    result = round(value / spacing) * spacing  # Python's round: ties to even
    return math.copysign(math.inf, value) if abs(result) > largest else result


def tree_sum(values, dtype) -> float:
    """The pairwise sum of `values` (zeros padding to a power of two), each addition rounded."""
    width = 1 << (len(values) - 1).bit_length()
    values = list(values) + [0.0] * (width - len(values))
    if width == 1:
        return values[0]
    half = width // 2
    return rounded(tree_sum(values[:half], dtype) + tree_sum(values[half:], dtype), dtype)


def reference_row(row, kind, eps, constant, k, dtype):
    """One row of the norm with every operation's result rounded to `dtype` (Python floats)."""
    n = len(row)
    v = [rounded(value, dtype) for value in row]
    mean = rounded(tree_sum(v, dtype) / n, dtype)
    d = v if kind == "rms" else [rounded(value - mean, dtype) for value in v]
    if kind in ("l2", "rms"):
        statistic = rounded(tree_sum([rounded(e * e, dtype) for e in d], dtype) / n, dtype)
        inverse = rounded(1 / math.sqrt(rounded(statistic + eps, dtype)), dtype)
        return [rounded(e * inverse, dtype) for e in d]
    a = [abs(e) for e in d]
    statistic = {"l1": lambda: rounded(tree_sum(a, dtype) / n, dtype),
                 "linf": lambda: max(a),
                 "topk": lambda: rounded(tree_sum(sorted(a, reverse=True)[:k], dtype) / k, dtype)}[kind]()
    scale = rounded(rounded(statistic * constant, dtype) + eps, dtype)
    return [rounded(e / scale, dtype) for e in d]


def spread_values(n, seed):
    """n values of random sign and magnitudes from 1e-6 to 1e3 (sums that lose digits)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g).sign() * 10 ** (torch.rand(n, generator=g) * 9 - 6)).tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 3, 64, 1000, 1024])
def test_pairwise_sum_is_bit_for_bit_the_tree_rounded_after_every_addition(dtype, n):
    values = [rounded(value, dtype) for value in spread_values(n, seed=n)]
    expected = tree_sum(values, dtype)
    got = pairwise_sum(torch.tensor(values, dtype=dtype)).item()
    assert got == expected, f"{dtype} n={n}: {got!r} != {expected!r}"


def test_pairwise_sum_in_fp16_overflows_where_the_exact_sum_passes_65504():
    """1024 squares of 9 (81 each, 82944 in all): an fp16 accumulator overflows, while torch's
    own reduction of fp16 accumulates in float32 (its mean is 81)."""
    squares = torch.full((1024,), 81.0, dtype=torch.float16)
    assert pairwise_sum(squares).item() == math.inf
    assert squares.mean().item() == 81.0
    assert pairwise_sum(torch.full((1024,), 63.0, dtype=torch.float16)).item() == 64512.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ACCUMULATING_KINDS)
def test_norm_in_format_matches_the_row_rounded_after_every_operation(kind, dtype):
    """Within two units in the last place: torch computes rsqrt and C * m in float32 before
    rounding (the reference rounds the exact value once), so the scale may be one unit off,
    and the product with it one more; the sums and all else are exact."""
    n, eps, k = 40, 1e-5, OPTIONS.get(kind, {}).get("k")
    constant = resolve_constant(kind, n, "paper", k) if kind not in ("l2", "rms") else 1.0
    rows = torch.tensor([spread_values(n, seed) for seed in range(4)]) * 3 + 2
    got = norm_in_format(rows, kind, n, None, None, eps, constant, k, dtype).double()
    expected = torch.tensor([reference_row(row, kind, eps, constant, k, dtype) for row in rows.tolist()],
                            dtype=torch.float64)
    unit = 2.0 ** (1 - FORMATS[dtype][0])  # the largest relative spacing of the format
    assert torch.allclose(got, expected, rtol=2 * unit, atol=0), (got - expected).abs().max()


def test_l2_accumulating_in_fp16_collapses_rows_of_deviation_20_at_width_1024_that_l1_and_linf_keep():
    """d^2 ~ 400, 1024 of them: the fp16 sum of squares overflows, the scale is inf and the row
    becomes beta (here zero), while float32 accumulation, and l1 and linf in fp16, stay within 1%."""
    x = torch.randn(32, 1024, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20
    for kind in ("l2", "l1", "linf"):
        exact = build_norm(kind, 1024).double()(x)
        for accumulate in ("float32", "fp16"):
            with torch.no_grad():
                y = build_norm(kind, 1024, accumulate=accumulate)(x.float()).double()
            error = ((y - exact).abs().mean(-1) / exact.abs().mean(-1)).max().item()
            if kind == "l2" and accumulate == "fp16":
                assert (y == 0).all(), "the overflowing sum of squares should have collapsed every row"
            else:
                assert error < 0.01, f"{kind} accumulating in {accumulate}: relative error {error:.4f}"


@pytest.mark.parametrize("kind", ACCUMULATING_KINDS)
def test_in_float64_the_formulas_are_the_norms_and_their_autograd_passes_gradcheck(kind):
    """The emulation's code path (tree sums, formulas, affine) run in float64: equal to the
    float32-accumulating module in float64, and its gradient (autograd's, which the narrow
    formats use too) agrees with finite differences."""
    n, options = 24, {"k": 3} if kind == "topk" else {}
    norm = build_norm(kind, n, **options).double()
    constant, k = getattr(norm, "constant_value", 1.0), getattr(norm, "k", None)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, n, generator=g, dtype=torch.float64, requires_grad=True)
    weight, bias = (torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)

    def emulated(x, weight, bias):
        return norm_in_format(x, kind, n, weight, bias, norm.eps, constant, k, torch.float64)

    assert torch.allclose(emulated(x, weight, bias), norm(x), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(emulated, (x, weight, bias))


@pytest.mark.parametrize("accumulate", ["fp16", "bf16"])
@pytest.mark.parametrize("kind", ACCUMULATING_KINDS)
def test_narrow_gradients_follow_the_float32_ones_to_the_formats_precision(kind, accumulate):
    """Ordinary rows (sigma 2, mean 1): every gradient, of x, gamma and beta, close to the
    float32-accumulating norm's: within 0.2% in fp16, 1% in bf16. But x's gradient of linf
    and topk in bf16: with |d| rounded to 8 bits the maximum (or the k-th largest) may tie with
    another element or be another one (here one row of 16 ties), and the large gradient of the
    scale goes to those elements, which moves x's gradient by about 10% (linf) and 2% (topk)."""
    n = 256
    g = torch.Generator().manual_seed(4)
    x = torch.randn(16, n, generator=g) * 2 + 1
    upstream = torch.randn(16, n, generator=g)
    gradients = {}
    for name in ("float32", accumulate):
        norm = build_norm(kind, n, accumulate=name, **OPTIONS.get(kind, {}))
        inputs = x.clone().requires_grad_()
        (norm(inputs) * upstream).sum().backward()
        gradients[name] = [inputs.grad, norm.weight.grad, norm.bias.grad]
    tolerance = {"fp16": 0.002, "bf16": 0.01}[accumulate]
    ties = kind in ("linf", "topk") and accumulate == "bf16"
    for name, exact, narrowed in zip(("x", "gamma", "beta"), gradients["float32"], gradients[accumulate]):
        assert torch.isfinite(narrowed).all()
        error = ((narrowed - exact).norm() / exact.norm()).item()
        allowed = 0.15 if ties and name == "x" else tolerance
        assert error < allowed, f"{kind} in {accumulate}: relative error {error:.4f} of the gradient of {name}"


@pytest.mark.parametrize("kind", ACCUMULATING_KINDS)
def test_the_option_keeps_state_dict_keys_shows_in_repr_and_is_checked(kind):
    plain = build_norm(kind, 16, **OPTIONS.get(kind, {"k": 8} if kind == "topk" else {}))
    narrow = build_norm(kind, 16, accumulate="bf16", **OPTIONS.get(kind, {}))
    assert narrow.state_dict().keys() == plain.state_dict().keys()
    assert "accumulate=bf16" in repr(narrow) and "accumulate" not in repr(plain)
    with pytest.raises(ValueError, match=r"accumulate='fp8' is unknown; allowed: float32, fp16, bf16"):
        build_norm(kind, 16, accumulate="fp8", **OPTIONS.get(kind, {}))
    with pytest.raises(ValueError, match=r"accumulate='half' is unknown"):
        narrow.accumulate = "half"
    assert narrow.accumulate == "bf16"  # a refused value changes nothing
    narrow.accumulate = "float32"
    assert torch.equal(narrow(torch.ones(2, 16) * torch.arange(16.0)), plain(torch.ones(2, 16) * torch.arange(16.0)))


def test_none_and_the_batch_norms_refuse_the_option_saying_why():
    with pytest.raises(ValueError, match=r"norm kind 'none' does not take options \['accumulate'\]"):
        build_norm("none", 16, accumulate="fp16")
    with pytest.raises(ValueError, match=r"batch-norm kind 'l1' does not take options \['accumulate'\]; it takes "
                                         r"constant \(accumulate is an option of the layer norms"):
        build_batch_norm("l1", 16, accumulate="fp16")


def narrow_model(kind):
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), build_norm(kind, 64, accumulate="fp16", **OPTIONS.get(kind, {})),
                               torch.nn.Linear(64, 8))


@pytest.mark.parametrize("kind", ("l2", "l1"))
def test_inside_a_users_torch_compile_the_emulation_keeps_every_rounding(kind):
    """A compiled model's narrow norm runs outside the graph (a graph break): the eager outputs
    and gradients bit for bit. The same formula traced by inductor is not (it keeps float32
    between the operations): what the break is for."""
    torch._dynamo.reset()
    model = narrow_model(kind)
    x = torch.randn(16, 64) * 4
    results = []
    for run in (model, torch.compile(model)):
        inputs = x.clone().requires_grad_()
        y = run(inputs)
        results.append([y, *torch.autograd.grad(y.square().sum(), (inputs, model[0].weight))])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    formula = functools.partial(rows_in_format, kind=kind, weight=None, bias=None, eps=1e-5, constant=1.25, k=None,
                                dtype=torch.float16)
    rows = torch.randn(16, 64) * 4
    assert not torch.equal(torch.compile(formula)(rows)[0], formula(rows)[0])
    torch._dynamo.reset()


def test_a_fullgraph_compile_of_a_narrow_norm_is_refused_saying_why():
    torch._dynamo.reset()
    with pytest.raises(Exception, match="accumulating in fp16/bf16 emulates every rounding, which inductor would "
                                        "drop"):
        torch.compile(narrow_model("l1"), fullgraph=True)(torch.randn(4, 64))
    torch._dynamo.reset()


def test_under_autocast_the_narrow_norm_runs_as_without_it(monkeypatch):
    """The plan turns autocast off around the norm (on CUDA, autocast would run rsqrt in float32:
    one rounding fewer), so its forward sees no autocast and gives the same output."""
    model = narrow_model("l2")
    x = torch.randn(16, 64)
    seen = []
    original = narrow.forward_rows
    monkeypatch.setattr(narrow, "forward_rows",
                        lambda *a, **o: seen.append(torch.is_autocast_enabled("cpu")) or original(*a, **o))
    narrow.implementation.cache_clear()
    norm, plain = model[1], model[1](x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = norm(x)
    narrow.implementation.cache_clear()
    assert seen == [False, False] and torch.equal(under, plain)
