"""The verdict rules, each judged through its claim in the paper-result table on frames
built by hand, so the expected verdict and numbers follow from the rule's text."""

import pandas as pd
import pytest

from analysis.reference import reference
from analysis.rules import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, RuleContext

SEEDS = (0, 1, 2)


def _run(seed, accuracy, outcome="completed", **params):
    wobble = 0.004 * (seed - 1)
    return {"seed": seed, "outcome": outcome, "val/top1": accuracy + wobble, "test/top1": accuracy - wobble,
            **params}


def _claim(key, claim_id):
    return next(c for c in reference(key).claims if c.id == claim_id)


def _judge(key, claim_id, rows, grid_keys=()):
    return _claim(key, claim_id).judge(pd.DataFrame(rows), RuleContext(grid_keys=tuple(grid_keys)))


@pytest.mark.parametrize("unit, layer, expected", [(0.95, 0.90, SUPPORTED), (0.90, 0.95, NOT_SUPPORTED),
                                                   (0.90, 0.90, INCONCLUSIVE)])
def test_unit_vs_layer(unit, layer, expected):
    rows = []
    for batch in (256, 1024):
        for seed in SEEDS:
            rows.append(_run(seed, unit + 0.01 * (seed == 1 and unit == layer), **{"agc.mode": "unit", "data.batch_size": batch}))
            rows.append(_run(seed, layer, **{"agc.mode": "layer", "data.batch_size": batch}))
    verdict = _judge("unit-vs-layer", "unit-beats-layer", rows, ["data.batch_size"])
    assert verdict.verdict == expected
    # two batch sizes per seed, averaged per seed: the interval is over the 3 seeds, the replicates
    assert "n=3 pairs" in next(iter(verdict.numbers.values()))


def test_missing_column_is_inconclusive_with_a_reason():
    verdict = _judge("unit-vs-layer", "unit-beats-layer", [_run(0, 0.9)])
    assert verdict.verdict == INCONCLUSIVE and "agc.mode" in verdict.reason


def test_final_layer_reads_agc_exclude():
    rows = [_run(s, 0.95, **{"agc.exclude": ["head.fc.weight"]}) for s in SEEDS]
    rows += [_run(s, 0.80 + 0.01 * s, **{"agc.exclude": []}) for s in SEEDS]
    assert _judge("clip-final-layer", "do-not-clip-classifier", rows).verdict == SUPPORTED


def _fig2b_rows(top_diverges: bool):
    accuracy = {(256, 0.01): 0.90, (256, 0.16): 0.96, (4096, 0.01): 0.95, (4096, 0.16): 0.10 if top_diverges else 0.94}
    return [_run(s, a, "diverged" if a < 0.2 else "completed", **{"agc.clipping": lam, "data.batch_size": b})
            for (b, lam), a in accuracy.items() for s in SEEDS]


def test_fig2b_supported_when_large_lambda_diverges_and_best_lambda_falls():
    rows = _fig2b_rows(top_diverges=True)
    grid = ["agc.clipping", "data.batch_size"]
    large = _judge("fig2b", "fig2b-large-lambda", rows, grid)
    assert large.verdict == SUPPORTED and "3 of 3 runs diverged" in large.numbers["largest λ"]
    falls = _judge("fig2b", "fig2b-best-lambda-falls", rows, grid)
    assert falls.verdict == SUPPORTED and "best λ 0.16" in falls.numbers["at batch 256"]


def test_fig2b_not_supported_when_large_lambda_only_loses_a_point():
    verdict = _judge("fig2b", "fig2b-large-lambda", _fig2b_rows(top_diverges=False), ["agc.clipping", "data.batch_size"])
    assert verdict.verdict == NOT_SUPPORTED  # loses 1 point, CI above −5 points, nothing diverged


def _fig2a_rows(agc_accuracy):
    rows = []
    for batch, (bn, nf) in {256: (0.95, 0.94), 4096: (0.95, 0.30)}.items():
        for s in SEEDS:
            rows.append(_run(s, bn, **{"model.name": "bn_resnet_small", "agc.clipping": None, "data.batch_size": batch}))
            rows.append(_run(s, nf, **{"model.name": "nf_resnet_small", "agc.clipping": None, "data.batch_size": batch}))
            rows.append(_run(s, agc_accuracy, **{"model.name": "nf_resnet_small", "agc.clipping": 0.01, "data.batch_size": batch}))
            rows.append(_run(s, 0.5, **{"model.name": "nf_resnet_small", "agc.clipping": 0.16, "data.batch_size": batch}))
    return rows


def test_fig2a_claims():
    assert _judge("fig2a", "fig2a-nf-degrades", _fig2a_rows(0.95), ["data.batch_size"]).verdict == SUPPORTED
    recovered = _judge("fig2a", "fig2a-agc-recovers", _fig2a_rows(0.953), ["data.batch_size"])
    assert recovered.verdict == SUPPORTED and any("λ=0.01" in key for key in recovered.numbers)
    assert _judge("fig2a", "fig2a-agc-recovers", _fig2a_rows(0.85), ["data.batch_size"]).verdict == NOT_SUPPORTED


def test_table6_accuracy_and_step_time():
    rows = [_run(s, 0.95, **{"model.name": "nf_resnet_small", "time/step_ms": 10.0 + s}) for s in SEEDS]
    rows += [_run(s, 0.951, **{"model.name": "bn_resnet_small", "time/step_ms": 14.0 + s * 1.1}) for s in SEEDS]
    assert _judge("table6", "nf-matches-bn", rows).verdict == SUPPORTED
    slower = _judge("table6", "bn-slower", rows)
    assert slower.verdict == SUPPORTED and slower.numbers["step time BN / NF"] == "15.1 ms / 11.0 ms = 1.37×"  # (14+15.1+16.2)/3 over 11


def test_sam_fraction_cost_and_accuracy():
    rows = []
    for mode, accuracy, ms in (("off", 0.93, 10.0), ("full", 0.95, 20.0), ("fraction", 0.951, 13.0)):
        rows += [_run(s, accuracy, **{"sam.mode": mode, "time/step_ms": ms + 0.2 * s * (mode != "off")}) for s in SEEDS]
    assert _judge("table3-sam", "sam-fraction-accuracy", rows).verdict == SUPPORTED
    cost = _judge("table3-sam", "sam-fraction-cost", rows)
    assert cost.verdict == SUPPORTED
    # full: (20 + 20.2 + 20.4) / 3 = 20.2 ms, fraction 13.2 ms, off 10 ms
    assert cost.numbers["step time vs SAM off"] == "full 20.2 ms / 10.0 ms = 2.02×; fraction 13.2 ms / 10.0 ms = 1.32×"
    assert cost.numbers["Δ time/step_ms (full − fraction)"].startswith("+7.0 [+7.0, +7.0] ms, n=3 pairs")


def test_spp_claims():
    rows = []
    for block, stage in enumerate((0, 0, 0, 1, 1, 1)):
        bn_var = 1 + (block % 3)  # grows within a stage, resets at the transition
        rows.append({"model": "bn_resnet", "block": block, "stage": stage, "avg_channel_squared_mean": 0.5, "avg_channel_variance": bn_var,
                     "residual_variance": 1.0})
        rows.append({"model": "nf_resnet", "block": block, "stage": stage, "avg_channel_squared_mean": 0.01, "avg_channel_variance": 1.0,
                     "residual_variance": 1.0})
    assert _judge("spp", "spp-bn-resets", rows).verdict == SUPPORTED
    assert _judge("spp", "spp-nf-no-mean-shift", rows).verdict == SUPPORTED


def test_no_results_is_inconclusive():
    verdict = _claim("fig2b", "fig2b-large-lambda").judge(pd.DataFrame(), RuleContext())
    assert verdict.verdict == INCONCLUSIVE and verdict.reason == "no results yet"


def _spp_rows(models: dict[str, tuple[str | None, float, list[float]]]) -> list[dict]:
    """Signal-propagation rows: model → (norm, squared mean, variance per block); blocks 0-2
    are stage 0, blocks 3-5 stage 1."""
    return [{"model": name, "norm": norm, "block": block, "stage": block // 3,
             "avg_channel_squared_mean": squared_mean, "avg_channel_variance": variance, "residual_variance": 1.0}
            for name, (norm, squared_mean, variances) in models.items() for block, variance in enumerate(variances)]


def test_spp_claims_read_the_recorded_norm_not_the_name():
    rows = _spp_rows({"twin_a": ("bn", 0.5, [1, 2, 3, 1, 2, 3]),  # grows within a stage, drops at the transition
                      "twin_b": ("nf", 0.01, [1.0] * 6),
                      "twin_c": ("nf_plain", 4.0, [1.0] * 6)})
    resets = _judge("spp", "spp-bn-resets", rows)
    assert resets.verdict == SUPPORTED and resets.numbers["transitions where variance drops"] == "1 of 1"
    shift = _judge("spp", "spp-nf-no-mean-shift", rows)
    assert shift.verdict == SUPPORTED
    assert shift.numbers == {"max over NF blocks of avg squared mean / avg variance": "0.010",
                             "the same without weight standardisation": "4.000"}


def test_spp_claims_not_supported():
    rows = _spp_rows({"bn_resnet": (None, 0.5, [3, 2, 1, 6, 5, 4]),  # falls in every stage
                      "nf_resnet": (None, 2.0, [1.0] * 6)})  # the mean shift exceeds the variance
    assert _judge("spp", "spp-bn-resets", rows).verdict == NOT_SUPPORTED
    assert _judge("spp", "spp-nf-no-mean-shift", rows).verdict == NOT_SUPPORTED


def test_bn_and_nf_sides_come_from_model_norm_when_the_name_is_the_same():
    rows = [_run(s, 0.95, **{"model.name": "nf_resnet_small", "model.norm": "nf"}) for s in SEEDS]
    rows += [_run(s, 0.95 + 0.002 * s, **{"model.name": "nf_resnet_small", "model.norm": "bn"}) for s in SEEDS]
    verdict = _judge("table6", "nf-matches-bn", rows)
    assert verdict.verdict == SUPPORTED and "n=3 pairs" in verdict.numbers["Δ test/top1 (NF − BN)"]


def test_a_claim_whose_data_was_not_given_is_inconclusive():
    verdict = _claim("table6", "spp-bn-resets").judge(None, RuleContext())
    assert verdict.verdict == INCONCLUSIVE and verdict.reason == "no signal-propagation data given"


def _final_layer_rows(batch, lr=0.1):
    """clip-final-layer at one paper batch: λ 0.01, the digits mapping (real batch 128, 300 steps)."""
    params = {"model.name": "nf_resnet_small", "model.norm": "nf", "agc.clipping": 0.01, "optim.lr": lr,
              "data.batch_size": batch, "data.device_batch_size": 128, "train.steps": 300}
    rows = [_run(s, 0.82, arm="not-clipped", **params, **{"agc.exclude": ["classifier.weight"]}) for s in SEEDS]
    return rows + [_run(s, 0.14 + 0.01 * s, arm="clipped", **params, **{"agc.exclude": []}) for s in SEEDS]


def test_a_claim_resting_on_floor_bound_runs_says_so_instead_of_counting_them():
    """At paper batch 1024 (lr 0.4), λ 0.01 and 300 steps the gains can reach 0.061 at most:
    both arms sit on the ε floor, so their 68-point gap is no evidence about the classifier."""
    floor_bound = _judge("clip-final-layer", "do-not-clip-classifier", _final_layer_rows(1024), ["data.batch_size"])
    assert floor_bound.verdict == INCONCLUSIVE
    assert floor_bound.reason.startswith("floor-bound at this budget (with them the rule says supported)")
    assert floor_bound.limit.startswith("floor-bound at this budget")
    assert "clipped data.batch_size=1024 (reachable gain ≤ 0.061)" in floor_bound.left_out
    both = _final_layer_rows(1024) + _final_layer_rows(4096)  # at lr 1.6 the gains escape: judged there alone
    verdict = _judge("clip-final-layer", "do-not-clip-classifier", both, ["data.batch_size"])
    assert verdict.verdict == SUPPORTED and "data.batch_size=1024" in verdict.left_out
    assert [cell.text() for cell in verdict.comparisons[0].cells] == [
        "clipped data.batch_size=4096", "not-clipped data.batch_size=4096"]


def test_a_claim_about_every_batch_size_judged_at_one_says_so():
    rows = [row for row in _fig2a_rows(0.953) if row["data.batch_size"] == 4096]
    verdict = _judge("fig2a", "fig2a-agc-recovers", rows, ["data.batch_size"])
    assert verdict.verdict == INCONCLUSIVE and verdict.reason == "judged at one batch size only (supported there)"
    assert verdict.limit == "one batch size ran: the claim is about every batch size"
    failing = [row for row in _fig2a_rows(0.85) if row["data.batch_size"] == 4096]
    assert _judge("fig2a", "fig2a-agc-recovers", failing, ["data.batch_size"]).verdict == NOT_SUPPORTED  # one suffices


def test_a_capped_paper_batch_is_named_by_the_lr_it_set_and_the_batch_that_ran():
    verdict = _judge("clip-final-layer", "do-not-clip-classifier", _final_layer_rows(4096), ["data.batch_size"])
    assert list(verdict.numbers) == [
        "Δ test/top1 (not clipped − clipped at lr 0.1·4096/256 = 1.6 (paper batch 4096), real batch 128)"]


def _budget_rows(accuracy):
    """λ {0.01, 0.16} at paper batch 256 (lr 0.1) per step budget, 3 seeds."""
    return [_run(s, a, **{"agc.clipping": lam, "train.steps": steps, "data.batch_size": 256, "optim.lr": 0.1,
                          "model.name": "nf_resnet_small", "model.norm": "nf"})
            for (steps, lam), a in accuracy.items() for s in SEEDS]


@pytest.mark.parametrize("long_small, expected, gone", [(0.97, SUPPORTED, "2400 steps"),
                                                        (0.85, NOT_SUPPORTED, "no budget that ran")])
def test_budget_penalty_counts_floor_bound_runs_and_names_where_it_is_gone(long_small, expected, gone):
    rows = _budget_rows({(300, 0.01): 0.79, (300, 0.16): 0.97, (2400, 0.01): long_small, (2400, 0.16): 0.97})
    verdict = _judge("clip-budget", "small-lambda-penalty-shrinks", rows, ["train.steps", "agc.clipping"])
    assert verdict.verdict == expected
    assert verdict.numbers["the small-λ penalty is gone (CI above −1 pt) from"] == gone
    # λ 0.01 at 300 steps is floor-bound (reachable gain 0.0016): here it is the evidence, not left out
    assert verdict.numbers["reachable |SkipInit gain| at λ 0.01, 300 steps"] == "0.0016"
    assert not verdict.left_out


def test_budget_penalty_needs_two_budgets():
    rows = _budget_rows({(300, 0.01): 0.79, (300, 0.16): 0.97})
    verdict = _judge("clip-budget", "small-lambda-penalty-shrinks", rows, ["train.steps", "agc.clipping"])
    assert verdict.verdict == INCONCLUSIVE and "one step budget" in verdict.limit


def test_table6_leaves_nf_without_scaled_ws_on_neither_side():
    # Table 6 sets NFNets (Scaled WS) against BN twins; the unscaled NF net is [I]'s control.
    rows = [_run(s, 0.95, **{"model.name": "nf_resnet_small", "model.norm": "nf", "time/step_ms": 10.0}) for s in SEEDS]
    rows += [_run(s, 0.951, **{"model.name": "nf_resnet_small", "model.norm": "bn", "time/step_ms": 14.0 + s})
             for s in SEEDS]
    rows += [_run(s, 0.30, **{"model.name": "nf_resnet_small", "model.norm": "nf_plain", "time/step_ms": 30.0})
             for s in SEEDS]
    verdict = _judge("table6", "nf-matches-bn", rows)
    assert verdict.verdict == SUPPORTED  # pooled with the unscaled net, NF would lose by ~30 points
    assert verdict.comparisons[0].row["mean"] == pytest.approx(-0.001, abs=1e-9)
    assert _judge("table6", "bn-slower", rows).numbers["step time BN / NF"] == "15.0 ms / 10.0 ms = 1.50×"
