"""The answer first: the summary a report opens with, ``nfstudy report`` prints, and the
study's MLflow parent run carries.

In this order: what is missing (a partial study says so before anything else), the scale
the runs trained at, warnings (two seeds or fewer, arms at chance, floor-bound cells), one
line per paper claim (its verdict, the number it rests on, whether it is resolved under
optional stopping and, if not, how many pairs it would need), and one line per comparison
of the study's own design: every arm against the baseline arm and every value of a
scientific grid axis against the axis's first value, paired on seed and the other grid
values (e.g. ``nf-agc − bn: +11.2 [-0.3, +22.7] pt, 5 pairs, not resolved``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from analysis import floor, roles
from analysis.document import Section, Table, VerdictBadge
from analysis.formats import format_ci, sequence_ci, value
from analysis.rules import Cell, Comparison, Verdict, cell_groups
from analysis.sequential import ClaimStatus, is_open, projected_pairs
from analysis.stats import group_rows, is_fraction, paired_delta, summarise
from study.record.tags import DIVERGED, SUMMARY_PREFIX, VERDICT_PREFIX

MAX_LINES = 12
"""More comparisons than this at one per grid point are pooled over the other grid values
(each seed's pairs averaged) in the summary; the per-point table follows in the report."""
CHANCE_MARGIN = 0.02
"""A cell whose mean accuracy is within this of chance (or below) is "at chance"."""


@dataclass(frozen=True)
class ClaimLine:
    claim: str
    verdict: Verdict
    """The verdict at the study's planned seeds (fixed-n intervals)."""
    status: ClaimStatus
    """The same claim under optional stopping (:mod:`analysis.sequential`)."""


@dataclass(frozen=True)
class Summary:
    study: str
    planned: int | None
    results: int
    not_counted: str
    """E.g. ``2 failed, 1 running``: runs that are not results."""
    scale: str
    warnings: list[str] = field(default_factory=list)
    claims: list[ClaimLine] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    pooled_over: list[str] = field(default_factory=list)
    means: list[tuple[str, str, float]] = field(default_factory=list)
    """``(cell, metric, mean)`` of every cell."""
    run_command: str = ""

    @property
    def missing(self) -> int:
        return max((self.planned or 0) - self.results, 0)

    def status(self) -> str:
        """``9 of 9 planned runs finished`` or ``11 of 18 planned runs missing …``."""
        if self.planned is None:
            return f"{self.results} results" + (f" ({self.not_counted} not counted)" if self.not_counted else "")
        if not self.missing:
            return f"{self.results} of {self.planned} planned runs finished"
        return (f"{self.missing} of {self.planned} planned runs missing"
                + (f" (not results: {self.not_counted})" if self.not_counted else "")
                + ": every number below rests on part of the study"
                + (f"; `{self.run_command}` trains the rest" if self.run_command else ""))

    def section(self) -> Section:
        blocks = [f"**{self.status()}.**" if self.missing else f"{self.status()}."]
        if self.scale:
            blocks.append(f"**Scale:** {self.scale}")
        blocks += [f"**Warning:** {line}" for line in self.warnings]
        if self.claims:
            blocks.append(Table(["paper claim", "verdict", "evidence", "pairs", "anytime-valid"],
                                [[f"`{c.claim}`", VerdictBadge(c.verdict.verdict), _evidence(c.verdict),
                                  str(c.status.pairs or "-"), _status_text(c)] for c in self.claims]))
        if self.comparisons:
            if self.pooled_over:
                blocks.append("Pooled over " + ", ".join(f"`{k}`" for k in self.pooled_over)
                              + " (each seed's pairs averaged); per grid point in the paired Δ sections below.")
            blocks.append(Table(["comparison", "Δ (95% CI)", "pairs", "anytime-valid 95% CS", "status"],
                                [[c.label, _delta_text(c), str(int(c.row["n_pairs"])), sequence_ci(c.row, scale=c.scale,
                                                                                           unit=c.unit),
                                  comparison_status(c)] for c in self.comparisons]))
        return Section("Summary", blocks)

    def lines(self) -> list[str]:
        """The summary as plain lines for a terminal."""
        out = [f"{self.study}: {self.status().replace('`', '')}"]
        out += [f"  scale: {_plain(self.scale)}"] if self.scale else []
        out += [f"  warning: {_plain(line)}" for line in self.warnings]
        for c in self.claims:
            evidence = _evidence(c.verdict)
            out.append(f"  {c.claim}: {c.verdict.verdict}" + (f" — {_plain(evidence)}" if evidence else "")
                       + f"; {_status_text(c)}")
        for c in self.comparisons:
            out.append(f"  {_plain(c.label)}: {_delta_text(c)}, {int(c.row['n_pairs'])} pairs, {comparison_status(c)}")
        return out


def _status_text(line: ClaimLine) -> str:
    """The claim's anytime-valid status, without repeating a reason its evidence gave."""
    if line.status.blocked and line.status.blocked == line.verdict.reason:
        return "not resolvable by more seeds"
    return line.status.text()


def _plain(text: str) -> str:
    return text.replace("`", "").replace("**", "")


def _delta_text(comparison: Comparison) -> str:
    row = comparison.row
    return format_ci(row["mean"], row["low"], row["high"], int(row["n_pairs"]), scale=comparison.scale,
                     digits=1 if comparison.scale == 100.0 else 2, signed=True) + f" {comparison.unit}"


def _evidence(verdict: Verdict) -> str:
    """The first number a verdict rests on, or why it has none."""
    if verdict.numbers:
        key, text = next(iter(verdict.numbers.items()))
        return f"{key}: {text}"
    return verdict.reason


def comparison_status(comparison: Comparison) -> str:
    """``resolved`` when the anytime-valid confidence sequence excludes 0, else ``not
    resolved`` with the projected pairs."""
    if not is_open(comparison):
        return "resolved"
    if int(comparison.row["n_pairs"]) < 2:
        return "not resolved (fewer than 2 pairs)"
    needed = projected_pairs(comparison)
    return "not resolved" + (f" (≈ {needed} pairs would resolve it)" if needed else "")


# -- what the summary is made of -------------------------------------------------------

def side_text(frame: pd.DataFrame, key: str, item) -> str:
    """A grid value (or arm) as a comparison names it; a capped paper batch says what it set."""
    if key == "arm":
        return str(item)
    if key == roles.BATCH:
        return roles.batch_phrase(frame, item, short=True)
    return f"{key}={value(item)}"


def _point_text(frame: pd.DataFrame, point: dict) -> str:
    return ", ".join(side_text(frame, k, v) for k, v in point.items())


def _comparisons_along(frame, by: str, baseline, label, metric, match, per_point: bool) -> list[Comparison]:
    """Δ(each value of ``by`` − ``baseline``) paired on seed and ``match``; one per point of
    ``match`` or pooled (each seed's pairs averaged)."""
    delta = paired_delta(frame, by, baseline, metric, match=match, group=match if per_point else [],
                         per_seed=not per_point)
    found = []
    for _, row in delta.iterrows():
        point = {k: row[k] for k in match} if per_point else {}
        used = frame[frame[by].map(str).isin([str(row[by]), str(baseline)])]
        for key, item in point.items():
            used = used[used[key].map(str) == str(item)]
        where = f" at {_point_text(frame, point)}" if point else ""
        key = " ".join([f"{value(row[by])} vs {value(baseline)}", *(f"{k}_{value(v)}" for k, v in point.items())])
        found.append(Comparison(f"{label(row[by])} − {label(baseline)}{where}", metric, row.to_dict(), (0.0,),
                                tuple(cell for cell, _ in cell_groups(used, match)),
                                100.0 if is_fraction(metric) else 1.0, "pt" if is_fraction(metric) else "",
                                key=key if by == "arm" else f"{by} {key}"))
    return found


def design_comparisons(frame: pd.DataFrame, arms: list[str], baseline: str | None, axes: list[str],
                       grid_keys: list[str], metric: str, *, per_point: bool = True) -> list[Comparison]:
    """Every arm against the baseline arm, and every value of each axis in ``axes`` against
    the axis's first value, paired on seed and the other grid values (and the arm)."""
    found: list[Comparison] = []
    if len(arms) >= 2 and baseline in arms:
        found += _comparisons_along(frame, "arm", baseline, str, metric, list(grid_keys), per_point)
    for axis in axes:
        levels = [values[0] for values, _ in group_rows(frame, [axis])]
        if len(levels) < 2:
            continue
        others = [k for k in grid_keys if k != axis] + (["arm"] if len(arms) >= 2 else [])
        found += _comparisons_along(frame, axis, levels[0], lambda v, a=axis: side_text(frame, a, v), metric,
                                    others, per_point)
    return found


def warnings(frame: pd.DataFrame, grid_keys: list[str], metric: str) -> list[str]:
    """Two seeds or fewer, cells at chance, floor-bound cells."""
    found = []
    groups = list(cell_groups(frame, grid_keys))
    fewest = min((rows["seed"].nunique() for _, rows in groups if "seed" in rows.columns), default=None)
    if fewest is not None and fewest <= 2:
        found.append(f"a cell has only {fewest} seed{'s' if fewest > 1 else ''}: a 95% interval over 2 seeds "
                     "spans most of the scale and no comparison can be resolved before 3 pairs; run more seeds.")
    chance = roles.chance_level(frame, metric) if is_fraction(metric) else None
    if chance is not None and metric in frame.columns:
        low = [(cell, rows) for cell, rows in groups if pd.to_numeric(rows[metric]).mean() <= chance + CHANCE_MARGIN]
        if low:
            found.append("at chance (" + f"{chance * 100:.0f}%): "
                         + "; ".join(f"{_cell_text(frame, cell)} ({pd.to_numeric(rows[metric]).mean() * 100:.1f}%, "
                                     f"{int((rows['outcome'] == DIVERGED).sum())} of {len(rows)} diverged)"
                                     for cell, rows in low)
                         + ". A difference against a cell at chance measures a broken run, not the factor.")
    bound = floor.floor_bound(frame)
    if bound.any():
        gains = floor.bounds(frame)
        listed = "; ".join(f"{_cell_text(frame, cell)} (gain ≤ {floor.gain_text(gains[rows.index].max()) or 'measured'})"
                           for cell, rows in cell_groups(frame[bound], grid_keys))
        found.append(f"floor-bound at this budget (SkipInit gains cannot exceed {floor.FLOOR_GAIN:g}, so the residual "
                     f"branches barely train): {listed}. Drawn hollow; claims leave them out, except a claim about the "
                     "floor itself (clip-budget), whose evidence they are.")
    return found


def _cell_text(frame: pd.DataFrame, cell: Cell) -> str:
    parts = ([f"`{cell.arm}`"] if cell.arm else []) + [side_text(frame, k, v) for k, v in cell.point]
    return " at ".join([parts[0], ", ".join(parts[1:])]) if cell.arm and len(parts) > 1 else ", ".join(parts)


def cell_means(frame: pd.DataFrame, grid_keys: list[str], metric: str) -> list[tuple[str, str, float]]:
    """``(cell, metric, mean)`` per cell, for the parent run's metrics."""
    keys = (["arm"] if "arm" in frame.columns and frame["arm"].astype(bool).any() else []) + list(grid_keys)
    table = summarise(frame, keys, metric)
    return [(" ".join(f"{k}_{value(row[k])}" if k != "arm" else str(row[k]) for k in keys) or "all", metric,
             float(row["mean"])) for _, row in table.iterrows()]


# -- the MLflow parent run -------------------------------------------------------------

def _name(text: str) -> str:
    """A valid MLflow metric or tag name: alphanumerics, ``_ - . / space`` only."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]+", "_", text).strip()


def log_summary(tracking_uri: str | None, parent_id: str, summary: Summary, scale: str = "") -> None:
    """Put the summary on the study's parent run: per-cell means and Δs as metrics, verdicts
    as tags (``study.record.tags``: :data:`SUMMARY_PREFIX`, :data:`VERDICT_PREFIX`), so the
    MLflow runs table answers the question without opening the report."""
    prefix = SUMMARY_PREFIX + (f"{_name(scale)}/" if scale else "")
    metrics = {f"{prefix}runs_missing": float(summary.missing), f"{prefix}results": float(summary.results)}
    metrics.update({_name(f"{prefix}mean/{cell}/{metric}"): mean for cell, metric, mean in summary.means
                    if math.isfinite(mean)})
    metrics.update({_name(f"{prefix}delta/{c.key or c.label}/{c.metric}"): float(c.row["mean"])
                    for c in summary.comparisons if math.isfinite(c.row["mean"])})
    tags = {_name(f"{VERDICT_PREFIX}{_name(scale) + '.' if scale else ''}{c.claim}"):
            f"{c.verdict.verdict}; {c.status.pairs} pairs; {c.status.text()}" for c in summary.claims}
    client = MlflowClient(tracking_uri)
    stamp = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
    items = [Metric(k[:250], v, stamp, 0) for k, v in metrics.items()]
    for start in range(0, len(items), 1000):
        client.log_batch(parent_id, metrics=items[start:start + 1000])
    if tags:
        client.log_batch(parent_id, tags=[RunTag(k[:250], v[:5000]) for k, v in tags.items()])


