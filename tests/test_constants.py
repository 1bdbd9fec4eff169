"""The calibration constants against their closed forms and a seeded Monte-Carlo estimate."""

import math

import pytest
import torch

from fairseq_normmatters.constants import (
    LINF_LOWER_BOUND, LINF_UPPER_BOUND, SMALL_N, expected_topk_mean_abs_deviation, l1_constant,
    linf_constant, resolve_constant, topk_constant)


def test_closed_forms():
    assert l1_constant() == pytest.approx(1.2533141, abs=1e-7)
    assert linf_constant(512) == pytest.approx(3.0869 / (2 * math.sqrt(2 * math.log(512))), rel=1e-4)
    # the supplement prints the lower bound as 0.793 sigma: its own formula gives 0.7396
    assert LINF_LOWER_BOUND == pytest.approx(0.7396, abs=1e-4)
    assert LINF_UPPER_BOUND == pytest.approx(1.5435, abs=1e-4)


def test_paper_topk_constant_is_linf_constant_for_any_k():
    assert topk_constant(512, 1) == topk_constant(512, 64) == linf_constant(512)


def monte_carlo(n, k, rows, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n, dtype=torch.float64, generator=g)
    return float((x - x.mean(-1, keepdim=True)).abs().topk(k, -1).values.mean())


@pytest.mark.parametrize("n,k", [(2, 1), (5, 2), (16, 16), (SMALL_N, 1), (64, 1), (64, 8), (64, 64), (512, 8)])
def test_expected_topk_matches_independent_monte_carlo(n, k):
    estimate = monte_carlo(n, k, rows=2**21 // n, seed=12345)
    assert expected_topk_mean_abs_deviation(n, k) == pytest.approx(estimate, rel=0.004)


def test_gaussian_constants_are_reciprocal_expectations():
    assert topk_constant(256, 4, "gaussian") == pytest.approx(1 / expected_topk_mean_abs_deviation(256, 4))
    assert resolve_constant("linf", 256, "gaussian") == topk_constant(256, 1, "gaussian")
    assert resolve_constant("l1", 64, "gaussian") == pytest.approx(math.sqrt(math.pi / 2 * 64 / 63))
    assert resolve_constant("topk", 64, 0.5, 3) == 0.5


@pytest.mark.parametrize("call,message", [
    (lambda: linf_constant(1), "n >= 2"),
    (lambda: topk_constant(8, 9), "1 <= k <= n=8, got k=9"),
    (lambda: topk_constant(8, 2, "exact"), "'exact' is unknown"),
    (lambda: resolve_constant("l2", 8), "norm kind 'l2' has no calibration constant"),
    (lambda: resolve_constant("l1", 8, float("inf")), "positive finite float"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call()
