"""An anytime-valid confidence sequence for the mean of paired differences over seeds.

A fixed-n interval (Student-t, bootstrap) is valid only when the number of seeds was fixed in
advance. Adding seeds until an interval excludes 0, and looking after every round, inflates
its error rate far above 5%. A *confidence sequence* (CS) covers the true mean at every
number of pairs at once: P(∃n: μ ∉ C_n) ≤ α. So one may look after every seed, stop when
the CS decides, and keep the 95% guarantee. ``nfstudy`` decides "resolved" with it.

**The method** (Lai 1976, "On confidence sequences", Ann. Statist. 4(2):265–280; as an
e-process: Pérez-Ortiz, Lardy, de Heide, Grünwald 2024, "E-statistics, group invariance and
anytime-valid testing", Ann. Statist. 52(4)). Let D_1 … D_n be the paired differences
(arm − baseline, one per seed), i.i.d. N(μ, σ²) with σ unknown, and m a candidate mean. With
Y_i = D_i − m, S = Σ Y_i and Q = Σ Y_i², put a normal prior N(0, g) on the standardised
effect δ = (μ − m)/σ and the right-Haar prior dσ/σ on the scale. The Bayes factor against
μ = m is then

    E_n(m) = ∫∫ Π φ_σ(Y_i − δσ) N(δ; 0, g) dδ dσ/σ  /  ∫ Π φ_σ(Y_i) dσ/σ
           = (1 + n·g)^(−1/2) · (1 − g·S² / ((1 + n·g)·Q))^(−n/2).

(The δ integral gives (1 + n·g)^(−1/2) exp(g·S²/(2σ²(1 + n·g))); the σ integral of
σ^(−n−1) exp(−A/(2σ²)) is ∝ A^(−n/2) with A = Q − g·S²/(1 + n·g) and A = Q.) Because the
prior on σ is the right-Haar measure of the scale group, E_n(m) is the likelihood ratio of
the scale-invariant statistic (Y_1, …, Y_n)/|Y_1|, whose law under μ = m does not depend on
σ: E_n(m) is a nonnegative martingale with E_1 = 1 under μ = m, whatever σ. Ville's
inequality then gives P(∃n: E_n(μ) ≥ 1/α) ≤ α, so C_n = {m : E_n(m) < 1/α} is a (1 − α)
confidence sequence.

**Closed form.** With D̄ the mean and s_n² = Σ(D_i − D̄)²/n the biased variance,
S²/Q = n·r/(1 + r) where r = (D̄ − m)²/s_n², and E_n grows with r. So C_n = D̄ ± s_n·√r*
with r* = u/(1 − u) and u = (1 − (α²/(1 + n·g))^(1/n))·(1 + n·g)/(n·g); when u ≥ 1 the CS
is the whole line. :func:`confidence_sequence` computes it.

**Choices.** g = :data:`PRIOR_VARIANCE` = 10 spreads the prior over standardised effects of a
few standard deviations, what a paired ablation shows when it shows anything: it can
decide a clear effect at 3 pairs (never at 2), and with N(2, 1) pairs (a 2-point effect,
1-point spread) it resolves in a median of 6 pairs, against 7 for g = 1, which cannot
decide before 5 pairs (2,000-study simulations; ``tests/analysis/test_confseq.py``).

**Assumption.** Normal paired differences, as every t-interval of the report assumes.
A diverged seed is an outlier: it widens the CS (σ is estimated), it does not shrink it.
Methods valid for *any* distribution on the differences' range [−1, 1] (betting CSs,
Waudby-Smith & Ramdas 2023, "Estimating means of bounded random variables by betting",
JRSS-B 86(1); empirical-Bernstein CSs, Howard et al. 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 49(2)) are of no use at seed counts: a
bet must survive a diverged seed (Δ ≈ −90 pt), so on a 2-point effect the log-capital grows
by at most ≈ 0.02 a pair and needs ≈ ln(20)/0.02 ≈ 150 pairs to reach 1/α.
"""

from __future__ import annotations

import math

ALPHA = 0.05
"""1 − coverage of every confidence sequence."""
PRIOR_VARIANCE = 10.0
"""g: the variance of the normal prior on the standardised effect (see the module text)."""
MAX_PAIRS = 1000
"""Projections stop here: beyond it, more seeds are not the way to a verdict."""


def _half_width_factor(n: int, alpha: float, g: float) -> float:
    """√r*: the CS half-width in units of the biased standard deviation s_n (inf: the whole line)."""
    if n < 2:
        return math.inf
    a = n * g / (1 + n * g)
    u = (1 - (alpha * alpha / (1 + n * g)) ** (1 / n)) / a
    return math.inf if u >= 1 else math.sqrt(u / (1 - u))


def confidence_sequence(mean: float, sd: float, n: int, *, alpha: float = ALPHA,
                        g: float = PRIOR_VARIANCE) -> tuple[float, float]:
    """The (1 − α) confidence sequence of the mean at n paired differences.

    Example:
        >>> confidence_sequence(0.02, 0.01, 8)  # 8 pairs, mean +2 pt, sd 1 pt
        (0.0043..., 0.0356...)

    Args:
        mean: the mean of the n differences.
        sd: their sample standard deviation (ddof = 1).
        n: the number of pairs.
        alpha: 1 − coverage.
        g: the prior variance of the standardised effect.

    Returns:
        ``(low, high)``; ``(-inf, inf)`` when nothing can be excluded yet (n ≤ 2, or a
        spread too large for n), NaN bounds when the mean or sd is not finite.
    """
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return math.nan, math.nan
    factor = _half_width_factor(n, alpha, g)
    if math.isinf(factor):
        return -math.inf, math.inf
    half = factor * sd * math.sqrt((n - 1) / n)  # s_n, the biased standard deviation
    return mean - half, mean + half


def pairs_to_exclude(mean: float, sd: float, n: int, bound: float, *, alpha: float = ALPHA,
                     g: float = PRIOR_VARIANCE, limit: int = MAX_PAIRS) -> int | None:
    """How many pairs the CS would need to lie on one side of ``bound``, if the mean and
    the spread measured so far held (a projection, not a promise).

    Returns:
        The smallest pair count ≥ n (and ≥ 3) at which the CS excludes ``bound``; None when
        no count up to ``limit`` would (the mean sits on the bound, or the spread is too
        large), or when fewer than 2 pairs give no spread to project from.
    """
    if n < 2 or not (math.isfinite(mean) and math.isfinite(sd)):
        return None
    gap = abs(mean - bound)
    for count in range(max(n, 3), limit + 1):
        factor = _half_width_factor(count, alpha, g)
        if factor * sd * math.sqrt((count - 1) / count) < gap:
            return count
    return None
