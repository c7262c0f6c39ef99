import math

import numpy as np
import pandas as pd
import pytest

from analysis.stats import bootstrap_ci, mean_ci, missing, paired_delta, sort_key, summarise

T_975_4 = 2.7764451  # Student t quantile, 4 degrees of freedom (tables)
T_975_2 = 4.3026527  # 2 degrees of freedom


def test_mean_ci_matches_hand_computed_t_interval():
    mean, low, high, n = mean_ci([1, 2, 3, 4, 5])
    half = T_975_4 * math.sqrt(2.5) / math.sqrt(5)  # = 1.9632
    assert (mean, n) == (3.0, 5)
    assert low == pytest.approx(3 - half, abs=1e-6)
    assert high == pytest.approx(3 + half, abs=1e-6)
    assert half == pytest.approx(1.963, abs=1e-3)


def test_mean_ci_drops_missing_values_and_handles_tiny_samples():
    assert mean_ci([1.0, None, float("nan"), 3.0])[3] == 2
    mean, low, high, n = mean_ci([0.7])
    assert (mean, n) == (0.7, 1) and math.isnan(low) and math.isnan(high)
    assert mean_ci([])[3] == 0 and math.isnan(mean_ci([])[0])


def test_bootstrap_ci_is_deterministic_and_near_the_normal_interval():
    first = bootstrap_ci([1, 2, 3, 4, 5], seed=0)
    assert first == bootstrap_ci([1, 2, 3, 4, 5], seed=0)
    mean, low, high, n = first
    # normal approximation of the bootstrap mean: 3 ± 1.96·sqrt(2/5) = [1.76, 4.24]
    assert (mean, n) == (3.0, 5)
    assert 1.4 < low < 2.2 and 3.8 < high < 4.6


def _pairs_frame():
    rows = []
    for batch, deltas in ((256, (0.1, 0.2, 0.3)), (1024, (-0.1, -0.1, -0.1))):
        for seed, delta in enumerate(deltas):
            rows.append({"arm": "base", "seed": seed, "data.batch_size": batch, "acc": 0.5, "outcome": "completed"})
            rows.append({"arm": "new", "seed": seed, "data.batch_size": batch, "acc": 0.5 + delta,
                         "outcome": "diverged" if (batch, seed) == (1024, 2) else "completed"})
    rows.append({"arm": "new", "seed": 7, "data.batch_size": 256, "acc": 0.9, "outcome": "completed"})  # no partner
    return pd.DataFrame(rows)


def test_paired_delta_per_grid_point_by_hand():
    delta = paired_delta(_pairs_frame(), "arm", "base", "acc", match=["data.batch_size"])
    at_256 = delta[delta["data.batch_size"] == 256].iloc[0]
    half = T_975_2 * 0.1 / math.sqrt(3)  # sd of (0.1, 0.2, 0.3) is 0.1
    assert at_256["arm"] == "new" and at_256["n_pairs"] == 3
    assert at_256["mean"] == pytest.approx(0.2)
    assert at_256["high"] - at_256["mean"] == pytest.approx(half)
    at_1024 = delta[delta["data.batch_size"] == 1024].iloc[0]
    assert at_1024["mean"] == pytest.approx(-0.1) and at_1024["n_diverged"] == 1


def test_paired_delta_pooled_over_grid_points():
    pooled = paired_delta(_pairs_frame(), "arm", "base", "acc", match=["data.batch_size"], group=())
    assert len(pooled) == 1
    assert pooled.iloc[0]["n_pairs"] == 6
    assert pooled.iloc[0]["mean"] == pytest.approx((0.6 - 0.3) / 6)


def test_summarise_keeps_none_as_its_own_group_first():
    frame = pd.DataFrame({"agc.clipping": [None, None, 0.01, 0.01],
                          "acc": [0.2, 0.4, 0.9, 0.7], "outcome": ["diverged", "completed", "completed", "completed"]})
    table = summarise(frame, ["agc.clipping"], "acc")
    assert len(table) == 2
    assert table.iloc[0]["agc.clipping"] is None or math.isnan(table.iloc[0]["agc.clipping"])
    assert table.iloc[0]["mean"] == pytest.approx(0.3) and table.iloc[0]["n_diverged"] == 1
    assert table.iloc[1]["mean"] == pytest.approx(0.8)



def test_missing_values_sort_first():
    assert [missing(v) for v in (None, float("nan"), np.float32("nan"), 0.0, "off", [])] == [True, True, True,
                                                                                           False, False, False]
    assert sorted([0.04, "layer", None, 0.01], key=sort_key) == [None, 0.01, 0.04, "layer"]
