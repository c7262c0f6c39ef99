"""Means, 95% confidence intervals and paired differences over seeds.

Every interval in a report is a Student-t interval over seeds (:func:`mean_ci`): the
seeds are the replicates, the same seeds run in every arm. With fewer than five seeds the
t-interval is wide and leans on normality; :func:`bootstrap_ci` gives a percentile
bootstrap for comparison (reported beside the t-interval where n < 5), never in place
of it.

Diverged runs are results (a run whose loss turns non-finite stops and is recorded FINISHED
with outcome ``diverged``): their accuracy is used as recorded (usually chance level), so a
divergence pulls a mean down instead of silently leaving it. They are counted in
``n_diverged`` and flagged in every table. A diverged run with no recorded value for the
metric cannot enter a mean; it is still counted in ``n_diverged``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats  # a dependency of scikit-learn and mlflow

from study.record.tags import DIVERGED


def missing(value) -> bool:
    """Whether a param or metric value is absent: None or NaN (AGC off is ``agc.clipping`` None)."""
    return value is None or (isinstance(value, (float, np.floating)) and value != value)


def _finite(values) -> np.ndarray:
    array = np.asarray(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce"), dtype=float)
    return array[np.isfinite(array)]


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided Student-t confidence interval.

    Non-finite values (NaN, None) are dropped first.

    Example:
        >>> mean_ci([1, 2, 3, 4, 5])  # 3 ± t(0.975, 4)·sqrt(2.5/5)
        (3.0, 1.0367..., 4.9632..., 5)

    Args:
        values: the sample (one value per seed).
        confidence: coverage of the interval, in (0, 1).

    Returns:
        ``(mean, low, high, n)``; the bounds are NaN when n < 2 and the mean is NaN when
        n = 0.
    """
    sample = _finite(values)
    n = len(sample)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(sample.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = _scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * sample.std(ddof=1) / np.sqrt(n)
    return mean, float(mean - half), float(mean + half), n


def bootstrap_ci(values, confidence: float = 0.95, n_boot: int = 10000, seed: int = 0):
    """Mean and percentile-bootstrap confidence interval.

    Args:
        values: the sample; non-finite values are dropped.
        confidence: coverage of the interval.
        n_boot: number of resamples (with replacement, of the sample's size).
        seed: seed of the resampling generator (the result is deterministic).

    Returns:
        ``(mean, low, high, n)`` as in :func:`mean_ci`.
    """
    sample = _finite(values)
    n = len(sample)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    if n < 2:
        return float(sample.mean()), float("nan"), float("nan"), n
    rng = np.random.default_rng(seed)
    means = sample[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(sample.mean()), float(low), float(high), n


def _key(frame: pd.DataFrame, columns) -> pd.Series:
    """One string per row naming its values in ``columns`` (None and NaN match each other)."""
    if not columns:
        return pd.Series("", index=frame.index)
    return frame[list(columns)].map(str).agg("|".join, axis=1)


def group_rows(frame: pd.DataFrame, columns):
    """Yield ``(values, rows)`` per distinct combination of ``columns``, None kept as a value.

    Groups come in the order of :func:`sort_key` of their values, so None (e.g. AGC off)
    comes first and numbers sort numerically.
    """
    columns = list(columns)
    if not columns:
        yield (), frame
        return
    keys = _key(frame, columns)
    firsts = frame.loc[~keys.duplicated(), columns]
    order = sorted(firsts.itertuples(index=False), key=lambda values: tuple(map(sort_key, values)))
    for values in order:
        mask = keys == "|".join(map(str, values))
        yield tuple(values), frame[mask]


def sort_key(value):
    """An order for mixed parameter values: None first, then numbers, then strings."""
    if missing(value):
        return (0, 0.0, "")
    if isinstance(value, (bool, int, float, np.number)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def summarise(frame: pd.DataFrame, group_cols, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and CI of ``metric`` per group, with counts.

    Args:
        frame: result runs (:func:`analysis.runs.results`).
        group_cols: columns that define a group (e.g. ``["arm", "data.batch_size"]``).
        metric: the metric column.
        confidence: CI coverage.

    Returns:
        One row per group: the group columns, ``mean``, ``low``, ``high``, ``n`` (runs with
        a value), ``n_runs``, ``n_diverged``; groups ordered by :func:`sort_key`. Empty
        when ``metric`` is not a column.
    """
    group_cols = list(group_cols)
    columns = group_cols + ["mean", "low", "high", "n", "n_runs", "n_diverged"]
    if metric not in frame.columns:
        return pd.DataFrame(columns=columns)
    rows = []
    for values, rows_of_group in group_rows(frame, group_cols):
        mean, low, high, n = mean_ci(rows_of_group[metric], confidence)
        diverged = int((rows_of_group.get("outcome") == DIVERGED).sum())
        rows.append([*values, mean, low, high, n, len(rows_of_group), diverged])
    return pd.DataFrame(rows, columns=columns)


def paired_delta(
    frame: pd.DataFrame,
    by: str,
    baseline_arm,
    metric: str,
    pair_on: str = "seed",
    *,
    match=(),
    group=None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Paired difference of each arm against a baseline arm, with a CI over pairs.

    A pair is one run of an arm and the baseline run with the same ``pair_on`` value
    (the seed) and the same values in ``match`` (the other grid axes); Δ = arm − baseline.

    Example:
        >>> paired_delta(df, "arm", "layer", "test/top1", match=["data.batch_size"])

    Args:
        frame: result runs.
        by: the column naming the arm (or any side of a comparison).
        baseline_arm: the value of ``by`` to subtract.
        metric: the metric column.
        pair_on: the replicate column both runs of a pair share.
        match: further columns both runs of a pair share.
        group: columns to report Δ per (a subset of ``match``); None means ``match`` (one
            row per grid point), ``()`` pools all pairs of an arm.
        confidence: CI coverage.

    Returns:
        One row per arm other than the baseline (and per group): ``by``, the group
        columns, ``baseline``, ``mean`` (mean Δ), ``low``, ``high``, ``n_pairs``,
        ``n_diverged`` (pairs in which either run diverged), ``arm_mean`` and
        ``baseline_mean`` (means over the same pairs).
    """
    match = list(match)
    group = match if group is None else list(group)
    columns = [by, *group, "baseline", "mean", "low", "high", "n_pairs", "n_diverged",
               "arm_mean", "baseline_mean"]
    if metric not in frame.columns or frame.empty:
        return pd.DataFrame(columns=columns)
    pair_cols = [pair_on, *match]
    keep = [by, *pair_cols, metric, "outcome"] if "outcome" in frame.columns else [by, *pair_cols, metric]
    tidy = frame[[c for c in dict.fromkeys(keep)]].assign(_pair=_key(frame, pair_cols))
    tidy = tidy.assign(_diverged=tidy.get("outcome", pd.Series("", index=tidy.index)) == DIVERGED)
    base = tidy[tidy[by].map(str) == str(baseline_arm)][["_pair", metric, "_diverged"]]
    rows = []
    for (arm,), arm_rows in group_rows(tidy[tidy[by].map(str) != str(baseline_arm)], [by]):
        pairs = arm_rows.merge(base, on="_pair", suffixes=("", "_base"))
        pairs = pairs.assign(
            _delta=pd.to_numeric(pairs[metric], errors="coerce")
            - pd.to_numeric(pairs[f"{metric}_base"], errors="coerce")
        ).dropna(subset=["_delta"])
        for values, group_pairs in group_rows(pairs, group):
            mean, low, high, n = mean_ci(group_pairs["_delta"], confidence)
            diverged = int((group_pairs["_diverged"] | group_pairs["_diverged_base"]).sum())
            rows.append([arm, *values, baseline_arm, mean, low, high, n, diverged,
                         float(pd.to_numeric(group_pairs[metric]).mean()),
                         float(pd.to_numeric(group_pairs[f"{metric}_base"]).mean())])
    return pd.DataFrame(rows, columns=columns)

