"""How reports write values and intervals: one module, checked against hand-written text."""

import math

import pandas as pd

from analysis.formats import delta_ci, format_ci, metric_ci, score, value


def test_format_ci():
    assert format_ci(0.95, 0.9, 1.0, 3, scale=100, digits=1) == "95.0 [90.0, 100.0]"
    assert format_ci(0.02, -0.01, 0.05, 3, scale=100, digits=1, signed=True) == "+2.0 [-1.0, +5.0]"
    assert format_ci(0.5, float("nan"), float("nan"), 1) == "0.500 (n=1, no CI)"
    assert format_ci(float("nan"), float("nan"), float("nan"), 0) == "no data"


def test_metric_ci_prints_accuracies_in_percent_and_times_as_they_are():
    assert metric_ci("test/top1", 0.9, 0.85, 0.95, 3) == "90.0 [85.0, 95.0] %"
    assert metric_ci("val/top5", 0.01, -0.02, 0.04, 3, signed=True) == "+1.0 [-2.0, +4.0] %"
    assert metric_ci("time/step_ms", 12.345, 11.0, 13.5, 3) == "12.35 [11.00, 13.50]"
    assert metric_ci("test/top1", math.nan, math.nan, math.nan, 0) == "no data"


def test_delta_ci_names_pairs_and_divergences():
    row = pd.Series({"mean": 0.012, "low": 0.004, "high": 0.02, "n_pairs": 3, "n_diverged": 1})
    assert delta_ci(row) == "+1.20 [+0.40, +2.00] pt, n=3 pairs, 1 with a diverged run"
    assert delta_ci(row, scale=1.0, unit="ms") == "+0.0 [+0.0, +0.0] ms, n=3 pairs, 1 with a diverged run"


def test_value_and_score():
    assert [value(v) for v in (None, float("nan"), 0.010, 256, "off", ["classifier.weight"])] == [
        "None", "None", "0.01", "256", "off", "['classifier.weight']"]
    assert [score(v) for v in (None, float("nan"), 0.94423)] == ["-", "-", "0.9442"]
