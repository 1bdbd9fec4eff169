"""Welch's t-test of two configurations' seeds: whether their means differ beyond what the spread
of their seeds explains.

    t = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)
    df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2 / (n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1))   (Welch-Satterthwaite)
    p = I_{df / (df + t^2)}(df / 2, 1 / 2)   (two-sided; I the regularized incomplete beta function)
"""

import math
import statistics
from typing import NamedTuple, Optional, Sequence

SIGNIFICANCE = 0.05


class WelchTest(NamedTuple):
    difference: float  # mean_a - mean_b
    t: float
    df: float
    p: float  # two-sided


def welch_test(a: Sequence[float], b: Sequence[float]) -> Optional[WelchTest]:
    """The test of mean(a) - mean(b), or None with fewer than 2 values on a side. Two sides
    without any spread give p 0 when their means differ (1 when they do not)."""
    if len(a) < 2 or len(b) < 2:
        return None
    difference = statistics.mean(a) - statistics.mean(b)
    share_a, share_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if share_a + share_b == 0:
        return WelchTest(difference, math.copysign(math.inf, difference), math.inf, 0.0 if difference else 1.0)
    t = difference / math.sqrt(share_a + share_b)
    df = (share_a + share_b) ** 2 / (share_a ** 2 / (len(a) - 1) + share_b ** 2 / (len(b) - 1))
    return WelchTest(difference, t, df, student_t_two_sided_p(t, df))


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` (real, > 0) degrees of freedom."""
    return regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b), from its continued fraction (Lentz's method), on the
    side of x where the fraction converges fast."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - regularized_incomplete_beta(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a) - log_beta(a, b)
    return math.exp(log_front) * beta_continued_fraction(a, b, x)


def log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def beta_continued_fraction(a: float, b: float, x: float, tolerance: float = 1e-15, terms: int = 500) -> float:
    """1 / (1 + d_1 / (1 + d_2 / (1 + ...))) with d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1))
    and d_{2m} = m (b-m) x / ((a+2m-1)(a+2m))."""
    tiny = 1e-300
    numerator, denominator = 1.0, 1.0 - (a + b) * x / (a + 1)
    denominator = 1.0 / (denominator if abs(denominator) > tiny else tiny)
    fraction = denominator
    for m in range(1, terms + 1):
        for d in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                  -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            denominator = 1.0 + d * denominator
            denominator = 1.0 / (denominator if abs(denominator) > tiny else tiny)
            numerator = 1.0 + d / numerator
            numerator = numerator if abs(numerator) > tiny else tiny
            fraction *= denominator * numerator
        if abs(denominator * numerator - 1.0) < tolerance:
            return fraction
    return fraction
