"""How a report writes a value, a score and an interval: one place, so every table, claim
and figure label prints them alike."""

from __future__ import annotations

from analysis.stats import missing

PERCENT_METRICS = ("top1", "top5")
"""Metrics whose name contains one of these are fractions, printed as percent."""


def value(item) -> str:
    """A param value in a table cell: ``None`` (also for NaN), numbers in ``g`` format."""
    if missing(item):
        return "None"
    return f"{item:g}" if isinstance(item, float) else str(item)


def score(item) -> str:
    """An optimised value (a trial's metric) to four decimals, ``-`` when there is none."""
    return "-" if missing(item) else f"{item:.4f}"


def format_ci(mean: float, low: float, high: float, n: int, *, scale: float = 1.0,
              digits: int = 3, signed: bool = False) -> str:
    """``mean [low, high]`` scaled (e.g. ×100 for points), or ``mean (n=1, no CI)``.

    Example:
        >>> format_ci(0.95, 0.9, 1.0, 3, scale=100, digits=1)
        '95.0 [90.0, 100.0]'
    """
    if n == 0:
        return "no data"
    sign = "+" if signed else ""
    text = f"{mean * scale:{sign}.{digits}f}"
    if low != low:
        return f"{text} (n={n}, no CI)"
    return f"{text} [{low * scale:{sign}.{digits}f}, {high * scale:{sign}.{digits}f}]"


def metric_ci(metric: str, mean, low, high, n, *, signed: bool = False) -> str:
    """The interval of a metric in a results table: accuracies in percent to one decimal
    (``95.0 [90.0, 100.0] %``), anything else (step times) to two decimals."""
    percent = any(name in metric for name in PERCENT_METRICS)
    return format_ci(mean, low, high, int(n), scale=100.0 if percent else 1.0, digits=1 if percent else 2,
                     signed=signed) + (" %" if percent and n else "")


def delta_ci(row, *, scale: float = 100.0, unit: str = "pt") -> str:
    """A paired Δ (a row of :func:`analysis.stats.paired_delta`) as a claim prints it:
    ``+1.20 [+0.40, +2.00] pt, n=3 pairs, 0 with a diverged run``."""
    text = format_ci(row["mean"], row["low"], row["high"], int(row["n_pairs"]), scale=scale,
                     digits=2 if scale == 100.0 else 1, signed=True)
    return f"{text} {unit}, n={int(row['n_pairs'])} pairs, {int(row['n_diverged'])} with a diverged run"
