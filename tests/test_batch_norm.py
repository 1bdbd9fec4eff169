"""Batch-norm variants: training statistics, running statistics, eval mode, gradients."""

import pytest
import torch

from fairseq_normmatters import DeviationBatchNorm, build_batch_norm
from fairseq_normmatters.constants import linf_constant, l1_constant

KINDS_AND_OPTIONS = [("l1", {}), ("linf", {}), ("topk", {"k": 4})]


def hand_scale(kind, d, k=4):
    """Per-channel C * scale of deviations d shaped (channels, elements)."""
    a, n = d.abs(), d.shape[1]
    if kind == "l1":
        return l1_constant() * a.mean(1)
    top = a.sort(1, descending=True).values[:, : (1 if kind == "linf" else k)].mean(1)
    return linf_constant(n) * top


@pytest.mark.parametrize("kind,options", KINDS_AND_OPTIONS)
def test_train_then_eval_against_hand_computation(kind, options):
    bn = build_batch_norm(kind, 3, dim=2, momentum=0.1, **options)
    batches = [torch.randn(4, 3, 5, 5) * 2 + 1 for _ in range(2)]
    mean, scale = torch.zeros(3), torch.ones(3)
    for x in batches:
        per_channel = x.transpose(0, 1).reshape(3, -1)
        mu = per_channel.mean(1)
        s = hand_scale(kind, per_channel - mu[:, None])
        y = bn(x)
        expected = (x - mu.view(1, 3, 1, 1)) / (s.view(1, 3, 1, 1) + 1e-5)
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        mean, scale = 0.9 * mean + 0.1 * mu, 0.9 * scale + 0.1 * s
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_scale, scale)
    bn.eval()
    x = torch.randn(2, 3, 5, 5)
    expected = (x - mean.view(1, 3, 1, 1)) / (scale.view(1, 3, 1, 1) + 1e-5)
    torch.testing.assert_close(bn(x), expected)
    assert int(bn.num_batches_tracked) == 2


def test_momentum_none_is_cumulative_average():
    bn = build_batch_norm("l1", 2, dim=1, momentum=None)
    xs = [torch.randn(16, 2) + i for i in range(3)]
    for x in xs:
        bn(x)
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in xs]).mean(0))


def test_three_dim_input_and_affine():
    bn = build_batch_norm("linf", 4, dim=1)
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(0.5)
    x = torch.randn(3, 4, 7)
    plain = build_batch_norm("linf", 4, dim=1, affine=False)
    torch.testing.assert_close(bn(x), 2.0 * plain(x) + 0.5)


def test_without_running_stats_eval_uses_batch_statistics():
    bn = build_batch_norm("l1", 3, dim=2, track_running_stats=False).eval()
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(bn(x), bn.train()(x))


@pytest.mark.parametrize("kind,options", KINDS_AND_OPTIONS)
def test_gradcheck_float64(kind, options):
    bn = build_batch_norm(kind, 2, dim=1, **options).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, w, b: bn(inp), (x, bn.weight, bn.bias))


def test_l2_is_torch_batch_norm():
    assert type(build_batch_norm("l2", 8, dim=1)) is torch.nn.BatchNorm1d
    assert type(build_batch_norm("l2", 8, dim=2)) is torch.nn.BatchNorm2d


def test_bf16_input_returns_bf16():
    bn = build_batch_norm("l1", 3, dim=2)
    y = bn((torch.randn(2, 3, 4, 4) * 1e3).bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


@pytest.mark.parametrize("call,message", [
    (lambda: build_batch_norm("rms", 4), "'rms' is unknown; known kinds: l2, l1, linf, topk"),
    (lambda: DeviationBatchNorm("l2", 4), "kind 'l2' is unknown; allowed: l1, linf, topk (l2 is torch's"),
    (lambda: build_batch_norm("l1", 4, dim=3), "dim must be 1"),
    (lambda: build_batch_norm("topk", 4), "needs the option k"),
    (lambda: build_batch_norm("topk", 4, k=0), "integer k >= 1, got k=0"),
    (lambda: build_batch_norm("l1", 4, eps=0), "eps must be > 0"),
    (lambda: build_batch_norm("topk", 4, dim=1, k=50)(torch.randn(2, 4, 3)), "1 <= k <= n=6, got k=50"),
    (lambda: build_batch_norm("l1", 4, dim=2)(torch.randn(2, 4, 3)), "expects input of (4,) dims with 4 channels"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
