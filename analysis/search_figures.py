"""The search report's figures, in the style of :mod:`analysis.figures`: the optimisation
history, a searched key against the metric, and the parameter importances.

Every function takes trials (:func:`analysis.trials.load_trials`) and returns a matplotlib
``Figure``; :func:`analysis.figures.save_figure` writes it.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from analysis import roles
from analysis.figures import axis_label, new_figure, palette, titles
from analysis.formats import value
from analysis.reference import SearchRecommendation
from study.record.tags import DIVERGED


def complete(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that finished (diverged ones included: they report a value)."""
    return trials[trials["state"] == "COMPLETE"]


def best_trial(rows: pd.DataFrame, direction: str) -> pd.Series:
    """The row with the best value in ``direction`` (``maximize`` or ``minimize``)."""
    return rows.loc[rows["value"].idxmax() if direction == "maximize" else rows["value"].idxmin()]


def _mapping_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """The columns :func:`analysis.roles.mapping_caption` reads (paper batch, real batch, lr, steps)."""
    return trials.assign(**{roles.BATCH: trials["batch"]})


def _study_label(rows: pd.DataFrame) -> str:
    batch = rows["batch"].iloc[0]
    return f"batch {batch}" if rows["batch"].nunique() <= 1 and batch is not None else rows["optuna_study"].iloc[0]


def _scatter(ax, rows: pd.DataFrame, x: str, color, label: str | None, diverged_label: str) -> None:
    """Finished trials as dots, diverged ones as ✕."""
    normal = rows[rows["outcome"] != DIVERGED]
    ax.scatter(normal[x], normal["value"], color=color, label=label, zorder=3)
    diverged = rows[rows["outcome"] == DIVERGED]
    if len(diverged):
        ax.scatter(diverged[x], diverged["value"], color=color, marker="X", s=70, edgecolor="black",
                   linewidth=0.5, zorder=4, label=diverged_label)


def history_figure(trials: pd.DataFrame, metric: str, direction: str) -> Figure:
    """Value per trial (○ complete, ✕ diverged, hollow ○ pruned at its last reported
    value) and the best so far, one colour per Optuna study (paper batch size)."""
    figure, (ax,) = new_figure()
    groups = list(trials.groupby("optuna_study", sort=False))
    for color, (_, rows) in zip(palette(range(len(groups))), groups):
        rows = rows.sort_values("number")
        label = _study_label(rows)
        done = complete(rows)
        _scatter(ax, done, "number", color, label, f"{label}: diverged")
        pruned = rows[rows["state"] == "PRUNED"]
        if len(pruned):
            ax.scatter(pruned["number"], pruned["last_value"], facecolor="none", edgecolor=color, zorder=3,
                       label=f"{label}: pruned (last reported)")
        if len(done):
            best = done["value"].cummax() if direction == "maximize" else done["value"].cummin()
            ax.step(done["number"], best, where="post", color=color, alpha=0.7, label=f"{label}: best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel(axis_label(metric))
    ax.legend(fontsize=7)
    titles(figure, _mapping_frame(trials), "Optimisation history")
    return figure


def param_figure(trials: pd.DataFrame, key: str, metric: str, direction: str, *, logx: bool,
                 recommendation: SearchRecommendation | None = None) -> Figure:
    """``key`` against the metric of complete trials, one colour per paper batch size
    when it varies; ★ marks the best trial of each; the paper's recommended value for
    ``key`` (if ``recommendation`` is for it) is a dashed line."""
    figure, (ax,) = new_figure()
    done = complete(trials)
    done = done[done[key].notna()]
    batches = list(dict.fromkeys(done["batch"]))
    for color, batch in zip(palette(batches), batches):
        rows = done[done["batch"] == batch]
        label = f"paper batch {batch}" if len(batches) > 1 else None
        _scatter(ax, rows, key, color, label, "diverged" + (f" (batch {batch})" if label else ""))
        best = best_trial(rows, direction)
        ax.scatter([best[key]], [best["value"]], marker="*", s=260, color=color, edgecolor="black", zorder=5,
                   label=f"best {key} = {value(best[key])}" + (f" (batch {batch})" if label else ""))
    if recommendation is not None and recommendation.key == key:
        ax.axvline(recommendation.value, color="0.3", linestyle="--", label=f"paper: {recommendation.text()}")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(axis_label(key))
    ax.set_ylabel(axis_label(metric))
    ax.legend(fontsize=7)
    titles(figure, _mapping_frame(trials), f"{key} against {metric}")
    return figure


def importance_figure(importances: dict[str, dict[str, float]]) -> Figure:
    """Horizontal bars of fANOVA importance per searched key, one panel per Optuna study."""
    figure, axes = new_figure(ncols=len(importances), width=4.8)
    for ax, (label, values) in zip(axes, importances.items()):
        keys = list(values)[::-1]
        ax.barh(keys, [values[k] for k in keys], color=palette(keys))
        ax.set_xlabel("importance (fANOVA, sums to 1)")
        ax.set_title(label, fontsize=10)
    figure.suptitle("Parameter importance", fontsize=11, fontweight="bold")
    return figure
