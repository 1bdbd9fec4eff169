"""Calibration constants of the L1, L-infinity and top-k scales (Hoffer et al. 2018).

Each constant C turns a cheap dispersion statistic of the centered row d = x - mean(x) into
an estimate of the Gaussian standard deviation sigma: E[C * scale(d)] ~ sigma.
"""

import functools
import math

import torch

#: Bounds of the supplement for C_Linf(n) * max|d| on Gaussian input, in units of sigma:
#: l = (1 + sqrt(pi ln 4)) / sqrt(8 pi ln 2) ~ 0.7396 and u = (1 + sqrt(pi ln 4)) / 2 ~ 1.5435.
#: The supplement prints l ~ 0.793; its own formula gives 0.7396 (a typo in the supplement).
LINF_LOWER_BOUND = (1 + math.sqrt(math.pi * math.log(4))) / math.sqrt(8 * math.pi * math.log(2))
LINF_UPPER_BOUND = (1 + math.sqrt(math.pi * math.log(4))) / 2

CONSTANT_MODES = ("paper", "gaussian")


def l1_constant() -> float:
    """C_L1 = sqrt(pi / 2) ~ 1.2533, so that C_L1 * E|x - mu| = sigma for Gaussian x."""
    return math.sqrt(math.pi / 2)


def linf_constant(n: int) -> float:
    """The supplement's C_Linf(n) = (1 + sqrt(pi ln 4)) / (2 sqrt(2 ln n)), for n >= 2.

    With it, LINF_LOWER_BOUND * sigma <= C_Linf(n) * E[max_i |x_i - mu|] <= LINF_UPPER_BOUND *
    sigma. The supplement prints the lower bound as 0.793 sigma; the formula gives 0.7396 sigma.
    Measured on Gaussian input it over-estimates sigma by ~40% (see `tests/test_norms.py`).
    """
    check_size(n)
    return (1 + math.sqrt(math.pi * math.log(4))) / (2 * math.sqrt(2 * math.log(n)))


def topk_constant(n: int, k: int, mode: str = "paper") -> float:
    """Constant of the top-k scale (mean of the k largest |x_i - mu| of n).

    mode "paper": C_Linf(n) whatever k is, as the authors' code does (its calibration drifts
    with k). mode "gaussian": 1 / E[mean of the k largest |x_i - mean(x)|] for x ~ N(0, 1)^n,
    so that E[C * scale] = sigma exactly for the given n and k.
    """
    check_topk(n, k)
    if mode == "paper":
        return linf_constant(n)
    if mode == "gaussian":
        return 1.0 / expected_topk_mean_abs_deviation(n, k)
    raise ValueError(f"constant mode {mode!r} is unknown; allowed: {', '.join(CONSTANT_MODES)}")


def gaussian_l1_constant(n: int) -> float:
    """sqrt(pi/2) * sqrt(n / (n - 1)): exact for a row centered by its own mean (n >= 2)."""
    check_size(n)
    return l1_constant() * math.sqrt(n / (n - 1))


#: Below this many features the deviations are too correlated for the quadrature's
#: independence assumption (n = 2: |d_1| = |d_2|); a seeded Monte-Carlo estimate serves there.
SMALL_N = 32


@functools.lru_cache(maxsize=256)
def expected_topk_mean_abs_deviation(n: int, k: int) -> float:
    """E[(1/k) * sum of the k largest |x_i - mean(x)|] for x ~ N(0, 1)^n.

    For n >= SMALL_N, by quadrature: each deviation is N(0, s^2) with s^2 = (n - 1) / n and,
    treating the n deviations as independent (their correlation is -1/(n-1)), the sum of the k
    largest has expectation
        n * integral_0^inf t f(t) P[Binomial(n - 1, 1 - F(t)) <= k - 1] dt,
    f and F being the half-normal density and CDF of scale s (exact for k = n; within 0.1% of
    Monte Carlo with true centering at n = 64). For n < SMALL_N, a Monte-Carlo estimate over
    2^19 rows from a fixed seed (standard error ~0.1%).
    """
    check_topk(n, k)
    if n < SMALL_N:
        return _monte_carlo_topk_mean_abs_deviation(n, k)
    s = math.sqrt((n - 1) / n)
    t = torch.linspace(0.0, 12.0 * s, 60001, dtype=torch.float64)[1:]
    z = t / s
    log_density = math.log(2.0 / (s * math.sqrt(2 * math.pi))) - 0.5 * z * z
    log_tail = math.log(2.0) + torch.special.log_ndtr(-z)  # log(1 - F(t))
    log_body = torch.log(torch.special.erf(z / math.sqrt(2.0)))  # log F(t)
    j = torch.arange(k, dtype=torch.float64).unsqueeze(1)
    log_binom = (
        math.lgamma(n) - torch.lgamma(j + 1) - torch.lgamma(n - j)
        + j * log_tail + (n - 1 - j) * log_body
    )
    at_most_k_minus_1_above = torch.exp(log_binom).sum(0)
    integrand = t * torch.exp(log_density) * at_most_k_minus_1_above
    return float(n * torch.trapezoid(integrand, t) / k)


def _monte_carlo_topk_mean_abs_deviation(n: int, k: int) -> float:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2**19, n, dtype=torch.float64, generator=generator)
    deviation = (x - x.mean(-1, keepdim=True)).abs()
    return float(deviation.topk(k, dim=-1).values.mean())


def resolve_constant(kind: str, n: int, constant="paper", k: int | None = None) -> float:
    """The numeric C for a norm kind ("l1", "linf", "topk") over n features.

    constant: "paper", "gaussian", or a positive float used as is (1.0 is the paper's
    "no C_L1" ablation).
    """
    if kind in ("linf", "topk"):
        check_topk(n, 1 if kind == "linf" else k)
    value = check_constant(constant)
    if value is not None:
        return value
    if kind == "l1":
        return l1_constant() if constant == "paper" else gaussian_l1_constant(n)
    if kind == "linf":
        return topk_constant(n, 1, constant) if constant == "gaussian" else linf_constant(n)
    if kind == "topk":
        return topk_constant(n, k, constant)
    raise ValueError(f"norm kind {kind!r} has no calibration constant; kinds with one: l1, linf, topk")


def check_constant(constant):
    """Validate a constant option; returns its float value, or None for "paper"/"gaussian"."""
    if isinstance(constant, str):
        if constant not in CONSTANT_MODES:
            raise ValueError(
                f"constant {constant!r} is unknown; allowed: {', '.join(CONSTANT_MODES)} or a positive float"
            )
        return None
    value = float(constant)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"constant must be a positive finite float, got {constant!r}")
    return value


def check_size(n: int) -> None:
    if n < 2:
        raise ValueError(f"the L1/L-inf/top-k scales need n >= 2 normalized features, got n={n}")


def check_topk(n: int, k) -> None:
    check_size(n)
    if not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"top-k needs an integer k with 1 <= k <= n={n}, got k={k!r}")
