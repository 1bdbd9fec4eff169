"""The Triton kernels (kernels/triton_kernels.py) against rows.py's formulas in float64 and the
eager reference: forward and backward, every kind of the template (l1, linf, topk, l2, rms),
fp32/bf16/fp16, widths from 1 to 32768, ties, constant and zero rows, strided x, gamma and beta,
with and without affine.

On a machine without a GPU, conftest.py sets TRITON_INTERPRET=1 and the kernels run in Triton's
interpreter on CPU tensors: the same kernel source, its indexing, masks and arithmetic.
"""

import pytest
import torch

from fairseq_normmatters import kernels
from fairseq_normmatters.constants import resolve_constant
from fairseq_normmatters.kernels import backends, rows
from fairseq_normmatters.norms import deviation_norm_reference, rms_norm_reference

from row_inputs import has_ties, one_ulp_up

triton_kernels = pytest.importorskip("fairseq_normmatters.kernels.triton_kernels",
                                     reason="Triton is not installed")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DEVIATION_KINDS = ("l1", "linf", "topk")
KINDS = DEVIATION_KINDS + ("l2", "rms")
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}
WIDTHS = (1, 2, 7, 33, 128, 1000, 4097)
EPS = 1e-5


def plan(kind, n, k):
    return kernels.RowNormPlan(kind, n, constant_of(kind, n, k), EPS, k,
                               kernels.implementation("triton"))


def constant_of(kind, n, k):
    return resolve_constant(kind, n, "paper", k) if kind in DEVIATION_KINDS else 1.0


def top_k(n):
    return min(3, n)


def leaves(*tensors):
    return [None if t is None else t.detach().requires_grad_() for t in tensors]


def gradients(y, x, weight, bias, grad):
    return [y, *torch.autograd.grad(y, [t for t in (x, weight, bias) if t is not None], grad)]


def through_the_kernels(kind, x, weight, bias, grad, k):
    """y and the gradients of (x, gamma, beta) through RowNormFunction run by the Triton kernels."""
    x, weight, bias = leaves(x, weight, bias)
    return gradients(plan(kind, x.shape[1], k).run(x, weight, bias), x, weight, bias, grad)


def through_rows_py(kind, x, weight, bias, grad, k):
    """The same quantities by rows.py's analytic formulas in float64 (ties shared as the kernels do)."""
    wide = [None if t is None else t.detach().double() for t in (x, weight, bias)]
    constant = constant_of(kind, x.shape[1], k)
    y, statistics = rows.forward_rows(*wide, kind, constant, EPS, k)
    dx, dweight, dbias = rows.backward_rows(grad.double(), wide[0], wide[1], statistics, kind, constant, EPS, k,
                                            weight is not None, bias is not None)
    return [t for t in (y, dx, dweight, dbias) if t is not None]


def through_eager(kind, x, weight, bias, grad, k):
    x, weight, bias = leaves(x, weight, bias)
    if kind == "l2":
        y = torch.nn.functional.layer_norm(x.float(), x.shape[1:], weight, bias, EPS).to(x.dtype)
    elif kind == "rms":
        y = rms_norm_reference(x, x.shape[1], weight, bias, EPS)
    else:
        y = deviation_norm_reference(x, kind, x.shape[1], weight, bias, EPS, "paper", k)
    return gradients(y, x, weight, bias, grad)


def assert_close(ours, expected, dtype, what):
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), ours, expected):
        assert a.shape == b.shape, f"{what} {name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        # relative to the largest value, or absolute below 1: at n = 2 an l1 row's dx is only the
        # eps term (~1e-5), whose float32 cancellation error is large relative to itself
        scale = b.double().abs().max().clamp_min(1.0)
        error = ((a.double() - b.double()).abs().max() / scale).item()
        assert error < TOLERANCE[dtype], f"{what} {name}: relative error {error:.2e}"


def check(kind, x, weight=None, bias=None, k=None, against_eager=True):
    k = top_k(x.shape[1]) if k is None and kind == "topk" else k
    grad = torch.randn(x.shape, device=x.device).to(x.dtype)
    ours = through_the_kernels(kind, x, weight, bias, grad, k)
    assert ours[0].dtype == x.dtype and ours[1].dtype == x.dtype
    what = f"{kind} {x.dtype} {tuple(x.shape)}"
    assert_close(ours, through_rows_py(kind, x, weight, bias, grad, k), x.dtype, what + " vs rows.py")
    if against_eager:
        assert_close(ours, through_eager(kind, x, weight, bias, grad, k), x.dtype, what + " vs eager")


def rows_of(n, dtype, count=5):
    return (torch.randn(count, n, device=DEVICE) * 3 + 1).to(dtype)


def affine(n):
    return torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)


@pytest.mark.parametrize("dtype", TOLERANCE, ids=str)
@pytest.mark.parametrize("kind, n", [(kind, n) for kind in KINDS for n in WIDTHS
                                     if n > 1 or kind in ("l1", "rms")])  # a centered row of 1 is 0
def test_forward_and_backward_match(kind, n, dtype):
    x = rows_of(n, dtype)
    # eager's topk picks one of tied values for the gradient, the kernels share it (as rows.py)
    check(kind, x, *affine(n), against_eager=kind != "topk" or not has_ties(x, top_k(n) + 1))


@pytest.mark.parametrize("kind", DEVIATION_KINDS + ("l2",))  # rms does not center: a constant row is not beta
def test_ties_constant_rows_and_zero_rows(kind):
    n = 40
    x = rows_of(n, torch.float32, count=6)
    x[0, :5], x[0, 5:10] = 9.0, -9.0         # five-way ties at the largest |d|, both signs
    x[1, :] = 3.5                             # constant row: d = 0, y = beta
    x[2, :] = 0.0                             # zero row
    x[3, ::2], x[3, 1::2] = 1.0, -1.0         # every |d| equal
    for k in (1, 4, 7, n):
        check(kind, x, *affine(n), k=k if kind == "topk" else None, against_eager=kind == "l1")
    bias = affine(n)[1]
    y = through_the_kernels(kind, x, None, bias, torch.ones_like(x), 4 if kind == "topk" else None)[0]
    torch.testing.assert_close(y[1], bias)
    torch.testing.assert_close(y[2], bias)


@pytest.mark.parametrize("kind", KINDS)
def test_strided_input_gain_and_bias_and_no_affine(kind):
    n = 96
    wide = rows_of(2 * n, torch.float32, count=7)
    x_every_other_row_feature = wide[:, ::2]                  # stride 2 along the features
    x_row_strided = rows_of(n, torch.float32, count=14)[::2]  # stride 2 * n between rows
    gain_long, bias_long = torch.randn(2 * n, device=DEVICE), torch.randn(3 * n, device=DEVICE)
    gain, bias = gain_long[::2], bias_long[1::3]
    assert gain.stride(0) == 2 and bias.stride(0) == 3
    for x in (x_every_other_row_feature, x_row_strided, wide[:, :n].t().contiguous().t()[:, :n]):
        check(kind, x, gain, bias)
        check(kind, x)


def test_empty_batch_runs_and_gives_zero_gradients():
    gain, bias = affine(16)
    x = rows_of(16, torch.float32, count=0)
    y, dx, dgain, dbias = through_the_kernels("l1", x, gain, bias, torch.empty_like(x), None)
    assert y.shape == dx.shape == (0, 16) and not dgain.any() and not dbias.any()


class LaunchCounter:
    """Stands in for a @triton.jit kernel: counts launches, then launches it."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


def test_a_row_too_wide_for_the_kernels_runs_rows_py_and_keeps_triton(monkeypatch):
    """More features than a block of registers holds: that input runs rows.py; the backend is not
    marked broken, so the next input of a width the kernels take runs them again."""
    forward = LaunchCounter(triton_kernels._forward_kernel)
    monkeypatch.setattr(triton_kernels, "_forward_kernel", forward)
    wide = triton_kernels.MAX_FEATURES + 1
    check("l1", rows_of(wide, torch.float32, count=2), *affine(wide))
    assert forward.launches == 0 and not backends.failures
    check("l1", rows_of(64, torch.float32), *affine(64))
    assert forward.launches == 1 and not backends.failures


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [8192, 32768])
def test_rows_up_to_32768_features(kind, n):
    """The widest blocks the kernels take (up to 2^15 registers a row), fp32 and fp16."""
    for dtype in (torch.float32, torch.float16):
        check(kind, rows_of(n, dtype, count=2), *affine(n), k=8 if kind == "topk" else None,
              against_eager=kind != "topk")


def test_rows_whose_offsets_pass_two_to_the_31_are_read_and_written_where_they_are():
    """2049 rows of 1024 bf16 features 2^20 elements apart in a 4 GB storage (reserved, only the
    rows touched): the last row starts at element 2^31, past int32, so the kernels' row offsets
    must be int64 (row x stride in int32 wraps, and the last rows are read and written out of
    bounds: a segmentation fault in the interpreter)."""
    rows, n, stride = 2049, 1024, 2 ** 20
    storage = torch.empty((rows - 1) * stride + n, dtype=torch.bfloat16, device=DEVICE)
    x = storage.as_strided((rows, n), (stride, 1))
    x.copy_(rows_of(n, torch.bfloat16, count=rows))
    assert x.storage_offset() + (rows - 1) * x.stride(0) == 2 ** 31
    check("l1", x, *affine(n))


@pytest.mark.parametrize("kind", ["linf", "topk"])
def test_the_kernels_backward_finds_its_ties_among_its_own_values(kind):
    """The backward kernel with the saved max / k-th largest |d| one ulp off (a forward compiled
    apart): its ties come from its own |d|, so its dx is finite and the one of the exact statistics."""
    x = rows_of(64, torch.float32, count=6)
    weight, _ = affine(64)
    grad = torch.randn_like(x)
    constant = constant_of(kind, 64, 4)
    _, statistics = triton_kernels.forward_rows(x, weight, None, kind, constant, EPS, 4)
    exact = triton_kernels.backward_rows(grad, x, weight, statistics, kind, constant, EPS, 4, True, False)
    off = triton_kernels.backward_rows(grad, x, weight, one_ulp_up(statistics), kind, constant, EPS, 4, True, False)
    assert torch.isfinite(off[0]).all()
    torch.testing.assert_close(off[0], exact[0], rtol=1e-5, atol=1e-6)
