"""How a report writes a value, a score and an interval: one place, so every table, claim
and figure label prints them alike."""

from __future__ import annotations

import math

from analysis.stats import is_fraction, missing


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
    return f"{text} [{_bound(low, scale, sign, digits)}, {_bound(high, scale, sign, digits)}]"


def _bound(item: float, scale: float, sign: str, digits: int) -> str:
    """An interval's end; an unbounded one (a confidence sequence that excludes nothing yet) as ±∞."""
    if math.isinf(item):
        return "-∞" if item < 0 else f"{sign}∞"
    return f"{item * scale:{sign}.{digits}f}"


def metric_ci(metric: str, mean, low, high, n, *, signed: bool = False) -> str:
    """The interval of a metric in a results table: accuracies in percent to one decimal
    (``95.0 [90.0, 100.0] %``) and their differences (``signed``) in points (``+1.5 [+0.2,
    +2.8] pt``), anything else (step times) to two decimals."""
    percent = is_fraction(metric)
    unit = (" pt" if signed else " %") if percent and n else ""
    return format_ci(mean, low, high, int(n), scale=100.0 if percent else 1.0, digits=1 if percent else 2,
                     signed=signed) + unit


def delta_ci(row, *, scale: float = 100.0, unit: str = "pt") -> str:
    """A paired Δ (a row of :func:`analysis.stats.paired_delta`) as a claim prints it:
    ``+1.20 [+0.40, +2.00] pt, n=3 pairs, 0 with a diverged run``."""
    text = format_ci(row["mean"], row["low"], row["high"], int(row["n_pairs"]), scale=scale,
                     digits=2 if scale == 100.0 else 1, signed=True)
    return f"{text} {unit}, n={int(row['n_pairs'])} pairs, {int(row['n_diverged'])} with a diverged run"


def sequence_ci(row, *, scale: float = 100.0, unit: str = "pt") -> str:
    """The anytime-valid confidence sequence of a paired Δ: ``[+0.4, +2.0] pt`` or ``[-∞, +∞] pt``."""
    if int(row["n_pairs"]) == 0 or row["cs_low"] != row["cs_low"]:
        return "none"
    digits = 1 if scale == 100.0 else 2
    return f"[{_bound(row['cs_low'], scale, '+', digits)}, {_bound(row['cs_high'], scale, '+', digits)}] {unit}"
