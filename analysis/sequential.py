"""Adaptive replication: which paper claims of a study are resolved, and which cells need
more paired seeds.

:func:`claim_status` is the one entry point. It judges every claim of the study's paper
result with the anytime-valid confidence sequences of :mod:`analysis.confseq` in place of
the fixed-n t-intervals (``RuleContext(anytime=True)``). A claim is *resolved* when its
rule reaches a verdict on those: since a confidence sequence covers the true difference at
every number of pairs at once, one may add a round of paired seeds, call
:func:`claim_status` again, and stop as soon as every claim is resolved, and each verdict
keeps its 95% guarantee (a t-interval looked at after every round would not). For an
unresolved claim it says which study cells (arm and grid values) need more paired seeds,
and projects how many pairs it would take if the measured mean and spread held.

A loop on top of it (sketch)::

    while True:
        status = claim_status(results(load_runs(study, uri)), spec.paper, grid_keys=tuple(spec.grid))
        open_ = [s for s in status if not s.resolved and not s.blocked]
        if not open_ or seeds == max_seeds:
            break
        seeds += 1  # then train seed `seeds` for every cell in {c for s in open_ for c in s.needs}

Claims decided without paired seeds (the best λ by its mean, signal propagation) are
resolved when their rule decides, and ``blocked`` when it cannot: more seeds do not help
them, nor a claim held back by its design (one batch size for a claim about every batch
size, floor-bound runs; :attr:`analysis.rules.Verdict.limit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis import roles
from analysis.confseq import pairs_to_exclude
from analysis.reference import RUNS, reference
from analysis.rules import INCONCLUSIVE, Cell, Comparison, RuleContext, Verdict
from analysis.stats import sort_key


@dataclass(frozen=True)
class ClaimStatus:
    """Where one claim stands under optional stopping."""

    claim: str
    verdict: Verdict
    """The claim judged on anytime-valid confidence sequences."""
    resolved: bool
    pairs: int
    """Paired seeds its comparisons use (the most of any; 0 without paired comparisons)."""
    seeds: tuple
    """The seeds of those pairs."""
    needs: tuple[Cell, ...] = ()
    """Cells that need more paired seeds (empty when resolved or blocked)."""
    projected_pairs: int | None = None
    """Pairs the slowest open comparison would need if its mean and spread held; None when
    resolved, blocked, or no count up to :data:`analysis.confseq.MAX_PAIRS` would do."""
    blocked: str = ""
    """Why more seeds cannot resolve it, or empty."""

    def text(self) -> str:
        """``resolved``, ``not resolved (≈ 9 pairs would resolve it …)`` or ``not resolvable by seeds: …``."""
        if self.resolved:
            return "resolved"
        if self.blocked:
            return f"not resolvable by more seeds: {self.blocked}"
        if self.projected_pairs is None and self.pairs < 2:
            return "not resolved (fewer than 2 pairs: no spread to project from)"
        if self.projected_pairs is None:
            return "not resolved (no seed count in reach would resolve it at the measured spread)"
        return f"not resolved (≈ {self.projected_pairs} pairs would resolve it if the mean and spread held)"


def is_open(comparison: Comparison) -> bool:
    """Whether a comparison's confidence sequence still contains one of the bounds where its
    claim's decision changes."""
    low, high = comparison.row["cs_low"], comparison.row["cs_high"]
    return low != low or any(low <= bound <= high for bound in comparison.bounds)


def projected_pairs(comparison: Comparison) -> int | None:
    """Pairs at which the confidence sequence would leave the nearest bound it contains behind."""
    row = comparison.row
    low, high = row["cs_low"], row["cs_high"]
    counts = [pairs_to_exclude(row["mean"], row["sd"], int(row["n_pairs"]), bound) for bound in comparison.bounds
              if low != low or low <= bound <= high]
    counts = [count for count in counts if count is not None]
    return min(counts) if counts else None


def _status(claim_id: str, verdict: Verdict) -> ClaimStatus:
    comparisons = verdict.comparisons
    pairs = max((int(c.row["n_pairs"]) for c in comparisons), default=0)
    seeds = tuple(sorted({seed for c in comparisons for seed in c.row["seeds"]}, key=sort_key))
    if verdict.verdict != INCONCLUSIVE:
        return ClaimStatus(claim_id, verdict, True, pairs, seeds)
    open_ = [c for c in comparisons if is_open(c)]
    blocked = verdict.limit or ("" if open_ else verdict.reason or "its rule does not rest on paired seeds")
    if blocked:
        return ClaimStatus(claim_id, verdict, False, pairs, seeds, blocked=blocked)
    projections = [projected_pairs(c) for c in open_]
    needs = tuple(sorted({cell for c in open_ for cell in c.cells}, key=Cell.text))
    projected = None if None in projections else max(projections)
    return ClaimStatus(claim_id, verdict, False, pairs, seeds, needs, projected)


def claim_status(frame: pd.DataFrame, paper: str, *, grid_keys: tuple[str, ...] = (),
                 select_metric: str = roles.VAL_METRIC,
                 inputs: dict[str, pd.DataFrame] | None = None) -> list[ClaimStatus]:
    """For each claim of a paper result: resolved or not under optional stopping, and which
    cells an unresolved claim needs more paired seeds of.

    Example:
        >>> frame = results(load_runs("unit-vs-layer", tracking_uri()))
        >>> [(s.claim, s.resolved, [c.text() for c in s.needs]) for s in claim_status(frame, "unit-vs-layer",
        ...                                                                        grid_keys=("agc.clipping",))]
        [('unit-beats-layer', False, ['layer agc.clipping=0.01', 'unit agc.clipping=0.01', ...])]

    Args:
        frame: the study's result runs (:func:`analysis.runs.results`; a column ``arm``
            names the cells).
        paper: the study's ``paper:`` key (:mod:`analysis.reference`).
        grid_keys: the study's grid axes (pairs share every grid value but the compared one).
        select_metric: the metric a selection (best λ) maximises.
        inputs: data the paper result needs besides its runs (its ``needs``), by name.

    Returns:
        One :class:`ClaimStatus` per claim, in the paper result's order.

    Raises:
        ConfigError: ``paper`` is not a known paper result.
    """
    result = reference(paper)
    context = RuleContext(grid_keys=tuple(k for k in grid_keys if k in frame.columns),
                          select_metric=select_metric, anytime=True)
    frames = {**(inputs or {}), RUNS: frame}
    return [_status(claim.id, claim.judge(frames.get(claim.data), context)) for claim in result.claims]
