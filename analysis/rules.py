"""The rules that judge a paper claim on our runs, and their verdicts.

A rule takes the result runs (or another frame the claim names, e.g. signal-propagation
rows) and a :class:`RuleContext`, and returns a :class:`Verdict`: ``supported``, ``not
supported`` or ``inconclusive at this scale`` with the numbers it used; a missing column,
arm or grid value gives ``inconclusive`` with the reason. Which claim each rule judges, and
the rule in words, is in :mod:`analysis.reference`.

Conventions of every rule:
- sides of a comparison are read from params (:mod:`analysis.roles`), not arm names;
- pairs share the seed and every other grid value (:func:`analysis.stats.paired_delta`);
- selection (best λ) uses the validation metric, claims use ``test/top1``;
- intervals are paired 95% Student-t intervals over pairs; accuracy is in points (×100);
- diverged runs enter with their recorded accuracy and are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis import roles
from analysis.formats import delta_ci
from analysis.stats import group_rows, mean_ci, paired_delta
from study.record.tags import DIVERGED

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive at this scale"

POINT = 0.01  # one top-1 point as a fraction


@dataclass(frozen=True)
class RuleContext:
    """What a rule needs to know about the study besides its runs."""

    grid_keys: tuple[str, ...] = ()
    select_metric: str = roles.VAL_METRIC
    test_metric: str = roles.TEST_METRIC


@dataclass(frozen=True)
class Verdict:
    """A rule's outcome: the verdict, the numbers it used and, if inconclusive, why."""

    verdict: str
    numbers: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def _missing(frame: pd.DataFrame, *columns: str) -> Verdict | None:
    absent = [c for c in columns if c not in frame.columns]
    return Verdict(INCONCLUSIVE, reason=f"no column {', '.join(absent)} in the runs") if absent else None


def _paired(frame, side: pd.Series, arm, baseline, metric, context, *, defining=(), group=()):
    """Paired Δ(arm − baseline) of ``metric`` on the sides ``side`` labels, pooled over
    the grid points unless ``group`` is given."""
    match = [k for k in context.grid_keys if k in frame.columns and k not in defining]
    labelled = frame.assign(_side=side.values)
    return paired_delta(labelled, "_side", baseline, metric, match=match, group=list(group)).query(
        "_side == @arm"
    )


def _two_sided(frame, side, arm, baseline, metric, context, *, defining, label,
               scale=100.0, unit="pt") -> Verdict:
    """Supported if the paired CI of Δ(arm − baseline) lies above 0, not supported if
    below 0, otherwise inconclusive."""
    found = set(side.unique())
    if not {arm, baseline} <= found:
        return Verdict(INCONCLUSIVE, reason=f"need runs of both {arm!r} and {baseline!r}; found {sorted(found)}")
    delta = _paired(frame, side, arm, baseline, metric, context, defining=defining)
    if delta.empty or delta.iloc[0]["n_pairs"] < 2:
        return Verdict(INCONCLUSIVE, reason="fewer than 2 pairs (same seed and grid values)")
    row = delta.iloc[0]
    numbers = {f"Δ {metric} ({label})": delta_ci(row, scale=scale, unit=unit)}
    if row["low"] > 0:
        return Verdict(SUPPORTED, numbers)
    if row["high"] < 0:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "the CI contains 0")


def _no_worse(row, numbers, margin=POINT) -> Verdict:
    """Equivalence-style: supported if the CI's low end is above −margin, not supported
    if its high end is below −margin."""
    if row["n_pairs"] < 2:
        return Verdict(INCONCLUSIVE, numbers, "fewer than 2 pairs")
    if row["low"] > -margin:
        return Verdict(SUPPORTED, numbers)
    if row["high"] < -margin:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, f"the CI reaches below −{margin * 100:g} pt and above it")


# -- Fig. 2b: clipping threshold against batch size --------------------------------------

def fig2b_large_lambda(frame, context) -> Verdict:
    if absent := _missing(frame, roles.CLIPPING, roles.BATCH, context.select_metric, context.test_metric):
        return absent
    clipped = frame[frame[roles.CLIPPING].notna()]
    if clipped[roles.CLIPPING].nunique() < 2:
        return Verdict(INCONCLUSIVE, reason="fewer than two λ values")
    largest_batch = max(clipped[roles.BATCH])
    at_batch = clipped[clipped[roles.BATCH] == largest_batch]
    largest = max(at_batch[roles.CLIPPING])
    best = roles.best_option(at_batch, roles.CLIPPING, context.select_metric)
    best_lambda = best[roles.CLIPPING].iloc[0]
    top = at_batch[at_batch[roles.CLIPPING] == largest]
    diverged = int((top["outcome"] == DIVERGED).sum())
    numbers = {
        "batch size": str(largest_batch),
        "largest λ": f"{largest:g}: {diverged} of {len(top)} runs diverged",
        f"best λ on {context.select_metric}": f"{best_lambda:g}",
    }
    if diverged * 2 >= len(top):
        return Verdict(SUPPORTED, numbers)
    side = frame[roles.CLIPPING].map(lambda v: {largest: "largest", best_lambda: "best"}.get(v, "other"))
    if best_lambda == largest:
        return Verdict(NOT_SUPPORTED, numbers, "the largest λ is the best λ")
    in_batch = frame[roles.BATCH] == largest_batch
    delta = _paired(frame[in_batch], side[in_batch], "largest", "best", context.test_metric, context,
                    defining=(roles.CLIPPING,))
    if delta.empty:
        return Verdict(INCONCLUSIVE, numbers, "no seed has both λ values")
    row = delta.iloc[0]
    numbers[f"Δ {context.test_metric} (largest − best λ)"] = delta_ci(row)
    if row["n_pairs"] >= 2 and row["high"] < 0 and row["mean"] <= -5 * POINT:
        return Verdict(SUPPORTED, numbers)
    if row["n_pairs"] >= 2 and diverged == 0 and row["low"] > -5 * POINT:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "the loss is not clearly above or below 5 points")


def fig2b_best_lambda_falls(frame, context) -> Verdict:
    if absent := _missing(frame, roles.CLIPPING, roles.BATCH, context.select_metric):
        return absent
    clipped = frame[frame[roles.CLIPPING].notna()]
    best = roles.best_option(clipped, roles.CLIPPING, context.select_metric, by=[roles.BATCH])
    per_batch = [(values[0], rows[roles.CLIPPING].iloc[0], rows["selected_mean"].iloc[0])
                 for values, rows in group_rows(best, [roles.BATCH])]
    if len(per_batch) < 2:
        return Verdict(INCONCLUSIVE, reason="fewer than two batch sizes")
    numbers = {f"batch {b}": f"best λ {lam:g} ({context.select_metric} {mean * 100:.1f}%)"
               for b, lam, mean in per_batch}
    lambdas = [lam for _, lam, _ in per_batch]
    if lambdas[-1] > lambdas[0]:
        return Verdict(NOT_SUPPORTED, numbers)
    if lambdas[-1] < lambdas[0] and all(a >= b for a, b in zip(lambdas, lambdas[1:])):
        return Verdict(SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "best λ is flat, or rises and falls between the ends")


# -- Fig. 2a: batch-size scaling ----------------------------------------------------------

def _fig2a_frames(frame, context):
    family = roles.agc_family(frame)
    bn, nf = frame[family == roles.BN], frame[family == roles.NF]
    agc = roles.best_option(frame[family == roles.NF_AGC], roles.CLIPPING, context.select_metric,
                            by=[roles.BATCH])
    return bn, nf, agc


def _per_batch_delta(arm_rows, bn_rows, context, batch):
    both = pd.concat([arm_rows.assign(_side="arm"), bn_rows.assign(_side="bn")])
    both = both[both[roles.BATCH] == batch]
    return _paired(both, both["_side"], "arm", "bn", context.test_metric, context,
                   defining=(roles.MODEL, roles.CLIPPING))


def fig2a_nf_degrades(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, roles.BATCH, context.test_metric):
        return absent
    bn, nf, _ = _fig2a_frames(frame, context)
    if bn.empty or nf.empty:
        return Verdict(INCONCLUSIVE, reason="need BN runs and NF runs without clipping")
    batch = max(set(bn[roles.BATCH]) & set(nf[roles.BATCH]), default=None)
    if batch is None:
        return Verdict(INCONCLUSIVE, reason="no batch size has both BN and unclipped NF runs")
    delta = _per_batch_delta(nf, bn, context, batch)
    if delta.empty:
        return Verdict(INCONCLUSIVE, reason="no seed pairs")
    row = delta.iloc[0]
    numbers = {f"Δ {context.test_metric} (NF − BN) at batch {batch}": delta_ci(row)}
    if row["n_pairs"] >= 2 and row["high"] < 0:
        return Verdict(SUPPORTED, numbers)
    if row["n_pairs"] >= 2 and row["low"] > -POINT:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "the CI neither lies below 0 nor above −1 pt")


def fig2a_agc_recovers(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, roles.BATCH, roles.CLIPPING, context.select_metric,
                          context.test_metric):
        return absent
    bn, _, agc = _fig2a_frames(frame, context)
    if bn.empty or agc.empty:
        return Verdict(INCONCLUSIVE, reason="need BN runs and NF runs with AGC")
    batches = sorted(set(bn[roles.BATCH]) & set(agc[roles.BATCH]))
    numbers, verdicts = {}, []
    for batch in batches:
        delta = _per_batch_delta(agc, bn, context, batch)
        if delta.empty:
            continue
        row = delta.iloc[0]
        best_lambda = agc[agc[roles.BATCH] == batch][roles.CLIPPING].iloc[0]
        numbers[f"Δ {context.test_metric} (NF+AGC λ={best_lambda:g} − BN) at batch {batch}"] = delta_ci(row)
        verdicts.append(_no_worse(row, {}).verdict)
    if not verdicts:
        return Verdict(INCONCLUSIVE, reason="no batch size has paired BN and NF+AGC runs")
    if NOT_SUPPORTED in verdicts:
        return Verdict(NOT_SUPPORTED, numbers)
    if all(v == SUPPORTED for v in verdicts):
        return Verdict(SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "at some batch size the CI reaches below −1 pt and above it")


# -- AGC variants ---------------------------------------------------------------------------

def unit_beats_layer(frame, context) -> Verdict:
    if absent := _missing(frame, roles.AGC_MODE, context.test_metric):
        return absent
    return _two_sided(frame, frame[roles.AGC_MODE].map(str), "unit", "layer", context.test_metric,
                      context, defining=(roles.AGC_MODE,), label="unit − layer")


def do_not_clip_classifier(frame, context) -> Verdict:
    if absent := _missing(frame, roles.AGC_EXCLUDE, context.test_metric):
        return absent
    return _two_sided(frame, roles.classifier_clipping(frame), roles.NOT_CLIPPED, roles.CLIPPED,
                      context.test_metric, context, defining=(roles.AGC_EXCLUDE,),
                      label="not clipped − clipped")


# -- Table 6: BN twin ---------------------------------------------------------------------

def nf_matches_bn(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, context.test_metric):
        return absent
    family = roles.model_family(frame)
    if set(family) != {roles.BN, roles.NF}:
        return Verdict(INCONCLUSIVE, reason="need both BN and NF runs")
    delta = _paired(frame, family, roles.NF, roles.BN, context.test_metric, context,
                    defining=(roles.MODEL, roles.CLIPPING))
    if delta.empty:
        return Verdict(INCONCLUSIVE, reason="no seed pairs")
    row = delta.iloc[0]
    return _no_worse(row, {f"Δ {context.test_metric} (NF − BN)": delta_ci(row)})


def _ratio_text(frame, side, slow, fast) -> str:
    slow_ms = mean_ci(frame.loc[side == slow, roles.STEP_MS])[0]
    fast_ms = mean_ci(frame.loc[side == fast, roles.STEP_MS])[0]
    return f"{slow_ms:.1f} ms / {fast_ms:.1f} ms = {slow_ms / fast_ms:.2f}×"


def bn_slower(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, roles.STEP_MS):
        return absent
    family = roles.model_family(frame)
    verdict = _two_sided(frame, family, roles.BN, roles.NF, roles.STEP_MS, context,
                         defining=(roles.MODEL, roles.CLIPPING), label="BN − NF", scale=1.0, unit="ms")
    if verdict.numbers:
        verdict.numbers["step time BN / NF"] = _ratio_text(frame, family, roles.BN, roles.NF)
    return verdict


# -- Table 3 / App. A.4: SAM ------------------------------------------------------------

def _sam_side(frame) -> pd.Series:
    return frame[roles.SAM_MODE].map(str)


def sam_fraction_accuracy(frame, context) -> Verdict:
    if absent := _missing(frame, roles.SAM_MODE, context.test_metric):
        return absent
    side = _sam_side(frame)
    if not {"fraction", "full"} <= set(side):
        return Verdict(INCONCLUSIVE, reason="need runs with sam.mode full and fraction")
    delta = _paired(frame, side, "fraction", "full", context.test_metric, context, defining=(roles.SAM_MODE,))
    if delta.empty:
        return Verdict(INCONCLUSIVE, reason="no seed pairs")
    row = delta.iloc[0]
    return _no_worse(row, {f"Δ {context.test_metric} (fraction − full)": delta_ci(row)})


def sam_fraction_cost(frame, context) -> Verdict:
    if absent := _missing(frame, roles.SAM_MODE, roles.STEP_MS):
        return absent
    side = _sam_side(frame)
    verdict = _two_sided(frame, side, "full", "fraction", roles.STEP_MS, context, defining=(roles.SAM_MODE,),
                         label="full − fraction", scale=1.0, unit="ms")
    if verdict.numbers and "off" in set(side):
        verdict.numbers["step time vs SAM off"] = (f"full {_ratio_text(frame, side, 'full', 'off')}; "
                                                   f"fraction {_ratio_text(frame, side, 'fraction', 'off')}")
    return verdict


# -- [I] Fig. 1: signal propagation at initialisation ----------------------------------

def _spp_norm(frame) -> pd.Series:
    return roles.norm_kind(frame, name=roles.SPP_MODEL, norm=roles.SPP_NORM)


def spp_bn_resets(frame, context) -> Verdict:
    bn = frame[_spp_norm(frame) == roles.BN_NORM]
    if bn.empty:
        return Verdict(INCONCLUSIVE, reason="no BN model in the signal-propagation data")
    grows, resets = [], []
    stages = [rows.sort_values("block") for _, rows in group_rows(bn, [roles.SPP_MODEL, "stage"])]
    for rows in stages:
        grows.append(bool((rows["avg_channel_variance"].diff().dropna() >= 0).all()))
    for before, after in zip(stages, stages[1:]):
        if before[roles.SPP_MODEL].iloc[0] == after[roles.SPP_MODEL].iloc[0]:
            resets.append(bool(after["avg_channel_variance"].iloc[0] < before["avg_channel_variance"].iloc[-1]))
    numbers = {"stages where variance never falls": f"{sum(grows)} of {len(grows)}",
               "transitions where variance drops": f"{sum(resets)} of {len(resets)}"}
    if all(grows) and resets and all(resets):
        return Verdict(SUPPORTED, numbers)
    if not any(grows) or (resets and not any(resets)):
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "some stages or transitions break the pattern")


def spp_nf_no_mean_shift(frame, context) -> Verdict:
    norm = _spp_norm(frame)
    nf = frame[norm == roles.NF_NORM]  # NF with Scaled WS
    if nf.empty:
        return Verdict(INCONCLUSIVE, reason="no NF model with Scaled WS in the signal-propagation data")
    ratio = (nf["avg_channel_squared_mean"] / nf["avg_channel_variance"]).max()
    numbers = {"max over NF blocks of avg squared mean / avg variance": f"{ratio:.3f}"}
    plain = frame[norm == roles.PLAIN_NORM]
    if not plain.empty:  # the unscaled control, for contrast
        plain_ratio = (plain["avg_channel_squared_mean"] / plain["avg_channel_variance"]).max()
        numbers["the same without weight standardisation"] = f"{plain_ratio:.3f}"
    if ratio < 0.1:
        return Verdict(SUPPORTED, numbers)
    if ratio > 1.0:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "the squared mean is between 10% and 100% of the variance")


