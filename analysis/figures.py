"""The report's figures: one function per figure kind, one style.

Every function takes result runs (:func:`analysis.runs.results`) and returns a
matplotlib ``Figure``; :func:`save_figure` writes it as PNG and SVG.
Figures are built with ``matplotlib.figure.Figure`` (the Agg canvas), never pyplot: no
display, no global figure list, safe in workers.

Conventions: points are means over seeds with the 95% band or bar of the report's tables
(:func:`analysis.stats.summarise`: an accuracy's interval stays inside [0, 1]); each line
has its own marker shape and is dodged sideways a little, so equal means never hide one
another; floor-bound cells (:mod:`analysis.floor`: SkipInit gains that cannot leave AGC's
ε floor at the run's budget) are drawn hollow; diverged runs enter the mean with their
recorded accuracy and are also drawn as an ✕ at the bottom of the axes (legend
"diverged"); the clipping threshold λ and batch sizes are on log axes, as in the paper;
when the paper's batch sizes were mapped to smaller real ones, the subtitle says so
(:func:`analysis.roles.mapping_caption`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from analysis import floor, roles
from analysis.stats import group_rows, summarise
from study.record.tags import DIVERGED

LABELS = {
    roles.CLIPPING: "clipping threshold λ (agc.clipping)",
    roles.BATCH: "paper batch size B (data.batch_size)",
    roles.AGC_MODE: "AGC mode (agc.mode)",
    roles.SAM_MODE: "SAM mode (sam.mode)",
    roles.VAL_METRIC: "validation top-1 (val/top1)",
    roles.TEST_METRIC: "test top-1 (test/top1)",
    roles.STEP_MS: "training step time, ms (time/step_ms)",
}
_STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.9)}
_DIVERGED_Y = 0.03  # axes fraction where diverged runs are marked
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
"""One marker shape per line, in order."""
DODGE = 0.04
"""How far lines are moved apart sideways: a factor on a log axis, a fraction of the span otherwise."""
FLOOR_LABEL = f"hollow: floor-bound (SkipInit gain ≤ {floor.FLOOR_GAIN:g})"


def axis_label(name) -> str:
    """The axis label of a column: what it is, then its key."""
    return LABELS.get(name, str(name))


def new_figure(ncols: int = 1, width: float = 6.4) -> tuple[Figure, list]:
    """A figure in the report's style with ``ncols`` axes side by side."""
    with matplotlib.rc_context(_STYLE):
        figure = Figure(figsize=(width * ncols, 4.4), layout="constrained")
        axes = figure.subplots(1, ncols, squeeze=False)[0].tolist()
    return figure, axes


def palette(levels) -> list:
    """One colour per level: a sequential map for more than two numbers, else distinct hues."""
    numeric = all(isinstance(v, (int, float, np.number)) and v is not None for v in levels)
    return sns.color_palette("viridis" if numeric and len(levels) > 2 else "deep", max(len(levels), 1))


def titles(figure: Figure, frame: pd.DataFrame, title: str | None) -> None:
    """The figure's title, and how the paper's batch sizes were mapped as its bottom line."""
    caption = roles.mapping_caption(frame)
    if title:
        figure.suptitle(title, fontsize=11, fontweight="bold")
    if caption:
        figure.supxlabel(caption, fontsize=8, color="0.35")


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)


def _positions(frame: pd.DataFrame, x: str):
    """x values to plot and their tick labels: numbers as they are, anything else by category."""
    levels = [values[0] for values, _ in group_rows(frame, [x])]
    if _numeric(levels):
        return {v: float(v) for v in levels}, levels
    return {v: float(i) for i, v in enumerate(levels)}, levels


def _mark_diverged(ax, xs, color, labelled: list) -> None:
    """An ✕ at the bottom of the axes per diverged run (one legend entry per axes)."""
    if len(xs) == 0:
        return
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    ax.scatter(xs, [_DIVERGED_Y] * len(xs), transform=transform, marker="X", s=60, color=color,
               edgecolor="black", linewidth=0.5, zorder=5, clip_on=False,
               label=None if labelled else DIVERGED)
    labelled.append(True)


def _hue_label(frame: pd.DataFrame, hue: str, item) -> str:
    """A legend entry; a capped paper batch says the lr it set (``lr 0.1 (paper batch 256)``)."""
    if hue == roles.BATCH and roles.is_capped(frame):
        return roles.batch_phrase(frame, item, short=True)
    return f"{hue} = {item}"


def _dodged(xs: np.ndarray, index: int, count: int, log: bool, span: float) -> np.ndarray:
    """``xs`` moved sideways for line ``index`` of ``count``, so that lines never sit on one another."""
    shift = index - (count - 1) / 2
    return xs * (1 + DODGE) ** shift if log else xs + DODGE * span * shift


def _cell_bound(rows: pd.DataFrame, x: str) -> pd.Series:
    """Per ``x`` value of one line: whether every run there is floor-bound."""
    bound = floor.floor_bound(rows)
    return bound.groupby(rows[x].map(str)).all()


def _draw_lines(ax, frame: pd.DataFrame, x: str, y: str, hue: str | None, logx: bool) -> None:
    frame = frame[frame[x].notna()]
    where, levels = _positions(frame, x)
    hues = [values[0] for values, _ in group_rows(frame, [hue])] if hue else [None]
    log = logx and _numeric(levels)
    positions = list(where.values())
    span = (max(positions) - min(positions)) or 1.0
    labelled: list = []
    diverged_marks, hollow_shown = [], False
    groups = list(group_rows(frame, [hue] if hue else []))
    for index, (color, (values, rows)) in enumerate(zip(palette(hues), groups)):
        stats = summarise(rows, [x], y)
        xs = _dodged(stats[x].map(where).to_numpy(dtype=float), index, len(groups), log, span)
        marker = MARKERS[index % len(MARKERS)]
        hollow = stats[x].map(str).map(_cell_bound(rows, x)).fillna(False).to_numpy(dtype=bool)
        label = _hue_label(frame, hue, values[0]) if hue else y
        ax.plot(xs, stats["mean"], color=color, label=label, marker=marker, markevery=list(np.flatnonzero(~hollow)))
        if hollow.any():
            ax.scatter(xs[hollow], stats["mean"][hollow], marker=marker, facecolors="white", edgecolors=[color],
                       linewidths=1.5, zorder=4)
            hollow_shown = True
        ax.fill_between(xs, stats["low"].astype(float), stats["high"].astype(float), color=color, alpha=0.2,
                        linewidth=0)
        diverged = rows[rows.get("outcome") == DIVERGED]
        diverged_marks.append((_dodged(diverged[x].map(where).to_numpy(dtype=float), index, len(groups), log, span),
                               color))
    for xs, color in diverged_marks:
        _mark_diverged(ax, xs, color, labelled)
    if log:
        ax.set_xscale("log")
    ax.set_xticks([where[v] for v in levels], [f"{v:g}" if _numeric([v]) else str(v) for v in levels])
    ax.minorticks_off()
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    _legend(ax, Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="0.3")
            if hollow_shown else None)


def _draw_bars(ax, frame: pd.DataFrame, x: str, y: str, hue: str | None) -> None:
    levels = [values[0] for values, _ in group_rows(frame, [x])]
    where = {v: float(i) for i, v in enumerate(levels)}  # bars sit at categories, numbers or not
    hues = [values[0] for values, _ in group_rows(frame, [hue])] if hue else [None]
    width = 0.8 / len(hues)
    labelled: list = []
    hollow_shown = False
    for index, (color, (values, rows)) in enumerate(zip(palette(hues), group_rows(frame, [hue] if hue else []))):
        offset = (index - (len(hues) - 1) / 2) * width
        stats = summarise(rows, [x], y)
        xs = stats[x].map(where).to_numpy(dtype=float) + offset
        means = stats["mean"].astype(float).to_numpy()
        errors = np.abs(np.vstack([means - stats["low"].astype(float), stats["high"].astype(float) - means]))
        bars = ax.bar(xs, means, width=width * 0.95, color=color, label=_hue_label(frame, hue, values[0]) if hue else None)
        for bar, hollow in zip(bars, stats[x].map(str).map(_cell_bound(rows, x)).fillna(False)):
            if hollow:
                bar.set(facecolor="white", edgecolor=color, hatch="//", linewidth=1.5)
                hollow_shown = True
        ax.errorbar(xs, means, yerr=np.nan_to_num(errors), fmt="none", ecolor="black", capsize=3, linewidth=1)
        diverged = rows[rows.get("outcome") == DIVERGED]
        _mark_diverged(ax, diverged[x].map(where).to_numpy(dtype=float) + offset, color, labelled)
    ax.set_xticks(range(len(levels)), [str(v) for v in levels])
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    if hue or labelled or hollow_shown:
        _legend(ax, Patch(facecolor="white", edgecolor="0.3", hatch="//") if hollow_shown else None)


def _legend(ax, floor_handle) -> None:
    """The axes' legend, with an entry for hollow (floor-bound) marks when ``floor_handle`` is given."""
    handles, labels = ax.get_legend_handles_labels()
    if floor_handle is not None:
        handles, labels = [*handles, floor_handle], [*labels, FLOOR_LABEL]
    ax.legend(handles, labels, fontsize=8)


def line(frame: pd.DataFrame, x: str, y: str, *, hue: str | None = None, logx: bool = False,
         title: str | None = None) -> Figure:
    """Mean of ``y`` against ``x`` over seeds, one line (with CI band) per ``hue`` value.

    The ``kind: line`` entry of a study's ``figures:`` list. Runs with no ``x`` value
    (e.g. AGC off on a λ axis) are left out of this figure.

    Example:
        >>> save_figure(line(df, "agc.clipping", "val/top1", hue="data.batch_size", logx=True), "out/fig")

    Args:
        frame: result runs.
        x, y: column names (a param and a metric).
        hue: a column drawn as one line per value, or None.
        logx: log-scale x axis, ticks at the values that ran.
        title: figure title.

    Returns:
        The figure (unsaved).
    """
    figure, (ax,) = new_figure()
    _draw_lines(ax, frame, x, y, hue, logx)
    titles(figure, frame, title)
    return figure


def bar(frame: pd.DataFrame, x: str, y: str, *, hue: str | None = None, title: str | None = None) -> Figure:
    """Mean of ``y`` per ``x`` value with 95% CI error bars, bars grouped by ``hue``.

    The ``kind: bar`` entry of a study's ``figures:`` list.

    Returns:
        The figure (unsaved).
    """
    figure, (ax,) = new_figure()
    _draw_bars(ax, frame, x, y, hue)
    titles(figure, frame, title)
    return figure


def fig2a_batch_scaling(frame: pd.DataFrame, *, select_metric: str = roles.VAL_METRIC,
                        metric: str = roles.TEST_METRIC) -> Figure:
    """Paper Fig. 2a: ``metric`` against batch size for BN, NF and NF + AGC.

    NF + AGC shows, per batch size, the λ with the best mean ``select_metric`` (selected
    on validation, drawn on test).

    Returns:
        The figure (unsaved).
    """
    family = roles.agc_family(frame)
    labelled = frame.assign(model=family.values)
    agc = roles.best_option(labelled[family.values == roles.NF_AGC], roles.CLIPPING, select_metric,
                            by=[roles.BATCH])
    shown = pd.concat([labelled[family.values != roles.NF_AGC], agc.drop(columns="selected_mean")])
    return line(shown, roles.BATCH, metric, hue="model", logx=True,
                title=f"Batch-size scaling (paper Fig. 2a; AGC λ selected on {select_metric})")


def fig2b_clip_threshold(frame: pd.DataFrame, *, metric: str = roles.TEST_METRIC) -> Figure:
    """Paper Fig. 2b: ``metric`` against λ (log axis), one line per batch size.

    Returns:
        The figure (unsaved).
    """
    return line(frame, roles.CLIPPING, metric, hue=roles.BATCH, logx=True,
                title="Clipping threshold against batch size (paper Fig. 2b)")


def clip_budget(frame: pd.DataFrame, *, metric: str = roles.TEST_METRIC) -> Figure:
    """Fig. 2b at one batch size against the step budget: ``metric`` against λ (log axis),
    one line per ``train.steps`` (floor-bound cells hollow, as in every line figure).

    Returns:
        The figure (unsaved).
    """
    return line(frame, roles.CLIPPING, metric, hue=roles.STEPS, logx=True,
                title="Clipping threshold against the step budget (AGC's ε floor)")


def unit_vs_layer(frame: pd.DataFrame, *, metric: str = roles.TEST_METRIC, hue: str | None = None) -> Figure:
    """Unit-wise against layer-wise AGC (paper §4): bars of ``metric`` per ``agc.mode``.

    Returns:
        The figure (unsaved).
    """
    return bar(frame, roles.AGC_MODE, metric, hue=hue, title="Unit-wise against layer-wise AGC (paper §4)")


def final_layer(frame: pd.DataFrame, *, metric: str = roles.TEST_METRIC, hue: str | None = None) -> Figure:
    """Clipping the classifier or not (paper §4.1): bars of ``metric``.

    Returns:
        The figure (unsaved).
    """
    labelled = frame.assign(classifier=roles.classifier_clipping(frame).values)
    return bar(labelled, "classifier", metric, hue=hue, title="Clipping the final linear layer (paper §4.1)")


def bn_vs_nf(frame: pd.DataFrame, *, metric: str = roles.TEST_METRIC) -> Figure:
    """Paper Table 6: accuracy (left) and training step time (right) of NF against BN.

    Returns:
        The figure (unsaved).
    """
    labelled = frame.assign(model=roles.table6_family(frame).values)
    figure, (left, right) = new_figure(ncols=2, width=4.6)
    _draw_bars(left, labelled, "model", metric, None)
    _draw_bars(right, labelled, "model", roles.STEP_MS, None)
    titles(figure, frame, "NF-ResNet against its BN twin (paper Table 6)")
    return figure


def sam_cost(frame: pd.DataFrame, *, metric: str = roles.TEST_METRIC) -> Figure:
    """Paper Table 3 / App. A.4: ``metric`` against step time relative to SAM off.

    One point per ``sam.mode`` with 95% CI bars on both axes; the cost is each run's
    ``time/step_ms`` divided by the mean step time of ``sam.mode = off`` (or of the
    cheapest mode when no run has SAM off).

    Returns:
        The figure (unsaved).
    """
    figure, (ax,) = new_figure()
    modes = summarise(frame, [roles.SAM_MODE], roles.STEP_MS)
    off = modes[modes[roles.SAM_MODE] == "off"]["mean"]
    reference_ms = float(off.iloc[0]) if len(off) else float(modes["mean"].min())
    relative = frame.assign(cost=frame[roles.STEP_MS] / reference_ms)
    labelled: list = []
    for color, (values, rows) in zip(palette(modes[roles.SAM_MODE]), group_rows(relative, [roles.SAM_MODE])):
        cost = summarise(rows, [], "cost").iloc[0]
        accuracy = summarise(rows, [], metric).iloc[0]
        ax.errorbar([cost["mean"]], [accuracy["mean"]],
                    xerr=[[np.nan_to_num(cost["mean"] - cost["low"])], [np.nan_to_num(cost["high"] - cost["mean"])]],
                    yerr=[[np.nan_to_num(accuracy["mean"] - accuracy["low"])],
                          [np.nan_to_num(accuracy["high"] - accuracy["mean"])]],
                    fmt="o", color=color, capsize=3, markersize=8, label=f"sam.mode = {values[0]}")
        diverged = rows[rows["outcome"] == DIVERGED]
        _mark_diverged(ax, diverged["cost"].to_numpy(dtype=float), color, labelled)
    ax.axvline(1.0, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("step time relative to SAM off (time/step_ms ratio)")
    ax.set_ylabel(axis_label(metric))
    ax.legend(fontsize=8)
    titles(figure, frame, "SAM: accuracy against cost per step (paper Table 3, App. A.4)")
    return figure


def signal_propagation(spp: pd.DataFrame) -> Figure:
    """Signal propagation at initialisation (Brock, De, Smith 2021, "Characterizing signal
    propagation to close the performance gap in unnormalized ResNets", arXiv 2101.08692,
    Fig. 1): average channel squared mean, average channel variance and residual-branch
    variance at the output of every residual block, one line per model.

    Args:
        spp: signal-propagation rows of one or more models (the data
            :class:`analysis.reference.SignalPropagation` describes): ``model``, ``block``,
            ``stage``, ``avg_channel_squared_mean``, ``avg_channel_variance``,
            ``residual_variance``.

    Returns:
        The figure (unsaved); stage transitions are dotted vertical lines.
    """
    panels = (("avg_channel_squared_mean", "average channel squared mean"), ("avg_channel_variance", "average channel variance"),
              ("residual_variance", "residual-branch variance"))
    figure, axes = new_figure(ncols=3, width=4.2)
    models = [values[0] for values, _ in group_rows(spp, [roles.SPP_MODEL])]
    for ax, (column, label) in zip(axes, panels):
        for color, (values, rows) in zip(palette(models), group_rows(spp, [roles.SPP_MODEL])):
            rows = rows.sort_values("block")
            ax.plot(rows["block"], rows[column], marker=".", color=color, label=str(values[0]))
        transitions = spp.sort_values("block").drop_duplicates("stage")["block"].iloc[1:]
        for block in transitions:
            ax.axvline(block - 0.5, color="0.6", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("residual block")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    figure.suptitle("Signal propagation at initialisation ([I] Fig. 1)", fontsize=11, fontweight="bold")
    return figure


def save_figure(figure: Figure, out_base) -> list[Path]:
    """Write ``out_base.png`` (120 dpi) and ``out_base.svg``; the folder is created.

    Returns:
        The two paths written.
    """
    base = Path(out_base)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=120)
    return paths
