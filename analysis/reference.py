"""The paper's numbers and claims, and the rule that judges each claim on our runs.

Keyed by a study's ``paper:`` key (PAPER.md §7). Each :class:`Claim` carries the paper's
statement, the paper's numbers where there are any, the rule in words (printed in every
report) and the rule as a function of the result runs. A rule returns one of three
verdicts with the numbers it used: ``supported``, ``not supported`` or ``inconclusive at
this scale``; a missing column, arm or grid value gives ``inconclusive`` with the reason.

Conventions of every rule:
- sides of a comparison are read from params (:mod:`analysis.roles`), not arm names;
- pairs share the seed and every other grid value (:func:`analysis.stats.paired_delta`);
- selection (best λ) uses the validation metric, claims use ``test/top1``;
- intervals are paired 95% Student-t intervals over pairs; accuracy is in points (×100);
- diverged runs enter with their recorded accuracy and are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from analysis import roles
from analysis.stats import format_ci, group_rows, mean_ci, paired_delta
from study.errors import ConfigError

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive at this scale"

STEP_MS = "time/step_ms"
POINT = 0.01  # one top-1 point as a fraction


@dataclass(frozen=True)
class RuleContext:
    """What a rule needs to know about the study besides its runs."""

    grid_keys: tuple[str, ...] = ()
    select_metric: str = "val/top1"
    test_metric: str = "test/top1"


@dataclass(frozen=True)
class Verdict:
    """A rule's outcome: the verdict, the numbers it used and, if inconclusive, why."""

    verdict: str
    numbers: dict[str, str] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and the rule that judges it."""

    id: str
    statement: str
    paper_numbers: str | None
    rule_text: str
    rule: Callable[[pd.DataFrame, RuleContext], Verdict]

    def judge(self, frame: pd.DataFrame, context: RuleContext) -> Verdict:
        """Apply the rule to result runs (or, for ``spp``, signal-propagation rows)."""
        if frame.empty:
            return Verdict(INCONCLUSIVE, reason="no results yet")
        return self.rule(frame, context)


@dataclass(frozen=True)
class PaperResult:
    """A figure or table of the paper: what it is, its numbers, its claims."""

    key: str
    title: str
    source: str
    numbers: tuple[tuple[str, str], ...]
    claims: tuple[Claim, ...]


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


def _ci_text(row, *, scale=100.0, unit="pt") -> str:
    text = format_ci(row["mean"], row["low"], row["high"], int(row["n_pairs"]), scale=scale,
                     digits=2 if scale == 100.0 else 1, signed=True)
    return f"{text} {unit}, n={int(row['n_pairs'])} pairs, {int(row['n_diverged'])} with a diverged run"


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
    numbers = {f"Δ {metric} ({label})": _ci_text(row, scale=scale, unit=unit)}
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

def _fig2b_largest_lambda(frame, context) -> Verdict:
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
    diverged = int((top["outcome"] == "diverged").sum())
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
    numbers[f"Δ {context.test_metric} (largest − best λ)"] = _ci_text(row)
    if row["n_pairs"] >= 2 and row["high"] < 0 and row["mean"] <= -5 * POINT:
        return Verdict(SUPPORTED, numbers)
    if row["n_pairs"] >= 2 and diverged == 0 and row["low"] > -5 * POINT:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "the loss is not clearly above or below 5 points")


def _fig2b_best_lambda_falls(frame, context) -> Verdict:
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


def _fig2a_nf_degrades(frame, context) -> Verdict:
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
    numbers = {f"Δ {context.test_metric} (NF − BN) at batch {batch}": _ci_text(row)}
    if row["n_pairs"] >= 2 and row["high"] < 0:
        return Verdict(SUPPORTED, numbers)
    if row["n_pairs"] >= 2 and row["low"] > -POINT:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "the CI neither lies below 0 nor above −1 pt")


def _fig2a_agc_recovers(frame, context) -> Verdict:
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
        numbers[f"Δ {context.test_metric} (NF+AGC λ={best_lambda:g} − BN) at batch {batch}"] = _ci_text(row)
        verdicts.append(_no_worse(row, {}).verdict)
    if not verdicts:
        return Verdict(INCONCLUSIVE, reason="no batch size has paired BN and NF+AGC runs")
    if NOT_SUPPORTED in verdicts:
        return Verdict(NOT_SUPPORTED, numbers)
    if all(v == SUPPORTED for v in verdicts):
        return Verdict(SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "at some batch size the CI reaches below −1 pt and above it")


# -- AGC variants ---------------------------------------------------------------------------

def _unit_vs_layer(frame, context) -> Verdict:
    if absent := _missing(frame, roles.AGC_MODE, context.test_metric):
        return absent
    return _two_sided(frame, frame[roles.AGC_MODE].map(str), "unit", "layer", context.test_metric,
                      context, defining=(roles.AGC_MODE,), label="unit − layer")


def _final_layer(frame, context) -> Verdict:
    if absent := _missing(frame, roles.AGC_EXCLUDE, context.test_metric):
        return absent
    return _two_sided(frame, roles.classifier_clipping(frame), roles.NOT_CLIPPED, roles.CLIPPED,
                      context.test_metric, context, defining=(roles.AGC_EXCLUDE,),
                      label="not clipped − clipped")


# -- Table 6: BN twin ---------------------------------------------------------------------

def _nf_matches_bn(frame, context) -> Verdict:
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
    return _no_worse(row, {f"Δ {context.test_metric} (NF − BN)": _ci_text(row)})


def _ratio_text(frame, side, slow, fast) -> str:
    slow_ms = mean_ci(frame.loc[side == slow, STEP_MS])[0]
    fast_ms = mean_ci(frame.loc[side == fast, STEP_MS])[0]
    return f"{slow_ms:.1f} ms / {fast_ms:.1f} ms = {slow_ms / fast_ms:.2f}×"


def _bn_slower(frame, context) -> Verdict:
    if absent := _missing(frame, roles.MODEL, STEP_MS):
        return absent
    family = roles.model_family(frame)
    verdict = _two_sided(frame, family, roles.BN, roles.NF, STEP_MS, context,
                         defining=(roles.MODEL, roles.CLIPPING), label="BN − NF", scale=1.0, unit="ms")
    if verdict.numbers:
        verdict.numbers["step time BN / NF"] = _ratio_text(frame, family, roles.BN, roles.NF)
    return verdict


# -- Table 3 / App. A.4: SAM ------------------------------------------------------------

def _sam_side(frame) -> pd.Series:
    return frame[roles.SAM_MODE].map(str)


def _sam_accuracy(frame, context) -> Verdict:
    if absent := _missing(frame, roles.SAM_MODE, context.test_metric):
        return absent
    side = _sam_side(frame)
    if not {"fraction", "full"} <= set(side):
        return Verdict(INCONCLUSIVE, reason="need runs with sam.mode full and fraction")
    delta = _paired(frame, side, "fraction", "full", context.test_metric, context, defining=(roles.SAM_MODE,))
    if delta.empty:
        return Verdict(INCONCLUSIVE, reason="no seed pairs")
    row = delta.iloc[0]
    return _no_worse(row, {f"Δ {context.test_metric} (fraction − full)": _ci_text(row)})


def _sam_cost(frame, context) -> Verdict:
    if absent := _missing(frame, roles.SAM_MODE, STEP_MS):
        return absent
    side = _sam_side(frame)
    verdict = _two_sided(frame, side, "full", "fraction", STEP_MS, context, defining=(roles.SAM_MODE,),
                         label="full − fraction", scale=1.0, unit="ms")
    if verdict.numbers and "off" in set(side):
        verdict.numbers["step time vs SAM off"] = (f"full {_ratio_text(frame, side, 'full', 'off')}; "
                                                   f"fraction {_ratio_text(frame, side, 'fraction', 'off')}")
    return verdict


# -- [I] Fig. 1: signal propagation at initialisation ----------------------------------

def _spp_bn_resets(frame, context) -> Verdict:
    bn = frame[frame["model"].map(str).str.lower().str.startswith("bn")]
    if bn.empty:
        return Verdict(INCONCLUSIVE, reason="no BN model in the signal-propagation data")
    grows, resets = [], []
    stages = [rows.sort_values("block") for _, rows in group_rows(bn, ["model", "stage"])]
    for rows in stages:
        grows.append(bool((rows["avg_channel_variance"].diff().dropna() >= 0).all()))
    for before, after in zip(stages, stages[1:]):
        if before["model"].iloc[0] == after["model"].iloc[0]:
            resets.append(bool(after["avg_channel_variance"].iloc[0] < before["avg_channel_variance"].iloc[-1]))
    numbers = {"stages where variance never falls": f"{sum(grows)} of {len(grows)}",
               "transitions where variance drops": f"{sum(resets)} of {len(resets)}"}
    if all(grows) and resets and all(resets):
        return Verdict(SUPPORTED, numbers)
    if not any(grows) or (resets and not any(resets)):
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "some stages or transitions break the pattern")


def _spp_nf_no_mean_shift(frame, context) -> Verdict:
    names = frame["model"].map(str).str.lower()
    nf = frame[~names.str.startswith("bn") & ~names.str.endswith("_nows")]  # NF with Scaled WS
    if nf.empty:
        return Verdict(INCONCLUSIVE, reason="no NF model with Scaled WS in the signal-propagation data")
    ratio = (nf["avg_channel_squared_mean"] / nf["avg_channel_variance"]).max()
    numbers = {"max over NF blocks of avg squared mean / avg variance": f"{ratio:.3f}"}
    plain = frame[names.str.endswith("_nows")]
    if not plain.empty:  # the unscaled control, for contrast
        plain_ratio = (plain["avg_channel_squared_mean"] / plain["avg_channel_variance"]).max()
        numbers["the same without weight standardisation"] = f"{plain_ratio:.3f}"
    if ratio < 0.1:
        return Verdict(SUPPORTED, numbers)
    if ratio > 1.0:
        return Verdict(NOT_SUPPORTED, numbers)
    return Verdict(INCONCLUSIVE, numbers, "the squared mean is between 10% and 100% of the variance")


# -- the table of results ------------------------------------------------------------------

_TWO_SIDED_TEXT = ("supported if the paired 95% CI of Δ({a} − {b}) on test/top1 lies above 0; "
                   "not supported if it lies below 0; otherwise inconclusive.")
_NO_WORSE_TEXT = ("supported if the paired 95% CI of Δ({a} − {b}) on test/top1 lies above −1 point "
                  "(within 1 point or better); not supported if it lies below −1 point; "
                  "otherwise inconclusive.")

REFERENCES: dict[str, PaperResult] = {
    "fig2b": PaperResult(
        "fig2b", "Fig. 2b: top-1 against the clipping threshold λ, one curve per batch size",
        "Brock et al. 2021, §4 and Fig. 2b (NF-ResNet-50, ImageNet, 90 epochs)",
        (("λ grid", "0.01, 0.02, 0.04, 0.08, 0.16"), ("batch sizes", "256 … 4096"),
         ("best λ", "λ = 0.01 for batch 1024–4096; larger λ only at small batch")),
        (
            Claim("fig2b-large-lambda", "At large batch sizes a large λ destabilises training: the "
                  "largest λ diverges or loses clearly against the best λ.",
                  "Fig. 2b (plot only): λ = 0.16 collapses at batch 4096",
                  "At the largest batch size: supported if at least half of the largest λ's runs "
                  "diverged, or the paired 95% CI of Δ(largest λ − best λ) on test/top1 lies below 0 "
                  "with a mean loss of at least 5 points (best λ selected on val/top1); not supported "
                  "if no run diverged and the CI lies above −5 points; otherwise inconclusive.",
                  _fig2b_largest_lambda),
            Claim("fig2b-best-lambda-falls", "Larger batches need a smaller clipping threshold.",
                  "λ = 0.01 is best for batch 1024–4096",
                  "Supported if the best λ (highest mean val/top1 over seeds) never rises as batch "
                  "size grows and is smaller at the largest batch than at the smallest; not "
                  "supported if it is larger at the largest batch; otherwise inconclusive.",
                  _fig2b_best_lambda_falls),
        ),
    ),
    "fig2a": PaperResult(
        "fig2a", "Fig. 2a: top-1 against batch size for BN-ResNet, NF-ResNet and NF-ResNet + AGC",
        "Brock et al. 2021, §4 and Fig. 2a (ResNet-50 family, ImageNet, 90 epochs)",
        (("batch sizes", "256 … 4096"), ("AGC", "best λ per batch size")),
        (
            Claim("fig2a-nf-degrades", "Without clipping, NF-ResNets lose accuracy against BN at "
                  "large batch sizes.", "Fig. 2a (plot only)",
                  "At the largest batch size with both: supported if the paired 95% CI of Δ(NF − BN) "
                  "on test/top1 lies below 0; not supported if it lies above −1 point; otherwise "
                  "inconclusive.", _fig2a_nf_degrades),
            Claim("fig2a-agc-recovers", "With AGC (best λ per batch size) NF-ResNets match BN at every "
                  "batch size.", "Fig. 2a (plot only): NF+AGC tracks BN up to batch 4096",
                  "The best λ per batch size is selected on val/top1 and reported on test/top1 (the "
                  "held-out split, so the selection does not inflate it). Supported if at every batch "
                  "size the paired 95% CI of Δ(NF+AGC − BN) lies above −1 point; not supported if at "
                  "some batch size it lies below −1 point; otherwise inconclusive.",
                  _fig2a_agc_recovers),
        ),
    ),
    "unit-vs-layer": PaperResult(
        "unit-vs-layer", "§4: unit-wise against layer-wise AGC",
        "Brock et al. 2021, §4 (statement, no table)", (("paper numbers", "none given"),),
        (Claim("unit-beats-layer", "Unit-wise clipping works better than layer-wise clipping.", None,
               _TWO_SIDED_TEXT.format(a="unit", b="layer"), _unit_vs_layer),),
    ),
    "clip-final-layer": PaperResult(
        "clip-final-layer", "§4.1: clipping the final linear layer",
        "Brock et al. 2021, §4.1 (ablation, batch 4096, lr 1.6)",
        (("paper finding", "never clipping the classifier is always better; all four stages must "
          "be clipped"),),
        (Claim("do-not-clip-classifier", "Not clipping the final linear layer is better than clipping it.",
               "qualitative: 'always better'",
               _TWO_SIDED_TEXT.format(a="classifier not clipped", b="classifier clipped")
               + " A run clips the classifier when its agc.exclude is an empty list.", _final_layer),),
    ),
    "table6": PaperResult(
        "table6", "Table 6 / §6.1: NF-ResNets against their BatchNorm twins",
        "Brock et al. 2021, Table 6 (ImageNet top-1; step time on TPUv3)",
        (("top-1 NF F0…F3", "83.6, 84.7, 85.1, 85.7 %"), ("top-1 BN twin F0…F3", "83.4, 84.4, 85.1, 85.5 %"),
         ("step ms NF F0…F3", "73.3, 158.5, 295.8, 532.2"), ("step ms BN F0…F3", "111.7, 258.0, 396.3, 617.7"),
         ("BN / NF step time", "1.52×, 1.63×, 1.34×, 1.16× (20–40% slower is the paper's summary)")),
        (
            Claim("nf-matches-bn", "NFNets match or beat their BN twins in accuracy.",
                  "F0…F3: NF − BN = +0.2, +0.3, 0.0, +0.2 points",
                  _NO_WORSE_TEXT.format(a="NF", b="BN"), _nf_matches_bn),
            Claim("bn-slower", "The BN twin is slower per training step.", "BN 20–40% slower per step",
                  "Supported if the paired 95% CI of Δ(BN − NF) of time/step_ms lies above 0; not "
                  "supported if it lies below 0; otherwise inconclusive. CPU timings of tiny models "
                  "say little about accelerators.", _bn_slower),
        ),
    ),
    "table3-sam": PaperResult(
        "table3-sam", "Table 3 / App. A.4: SAM with the ascent on 20% of the batch",
        "Brock et al. 2021, Table 3 and App. A.4",
        (("top-1 F0…F5", "83.6, 84.7, 85.1, 85.7, 85.9, 86.0 %"), ("top-1 with SAM", "F5 86.3 %, F6 86.5 %"),
         ("F5 step time", "1398.5 ms → 1958.0 ms with 20%-SAM (1.40×); full SAM ≈ 2×")),
        (
            Claim("sam-fraction-accuracy", "The ascent on 20% of the batch keeps SAM's accuracy.",
                  "same accuracy as full SAM (statement)", _NO_WORSE_TEXT.format(a="fraction", b="full"),
                  _sam_accuracy),
            Claim("sam-fraction-cost", "The 20% ascent is cheaper than full SAM (+20–40% instead of ≈2×).",
                  "F5: 1.40× the step time of no SAM",
                  "Supported if the paired 95% CI of Δ(full − fraction) of time/step_ms lies above 0; "
                  "not supported if it lies below 0; otherwise inconclusive.", _sam_cost),
        ),
    ),
    "spp": PaperResult(
        "spp", "[I] Fig. 1: signal propagation at initialisation",
        "Brock, De, Smith 2021 ([I]), Fig. 1", (("paper numbers", "plots only"),),
        (
            Claim("spp-bn-resets", "In a BN-ResNet the variance grows within a stage and resets at "
                  "each transition.", None,
                  "Supported if the average channel variance never falls from block to block within "
                  "a stage and drops at every transition; not supported if it falls in every stage "
                  "or never drops at a transition; otherwise inconclusive.", _spp_bn_resets),
            Claim("spp-nf-no-mean-shift", "Scaled WS removes the mean shift: the average channel "
                  "squared mean stays small in NF-ResNets.", None,
                  "Supported if, at every NF block, the average squared channel mean is below 10% of "
                  "the average channel variance; not supported if it exceeds the variance somewhere; "
                  "otherwise inconclusive.", _spp_nf_no_mean_shift),
        ),
    ),
}


def reference(paper_key: str) -> PaperResult:
    """The paper result a study's ``paper:`` key names.

    Raises:
        ConfigError: the key is unknown (the message lists the known keys).
    """
    if paper_key not in REFERENCES:
        raise ConfigError(f"paper: got {paper_key!r}; allowed: {', '.join(REFERENCES)}")
    return REFERENCES[paper_key]
