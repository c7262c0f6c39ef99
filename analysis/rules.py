"""The rules that judge a paper claim on our runs, and their verdicts.

A rule takes the result runs (or another frame the claim names, e.g. signal-propagation
rows) and a :class:`RuleContext`, and returns a :class:`Verdict`: ``supported``, ``not
supported`` or ``inconclusive at this scale`` with the numbers it used and the paired
:class:`Comparison` objects it decided on; a missing column, arm or grid value gives
``inconclusive`` with the reason. Which claim each rule judges, and the rule in words, is in
:mod:`analysis.reference`.

Conventions of every rule:
- sides of a comparison are read from params (:mod:`analysis.roles`), not arm names;
- pairs share the seed and every other grid value (:func:`analysis.stats.paired_delta`); a
  claim pooled over grid points averages each seed's pairs first, so its interval is over
  seeds, the independent replicates;
- selection (best λ) uses the validation metric, claims use ``test/top1``;
- intervals are paired 95% Student-t intervals over pairs; accuracy is in points (×100);
  with ``RuleContext(anytime=True)`` they are the anytime-valid confidence sequences of
  :mod:`analysis.confseq` instead, which stay valid when seeds are added until the rule
  decides (:mod:`analysis.sequential`);
- diverged runs enter with their recorded accuracy and are counted;
- a paper batch B is named as what it set where the real batch is capped: "lr 1.6 =
  0.1·4096/256 (paper batch 4096), real batch 128" (:func:`analysis.roles.batch_phrase`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from analysis import floor, roles
from analysis.formats import delta_ci, value
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
    anytime: bool = False
    """Decide on anytime-valid confidence sequences instead of fixed-n t-intervals."""


@dataclass(frozen=True)
class Cell:
    """Where in a study a run sits: its arm and its grid values (the runs of a cell differ
    only by seed)."""

    arm: str
    point: tuple[tuple[str, object], ...] = ()

    def text(self) -> str:
        """``nf-agc data.batch_size=4096``, ``data.batch_size=4096`` or ``(all runs)``."""
        parts = ([self.arm] if self.arm else []) + [f"{key}={value(item)}" for key, item in self.point]
        return " ".join(parts) or "(all runs)"


@dataclass(frozen=True)
class Comparison:
    """One paired difference a verdict rests on: Δ(arm − baseline) over seeds, where the
    claim's decision changes (``bounds``, e.g. 0 or −1 point) and the study cells it uses."""

    label: str
    metric: str
    row: dict
    """A row of :func:`analysis.stats.paired_delta`: mean, low, high, cs_low, cs_high, sd,
    n_pairs, n_diverged, seeds."""
    bounds: tuple[float, ...]
    cells: tuple[Cell, ...]
    scale: float = 100.0
    unit: str = "pt"
    key: str = ""
    """A short stable name (e.g. for an MLflow metric); empty: the label."""


@dataclass(frozen=True)
class Verdict:
    """A rule's outcome: the verdict, the numbers it used, if inconclusive why, and the
    paired comparisons it decided on."""

    verdict: str
    numbers: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    comparisons: tuple[Comparison, ...] = ()
    limit: str = ""
    """What keeps the claim from a verdict that more seeds cannot fix (one batch size where
    the claim is about every one; floor-bound runs), or empty."""
    left_out: str = ""
    """The floor-bound cells the rule was not given (:func:`judge_runs`), or empty."""


def _missing(frame: pd.DataFrame, *columns: str) -> Verdict | None:
    absent = [c for c in columns if c not in frame.columns]
    return Verdict(INCONCLUSIVE, reason=f"no column {', '.join(absent)} in the runs") if absent else None


def cell_groups(frame: pd.DataFrame, grid_keys):
    """Yield ``(cell, rows)`` per cell (arm and grid values) of the runs in ``frame``."""
    keys = [k for k in grid_keys if k in frame.columns]
    labelled = frame if "arm" in frame.columns else frame.assign(arm="")
    for (arm, *point), rows in group_rows(labelled, ["arm", *keys]):
        yield Cell(str(arm or ""), tuple(zip(keys, point))), rows


def cells(frame: pd.DataFrame, grid_keys) -> tuple[Cell, ...]:
    """The distinct cells (arm, grid values) of the runs in ``frame``."""
    return tuple(cell for cell, _ in cell_groups(frame, grid_keys))


def _paired(frame, side: pd.Series, arm, baseline, metric, context, *, defining=(), label="", bounds=(0.0,),
            scale=100.0, unit="pt") -> Comparison | None:
    """Δ(arm − baseline) of ``metric`` between the runs ``side`` labels, paired on seed and
    the grid values other than ``defining``, averaged per seed over the grid points (the
    interval is over seeds); None without a pair. Under ``context.anytime`` its low/high are
    the confidence sequence."""
    match = [k for k in context.grid_keys if k in frame.columns and k not in defining]
    labelled = frame.assign(_side=side.values)
    delta = paired_delta(labelled, "_side", baseline, metric, match=match, group=[], per_seed=True).query(
        "_side == @arm")
    if delta.empty:
        return None
    row = delta.iloc[0].to_dict()
    if context.anytime:
        row.update(low=row["cs_low"], high=row["cs_high"])
    used = frame[side.isin([arm, baseline]).values]
    return Comparison(label, metric, row, tuple(bounds), cells(used, context.grid_keys), scale, unit)


def _numbers(comparison: Comparison) -> dict[str, str]:
    return {f"Δ {comparison.metric} ({comparison.label})": delta_ci(comparison.row, scale=comparison.scale,
                                                                   unit=comparison.unit)}


def _two_sided(frame, side, arm, baseline, metric, context, *, defining, label,
               scale=100.0, unit="pt") -> Verdict:
    """Supported if the paired CI of Δ(arm − baseline) lies above 0, not supported if
    below 0, otherwise inconclusive."""
    found = set(side.unique())
    if not {arm, baseline} <= found:
        return Verdict(INCONCLUSIVE, reason=f"need runs of both {arm!r} and {baseline!r}; found {sorted(found)}")
    comparison = _paired(frame, side, arm, baseline, metric, context, defining=defining, label=label,
                         scale=scale, unit=unit)
    if comparison is None or comparison.row["n_pairs"] < 2:
        return Verdict(INCONCLUSIVE, reason="fewer than 2 pairs (same seed and grid values)",
                       comparisons=(comparison,) if comparison else ())
    row, numbers, found = comparison.row, _numbers(comparison), (comparison,)
    if row["low"] > 0:
        return Verdict(SUPPORTED, numbers, comparisons=found)
    if row["high"] < 0:
        return Verdict(NOT_SUPPORTED, numbers, comparisons=found)
    return Verdict(INCONCLUSIVE, numbers, "the CI contains 0", comparisons=found)


def _no_worse(comparison: Comparison, margin=POINT) -> Verdict:
    """Equivalence-style: supported if the CI's low end is above −margin, not supported
    if its high end is below −margin."""
    row, numbers, found = comparison.row, _numbers(comparison), (comparison,)
    if row["n_pairs"] < 2:
        return Verdict(INCONCLUSIVE, numbers, "fewer than 2 pairs", comparisons=found)
    if row["low"] > -margin:
        return Verdict(SUPPORTED, numbers, comparisons=found)
    if row["high"] < -margin:
        return Verdict(NOT_SUPPORTED, numbers, comparisons=found)
    return Verdict(INCONCLUSIVE, numbers, f"the CI reaches below −{margin * 100:g} pt and above it",
                   comparisons=found)


def judge_runs(rule, frame: pd.DataFrame, context: RuleContext) -> Verdict:
    """Judge a claim on result runs without counting floor-bound runs as evidence.

    Floor-bound runs (:func:`analysis.floor.floor_bound`: SkipInit gains that never leave AGC's
    ε floor at the run's budget) measure the budget, not the mechanism a claim is about. The
    rule is applied to the other runs and the verdict names what was left out; when that
    leaves the rule undecided while the floor-bound runs would have decided it, the verdict
    is "inconclusive: floor-bound at this budget", which more seeds cannot change.
    """
    bound = floor.floor_bound(frame)
    if not bound.any():
        return rule(frame, context)
    gains = floor.bounds(frame[bound])
    left_out = "; ".join(f"{cell.text()} (reachable gain ≤ {floor.gain_text(gains[rows.index].max()) or 'measured'})"
                         for cell, rows in cell_groups(frame[bound], context.grid_keys))
    free = rule(frame[~bound], context) if (~bound).any() else Verdict(INCONCLUSIVE, reason="every run is floor-bound")
    free = replace(free, left_out=left_out)
    if free.verdict != INCONCLUSIVE:
        return free
    full = rule(frame, context)
    if full.verdict == INCONCLUSIVE and not (full.comparisons and not free.comparisons):
        return free  # undecided with or without them: the floor is not what holds it back
    said = f" (with them the rule says {full.verdict})" if full.verdict != INCONCLUSIVE else ""
    return replace(free, reason=f"floor-bound at this budget{said}; without them: {free.reason or 'undecided'}",
                   limit="floor-bound at this budget: the gains need more steps or a larger lr·λ to leave the floor")


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
    where = roles.batch_phrase(frame, largest_batch)
    numbers = {
        "largest λ": f"{largest:g}: {diverged} of {len(top)} runs diverged",
        "at the largest batch size": where,
        f"best λ on {context.select_metric}": f"{best_lambda:g}",
    }
    if diverged * 2 >= len(top):
        return Verdict(SUPPORTED, numbers)
    if best_lambda == largest:
        return Verdict(NOT_SUPPORTED, numbers, "the largest λ is the best λ")
    side = at_batch[roles.CLIPPING].map(lambda v: {largest: "largest", best_lambda: "best"}.get(v, "other"))
    comparison = _paired(at_batch, side, "largest", "best", context.test_metric, context, defining=(roles.CLIPPING,),
                         label=f"λ {largest:g} − best λ {best_lambda:g} at {where}", bounds=(0.0, -5 * POINT))
    if comparison is None:
        return Verdict(INCONCLUSIVE, numbers, "no seed has both λ values")
    row, found = comparison.row, (comparison,)
    numbers.update(_numbers(comparison))
    if row["n_pairs"] >= 2 and row["high"] < 0 and row["mean"] <= -5 * POINT:
        return Verdict(SUPPORTED, numbers, comparisons=found)
    if row["n_pairs"] >= 2 and diverged == 0 and row["low"] > -5 * POINT:
        return Verdict(NOT_SUPPORTED, numbers, comparisons=found)
    return Verdict(INCONCLUSIVE, numbers, "the loss is not clearly above or below 5 points", comparisons=found)


def fig2b_best_lambda_falls(frame, context) -> Verdict:
    if absent := _missing(frame, roles.CLIPPING, roles.BATCH, context.select_metric):
        return absent
    clipped = frame[frame[roles.CLIPPING].notna()]
    best = roles.best_option(clipped, roles.CLIPPING, context.select_metric, by=[roles.BATCH])
    per_batch = [(values[0], rows[roles.CLIPPING].iloc[0], rows["selected_mean"].iloc[0])
                 for values, rows in group_rows(best, [roles.BATCH])]
    if len(per_batch) < 2:
        return Verdict(INCONCLUSIVE, reason="fewer than two batch sizes",
                       limit="one batch size ran: the claim compares batch sizes")
    lambdas = [lam for _, lam, _ in per_batch]
    numbers = {"best λ as the paper batch grows": " → ".join(f"{lam:g}" for lam in lambdas)}
    numbers.update({f"at {roles.batch_phrase(frame, b)}": f"best λ {lam:g} ({context.select_metric} {mean * 100:.1f}%)"
                    for b, lam, mean in per_batch})
    if lambdas[-1] > lambdas[0]:
        return Verdict(NOT_SUPPORTED, numbers)
    if lambdas[-1] < lambdas[0] and all(a >= b for a, b in zip(lambdas, lambdas[1:])):
        return Verdict(SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "best λ is flat, or rises and falls between the ends")


# -- Fig. 2b against the step budget: AGC's ε floor -------------------------------------------

def budget_penalty_shrinks(frame, context) -> Verdict:
    """Δ(smallest λ − largest λ) on the test metric at every step budget (``train.steps``),
    paired on seed and the other grid values; says from which budget the small-λ penalty is
    gone (the paired CI lies above −1 point) and the reachable SkipInit gain of the small λ
    at each budget (:func:`analysis.floor.reachable_gain`). Floor-bound runs are the point
    of this claim, so they count (its :class:`~analysis.reference.Claim` says so)."""
    if absent := _missing(frame, roles.CLIPPING, roles.STEPS, context.test_metric):
        return absent
    clipped = frame[frame[roles.CLIPPING].notna()]
    lambdas = sorted(set(clipped[roles.CLIPPING]))
    budgets = sorted({int(s) for s in clipped[roles.STEPS]})
    if len(lambdas) < 2:
        return Verdict(INCONCLUSIVE, reason="fewer than two λ values")
    if len(budgets) < 2:
        return Verdict(INCONCLUSIVE, reason="one step budget ran", limit="one step budget ran: the claim compares budgets")
    small, large = lambdas[0], lambdas[-1]
    side = clipped[roles.CLIPPING].map(lambda v: "small" if v == small else "large" if v == large else "other")
    gains = floor.bounds(clipped[clipped[roles.CLIPPING] == small])
    numbers, found, gone = {}, [], None
    for steps in budgets:
        at = clipped[roles.STEPS].astype(int) == steps
        reach = floor.gain_text(gains[gains.index.isin(clipped.index[at])].max())
        comparison = _paired(clipped[at], side[at], "small", "large", context.test_metric, context,
                             defining=(roles.CLIPPING,), label=f"λ {small:g} − λ {large:g} at {steps} steps",
                             bounds=(-POINT,))
        if comparison is None:
            continue
        numbers.update(_numbers(comparison))
        if reach:
            numbers[f"reachable |SkipInit gain| at λ {small:g}, {steps} steps"] = reach
        found.append(comparison)
        if gone is None and comparison.row["n_pairs"] >= 2 and comparison.row["low"] > -POINT:
            gone = steps
    if len(found) < 2:
        return Verdict(INCONCLUSIVE, numbers, "fewer than two budgets have paired seeds", comparisons=tuple(found))
    numbers["the small-λ penalty is gone (CI above −1 pt) from"] = f"{gone} steps" if gone else "no budget that ran"
    first, last = found[0].row, found[-1].row
    if min(first["n_pairs"], last["n_pairs"]) < 2:
        return Verdict(INCONCLUSIVE, numbers, "fewer than 2 pairs at a budget", comparisons=tuple(found))
    if last["low"] > -POINT and first["high"] < -POINT:
        return Verdict(SUPPORTED, numbers, comparisons=tuple(found))
    if last["high"] < -POINT:
        return Verdict(NOT_SUPPORTED, numbers, comparisons=tuple(found))
    reason = ("no penalty at the smallest budget to shrink" if first["low"] > -POINT
              else "the CI at the smallest or the largest budget reaches across −1 pt")
    return Verdict(INCONCLUSIVE, numbers, reason, comparisons=tuple(found))


# -- Fig. 2a: batch-size scaling ----------------------------------------------------------

def _fig2a_frames(frame, context):
    family = roles.agc_family(frame)
    bn, nf = frame[family == roles.BN], frame[family == roles.NF]
    agc = roles.best_option(frame[family == roles.NF_AGC], roles.CLIPPING, context.select_metric,
                            by=[roles.BATCH])
    return bn, nf, agc


def _per_batch(arm_rows, bn_rows, context, batch, label, bounds) -> Comparison | None:
    both = pd.concat([arm_rows.assign(_side="arm"), bn_rows.assign(_side="bn")])
    both = both[both[roles.BATCH] == batch]
    return _paired(both, both["_side"], "arm", "bn", context.test_metric, context,
                   defining=(roles.MODEL, roles.NORM, roles.CLIPPING), label=label, bounds=bounds)


def fig2a_nf_degrades(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, roles.BATCH, context.test_metric):
        return absent
    bn, nf, _ = _fig2a_frames(frame, context)
    if bn.empty or nf.empty:
        return Verdict(INCONCLUSIVE, reason="need BN runs and NF runs without clipping")
    batch = max(set(bn[roles.BATCH]) & set(nf[roles.BATCH]), default=None)
    if batch is None:
        return Verdict(INCONCLUSIVE, reason="no batch size has both BN and unclipped NF runs")
    comparison = _per_batch(nf, bn, context, batch, f"NF − BN at {roles.batch_phrase(frame, batch)}", (0.0, -POINT))
    if comparison is None:
        return Verdict(INCONCLUSIVE, reason="no seed pairs")
    row, numbers, found = comparison.row, _numbers(comparison), (comparison,)
    if row["n_pairs"] >= 2 and row["high"] < 0:
        return Verdict(SUPPORTED, numbers, comparisons=found)
    if row["n_pairs"] >= 2 and row["low"] > -POINT:
        return Verdict(NOT_SUPPORTED, numbers, comparisons=found)
    return Verdict(INCONCLUSIVE, numbers, "the CI neither lies below 0 nor above −1 pt", comparisons=found)


def fig2a_agc_recovers(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, roles.BATCH, roles.CLIPPING, context.select_metric,
                          context.test_metric):
        return absent
    bn, _, agc = _fig2a_frames(frame, context)
    if bn.empty or agc.empty:
        return Verdict(INCONCLUSIVE, reason="need BN runs and NF runs with AGC")
    numbers, verdicts, found = {}, [], []
    for batch in sorted(set(bn[roles.BATCH]) & set(agc[roles.BATCH])):
        best_lambda = agc[agc[roles.BATCH] == batch][roles.CLIPPING].iloc[0]
        comparison = _per_batch(agc, bn, context, batch,
                                f"NF+AGC λ={best_lambda:g} − BN at {roles.batch_phrase(frame, batch)}", (-POINT,))
        if comparison is not None:
            numbers.update(_numbers(comparison))
            verdicts.append(_no_worse(comparison).verdict)
            found.append(comparison)
    if not verdicts:
        return Verdict(INCONCLUSIVE, reason="no batch size has paired BN and NF+AGC runs")
    if NOT_SUPPORTED in verdicts:
        return Verdict(NOT_SUPPORTED, numbers, comparisons=tuple(found))
    if len(verdicts) == 1:  # the claim is about every batch size: one cannot support it
        return Verdict(INCONCLUSIVE, numbers, f"judged at one batch size only ({verdicts[0]} there)",
                       comparisons=tuple(found), limit="one batch size ran: the claim is about every batch size")
    if all(v == SUPPORTED for v in verdicts):
        return Verdict(SUPPORTED, numbers, comparisons=tuple(found))
    return Verdict(INCONCLUSIVE, numbers, "at some batch size the CI reaches below −1 pt and above it",
                   comparisons=tuple(found))


# -- AGC variants ---------------------------------------------------------------------------

def unit_beats_layer(frame, context) -> Verdict:
    if absent := _missing(frame, roles.AGC_MODE, context.test_metric):
        return absent
    return _two_sided(frame, frame[roles.AGC_MODE].map(str), "unit", "layer", context.test_metric,
                      context, defining=(roles.AGC_MODE,), label="unit − layer" + _where(frame))


def do_not_clip_classifier(frame, context) -> Verdict:
    if absent := _missing(frame, roles.AGC_EXCLUDE, context.test_metric):
        return absent
    return _two_sided(frame, roles.classifier_clipping(frame), roles.NOT_CLIPPED, roles.CLIPPED,
                      context.test_metric, context, defining=(roles.AGC_EXCLUDE,),
                      label="not clipped − clipped" + _where(frame))


def _where(frame) -> str:
    """`` at lr 1.6 = 0.1·4096/256 (paper batch 4096), real batch 128`` when every run has one
    capped paper batch; else nothing (the batch sizes are pooled, or the real batch is the paper's)."""
    batches = set(frame[roles.BATCH]) if roles.BATCH in frame.columns else set()
    return f" at {roles.batch_phrase(frame, batches.pop())}" if len(batches) == 1 and roles.is_capped(frame) else ""


# -- Table 6: BN twin ---------------------------------------------------------------------

def nf_matches_bn(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, context.test_metric):
        return absent
    family = roles.table6_family(frame)  # NF without Scaled WS is on neither side, as in the paper
    if not {roles.BN, roles.NF} <= set(family):
        return Verdict(INCONCLUSIVE, reason="need both BN and NF (Scaled WS) runs")
    comparison = _paired(frame, family, roles.NF, roles.BN, context.test_metric, context,
                         defining=(roles.MODEL, roles.NORM, roles.CLIPPING), label="NF − BN" + _where(frame),
                         bounds=(-POINT,))
    if comparison is None:
        return Verdict(INCONCLUSIVE, reason="no seed pairs")
    return _no_worse(comparison)


def _ratio_text(frame, side, slow, fast) -> str:
    slow_ms = mean_ci(frame.loc[side == slow, roles.STEP_MS])[0]
    fast_ms = mean_ci(frame.loc[side == fast, roles.STEP_MS])[0]
    return f"{slow_ms:.1f} ms / {fast_ms:.1f} ms = {slow_ms / fast_ms:.2f}×"


def bn_slower(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, roles.STEP_MS):
        return absent
    family = roles.table6_family(frame)
    verdict = _two_sided(frame, family, roles.BN, roles.NF, roles.STEP_MS, context,
                         defining=(roles.MODEL, roles.NORM, roles.CLIPPING), label="BN − NF", scale=1.0, unit="ms")
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
    comparison = _paired(frame, side, "fraction", "full", context.test_metric, context, defining=(roles.SAM_MODE,),
                         label="fraction − full" + _where(frame), bounds=(-POINT,))
    if comparison is None:
        return Verdict(INCONCLUSIVE, reason="no seed pairs")
    return _no_worse(comparison)


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


