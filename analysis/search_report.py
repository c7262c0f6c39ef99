"""A search's report (``nfstudy report NAME`` for a study with a ``search:`` section).

Reads the Optuna storage: every Optuna study ``nfstudy search`` made for this study (one
per search space and fixed config, e.g. one per ``--set data.batch_size=…``). Draws the
optimisation history, each searched key against the metric (log x for log ranges, one
colour per paper batch size when it varies) and, with more than one searched key, the
parameter importances (``optuna.importance``). Puts the paper's recommendation beside
what the search found: λ = 0.01 for batch 1024–4096 (PAPER.md §4). Writes ``report.md``,
``report.html`` (the style of :mod:`analysis.report`), ``summary.json`` and PNG + SVG figures.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis import figures, roles
from analysis.report import SCALE_NOTE, _html, _Image, _markdown, _Section, _Table, _value
from study.run.search import STUDY_PREFIX, open_storage

#: PAPER.md §4: "λ = 0.01 for batch 1024–4096" (NF-ResNet-50/-200, ImageNet, 90 epochs).
PAPER_CLIPPING = 0.01
PAPER_BATCHES = (1024, 4096)
#: Trials within this much of the best value (one top-1 point) form the "good region".
GOOD_MARGIN = 0.01
TRIAL_COLUMNS = ["optuna_study", "batch", "number", "state", "outcome", "value", "last_value",
                 "pruned_epoch", "test/top1", "mlflow_run_id"]


def load_trials(study: str, storage: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Every trial of every Optuna study of search ``study``, one row each.

    Args:
        study: the nfstudy study name.
        storage: Optuna storage URL (or journal path); a missing SQLite file means no trials.

    Returns:
        ``(trials, studies)``: trials with :data:`TRIAL_COLUMNS` plus one column per
        searched key; ``studies`` maps each Optuna study name to its user attrs
        (``fixed`` config, ``space``, ``metric``…) plus ``direction``.
    """
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        return pd.DataFrame(columns=TRIAL_COLUMNS), {}
    store = open_storage(storage)
    rows, studies = [], {}
    for name in sorted(optuna.get_all_study_names(store)):
        if not name.startswith(f"{STUDY_PREFIX}{study}:"):
            continue
        loaded = optuna.load_study(study_name=name, storage=store)
        attrs = dict(loaded.user_attrs)
        studies[name] = {**attrs, "direction": loaded.direction.name.lower()}
        fixed = attrs.get("fixed", {})
        for trial in loaded.get_trials(deepcopy=False):
            steps = sorted(trial.intermediate_values)
            params = dict(trial.params)
            rows.append({
                "optuna_study": name,
                "batch": params.get(roles.BATCH, fixed.get(roles.BATCH)),
                "number": trial.number,
                "state": trial.state.name,
                "outcome": trial.user_attrs.get("outcome", trial.state.name.lower()),
                "value": trial.value,
                "last_value": trial.intermediate_values[steps[-1]] if steps else trial.value,
                "pruned_epoch": steps[-1] if trial.state.name == "PRUNED" and steps else None,
                "test/top1": trial.user_attrs.get("test/top1"),
                "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
                **{key: fixed.get(key) for key in (roles.DEVICE_BATCH, roles.LR, roles.STEPS)},
                **params,
            })
    return pd.DataFrame(rows, columns=list(dict.fromkeys(TRIAL_COLUMNS + [k for r in rows for k in r]))), studies


def history_figure(trials: pd.DataFrame, metric: str, direction: str) -> Figure:
    """Value per trial (○ complete, ✕ diverged, hollow ○ pruned at its last reported
    value) and the best so far, one colour per Optuna study (paper batch size)."""
    figure, (ax,) = figures._new_figure()
    groups = list(trials.groupby("optuna_study", sort=False))
    for color, (name, rows) in zip(figures._palette(range(len(groups))), groups):
        rows = rows.sort_values("number")
        label = _study_label(rows)
        done = rows[rows["state"] == "COMPLETE"]
        normal = done[done["outcome"] != "diverged"]
        ax.scatter(normal["number"], normal["value"], color=color, label=label, zorder=3)
        diverged = done[done["outcome"] == "diverged"]
        if len(diverged):
            ax.scatter(diverged["number"], diverged["value"], color=color, marker="X", s=70, edgecolor="black",
                       linewidth=0.5, zorder=4, label=f"{label}: diverged")
        pruned = rows[rows["state"] == "PRUNED"]
        if len(pruned):
            ax.scatter(pruned["number"], pruned["last_value"], facecolor="none", edgecolor=color, zorder=3,
                       label=f"{label}: pruned (last reported)")
        if len(done):
            best = done["value"].cummax() if direction == "maximize" else done["value"].cummin()
            ax.step(done["number"], best, where="post", color=color, alpha=0.7, label=f"{label}: best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel(figures._label(metric))
    ax.legend(fontsize=7)
    figures._titles(figure, _mapping_frame(trials), "Optimisation history")
    return figure


def param_figure(trials: pd.DataFrame, key: str, metric: str, direction: str, *, logx: bool) -> Figure:
    """``key`` against the metric of complete trials, one colour per paper batch size
    when it varies; ★ marks the best trial of each; λ gets the paper's 0.01 as a line."""
    figure, (ax,) = figures._new_figure()
    done = trials[(trials["state"] == "COMPLETE") & trials[key].notna()]
    batches = list(dict.fromkeys(done["batch"]))
    for color, batch in zip(figures._palette(batches), batches):
        rows = done[done["batch"] == batch]
        label = f"paper batch {batch}" if len(batches) > 1 else None
        normal = rows[rows["outcome"] != "diverged"]
        ax.scatter(normal[key], normal["value"], color=color, label=label, zorder=3)
        diverged = rows[rows["outcome"] == "diverged"]
        if len(diverged):
            ax.scatter(diverged[key], diverged["value"], color=color, marker="X", s=70, edgecolor="black",
                       linewidth=0.5, zorder=4, label="diverged" + (f" (batch {batch})" if label else ""))
        best = rows.loc[rows["value"].idxmax() if direction == "maximize" else rows["value"].idxmin()]
        ax.scatter([best[key]], [best["value"]], marker="*", s=260, color=color, edgecolor="black", zorder=5,
                   label=f"best {key} = {_value(best[key])}" + (f" (batch {batch})" if label else ""))
    if key == roles.CLIPPING:
        ax.axvline(PAPER_CLIPPING, color="0.3", linestyle="--",
                   label=f"paper: λ = {PAPER_CLIPPING} for batch {PAPER_BATCHES[0]}–{PAPER_BATCHES[1]}")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(figures._label(key))
    ax.set_ylabel(figures._label(metric))
    ax.legend(fontsize=7)
    figures._titles(figure, _mapping_frame(trials), f"{key} against {metric}")
    return figure


def importance_figure(importances: dict[str, dict[str, float]]) -> Figure:
    """Horizontal bars of fANOVA importance per searched key, one panel per Optuna study."""
    figure, axes = figures._new_figure(ncols=len(importances), width=4.8)
    for ax, (label, values) in zip(axes, importances.items()):
        keys = list(values)[::-1]
        ax.barh(keys, [values[k] for k in keys], color=figures._palette(keys))
        ax.set_xlabel("importance (fANOVA, sums to 1)")
        ax.set_title(label, fontsize=10)
    figure.suptitle("Parameter importance", fontsize=11, fontweight="bold")
    return figure


def paper_recommendation(batch) -> str:
    """What PAPER.md §4 recommends for λ at a paper batch size."""
    if batch is None:
        return "-"
    if PAPER_BATCHES[0] <= batch <= PAPER_BATCHES[1]:
        return f"{PAPER_CLIPPING:g}"
    if batch < PAPER_BATCHES[0]:
        return f"larger than {PAPER_CLIPPING:g} (grid up to 0.16; larger batches need smaller λ)"
    return f"at most {PAPER_CLIPPING:g} (beyond the paper's batches)"


def good_region(rows: pd.DataFrame, key: str, direction: str, margin: float = GOOD_MARGIN) -> tuple | None:
    """The ``(min, max)`` of ``key`` over complete, non-diverged trials within ``margin``
    of the best value (absolute), or None without such trials."""
    done = rows[(rows["state"] == "COMPLETE") & (rows["outcome"] != "diverged")]
    if done.empty:
        return None
    best = done["value"].max() if direction == "maximize" else done["value"].min()
    near = done[(done["value"] - best).abs() <= margin]
    return near[key].min(), near[key].max()


def build_search_report(spec, storage: str, tracking_uri: str | None, out_dir, command: str) -> dict:
    """Write a search's figures, ``report.md``, ``report.html`` and ``summary.json``.

    Example:
        >>> build_search_report(load_study("agc-lambda"), optuna_storage(), tracking_uri(),
        ...                     ".nfstudy/reports/agc-lambda", "nfstudy report agc-lambda")

    Args:
        spec: the study (a ``StudySpec`` with a ``search:`` section).
        storage: the Optuna storage URL the searches used.
        tracking_uri: the MLflow store of the trials' runs; the report is logged as artifact
            ``report/`` of each Optuna study's parent run found there.
        out_dir: the folder to write (created).
        command: the command line that regenerates this report.

    Returns:
        ``{"markdown": Path, "html": Path, "summary": Path, "figures": [Path, ...],
        "best": [{"optuna_study", "batch", "params", "value"}, ...]}``.

    Raises:
        TrackingError: the Optuna storage cannot be opened.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials, studies = load_trials(spec.name, storage)
    metric = spec.search.metric or spec.metric
    keys = list(spec.search.space)
    sections = [_Section("Study", [
        spec.description or "",
        f"Regenerate: `{command}`",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from Optuna storage `{storage}`; trials "
        f"are child runs of MLflow experiment `search:{spec.name}` in `{tracking_uri or 'the default store'}`.",
    ]), _search_section(spec, studies, metric)]
    written, best_rows = [], []
    if trials.empty:
        sections.append(_Section("Results", [f"**No trials yet.** Run `nfstudy search {spec.name} --trials 20`."]))
    else:
        table, best_rows = _paper_table(trials, studies, keys)
        counts = trials["outcome"].value_counts()
        sections.append(_Section("The paper beside the search", [
            f"PAPER.md §4: the paper's λ grid {{0.01, 0.02, 0.04, 0.08, 0.16}} at batch 256–4096 (NF-ResNet-50/-200, "
            f"ImageNet, 90 epochs) finds that larger batches need smaller λ and recommends λ = {PAPER_CLIPPING} for "
            f"batch {PAPER_BATCHES[0]}–{PAPER_BATCHES[1]}. Best trials are selected on `{metric}`; "
            f"`test/top1` is the held-out split of the same trial. The good region spans the trials within "
            f"{GOOD_MARGIN:g} of the best value.",
            f"{len(trials)} trials: " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) + ".",
            table,
        ]))
        images = []
        drawn = [("history", history_figure(trials, metric, _direction(studies)), "Optimisation history")]
        for key in keys:
            if key in trials.columns and pd.api.types.is_numeric_dtype(trials[key].dropna().infer_objects()):
                logx = bool(getattr(spec.search.space[key], "log", False))
                drawn.append((f"param-{key.replace('.', '_')}", param_figure(trials, key, metric, _direction(studies), logx=logx),
                              f"{key} against {metric}"))
        importances = _importances(storage, studies) if len(keys) > 1 else {}
        if importances:
            drawn.append(("importance", importance_figure(importances), "Parameter importance (fANOVA)"))
        for name, figure, caption in drawn:
            paths = figures.save_figure(figure, out / name)
            written += paths
            images.append(_Image(paths[0], caption))
        sections.append(_Section("Figures", images))
        sections.append(_Section("Scale", [SCALE_NOTE]))
        sections.append(_trials_section(trials, keys))
    title = f"Search report: {spec.name}"
    paths = {"markdown": out / "report.md", "html": out / "report.html", "summary": out / "summary.json"}
    paths["markdown"].write_text(_markdown(title, sections, out))
    paths["html"].write_text(_html(title, sections))
    n_complete = int((trials["state"] == "COMPLETE").sum()) if not trials.empty else 0
    paths["summary"].write_text(json.dumps({"study": spec.name, "paper": spec.paper, "n_results": n_complete,
                                            "verdicts": [], "best": best_rows}, indent=2, default=str))
    _log_to_parents(studies, tracking_uri, out)
    return {**paths, "figures": written, "best": best_rows}


def _log_to_parents(studies: dict[str, dict], tracking_uri: str | None, out: Path) -> None:
    """The report folder as artifact ``report/`` of each Optuna study's MLflow parent run, so
    the MLflow UI shows it beside the trials (as the grid report does); parents that are not
    in this tracking store are skipped."""
    client = MlflowClient(tracking_uri)
    for attrs in studies.values():
        parent = attrs.get("mlflow_parent_run_id")
        if not parent:
            continue
        try:
            client.get_run(parent)
        except MlflowException:
            continue
        client.log_artifacts(parent, str(out), "report")


def _direction(studies: dict[str, dict]) -> str:
    return next(iter(studies.values()))["direction"] if studies else "maximize"


def _study_label(rows: pd.DataFrame) -> str:
    batch = rows["batch"].iloc[0]
    return f"batch {batch}" if rows["batch"].nunique() <= 1 and batch is not None else rows["optuna_study"].iloc[0]


def _mapping_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """The columns :func:`analysis.roles.mapping_caption` reads (paper batch, real batch, lr, steps)."""
    return trials.assign(**{roles.BATCH: trials["batch"]})


def _search_section(spec, studies: dict[str, dict], metric: str) -> _Section:
    search = spec.search
    space = [[f"`{key}`", json.dumps(value) if isinstance(value, list) else
              ", ".join(f"{k} {_value(v)}" for k, v in value.model_dump().items() if v not in (None, False))]
             for key, value in search.space.items()]
    options = search.pruner.model_dump(exclude_defaults=True, exclude={"name"})
    pruner = f" ({', '.join(f'{k} {v}' for k, v in options.items())})" if options else ""
    blocks = [
        f"Metric `{metric}`, {_direction(studies) if studies else search.direction or 'default'} direction; "
        f"sampler `{search.sampler.name}`; pruner `{search.pruner.name}`{pruner}; one seed per trial.",
        _Table(["searched key", "range"], space),
    ]
    if studies:
        rows = []
        for name, attrs in studies.items():
            fixed = attrs.get("fixed", {})
            batch, cap = fixed.get(roles.BATCH), fixed.get(roles.DEVICE_BATCH)
            real = batch if cap is None or batch is None else min(batch, cap)
            rows.append([f"`{name}`", _value(batch), _value(real),
                         _value(fixed.get(roles.LR)), _value(fixed.get(roles.STEPS)), fixed.get("model.name", "")])
        blocks += ["Optuna studies (one per space and fixed config; the paper batch sets the learning rate "
                   "lr·B/256 while the real batch is what each step draws, PAPER.md §8):",
                   _Table(["Optuna study", "paper batch", "real batch", "lr per 256", "steps", "model"], rows)]
    return _Section("Search", blocks)


def _paper_table(trials: pd.DataFrame, studies: dict[str, dict], keys: list[str]) -> tuple[_Table, list[dict]]:
    key = roles.CLIPPING if roles.CLIPPING in keys else keys[0]
    header = ["Optuna study", "paper batch", "trials (complete/pruned/diverged)", f"best {key}", "best value",
              "test/top1 of best", f"good {key} region", "paper recommends λ", "paper's λ in good region"]
    rows, best_rows = [], []
    for name, group in trials.groupby("optuna_study", sort=False):
        direction = studies[name]["direction"]
        done = group[group["state"] == "COMPLETE"]
        batch = group["batch"].iloc[0] if group["batch"].nunique() <= 1 else None
        counts = (f"{len(done)}/{int((group['state'] == 'PRUNED').sum())}/"
                  f"{int((group['outcome'] == 'diverged').sum())}")
        if done.empty:
            rows.append([f"`{name}`", _value(batch), counts, "-", "-", "-", "-", paper_recommendation(batch), "-"])
            continue
        best = done.loc[done["value"].idxmax() if direction == "maximize" else done["value"].idxmin()]
        region = good_region(group, key, direction)
        inside = "-"
        if region is not None and key == roles.CLIPPING:
            inside = "yes" if region[0] <= PAPER_CLIPPING <= region[1] else "no"
        test = best.get("test/top1")
        rows.append([f"`{name}`", _value(batch), counts, _value(best[key]), f"{best['value']:.4f}",
                     "-" if test is None or (isinstance(test, float) and math.isnan(test)) else f"{test:.4f}",
                     "-" if region is None else f"{_value(region[0])} – {_value(region[1])}",
                     paper_recommendation(batch), inside])
        best_rows.append({"optuna_study": name, "batch": batch, "value": float(best["value"]),
                          "params": {k: _plain(best[k]) for k in keys if k in best}})
    return _Table(header, rows), best_rows


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _importances(storage: str, studies: dict[str, dict]) -> dict[str, dict[str, float]]:
    store = open_storage(storage)
    found = {}
    for name in studies:
        study = optuna.load_study(study_name=name, storage=store)
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if len(complete) >= 2 and len({k for t in complete for k in t.params}) > 1:
            try:
                found[name.rsplit(":", 1)[-1]] = optuna.importance.get_param_importances(study)
            except (RuntimeError, ValueError):  # too few distinct values to fit the forest
                continue
    return found


def _trials_section(trials: pd.DataFrame, keys: list[str]) -> _Section:
    rows = [[row["optuna_study"].rsplit(":", 1)[-1], str(row["number"]), _value(row["batch"]),
             *(_value(row.get(k)) for k in keys), row["state"], row["outcome"],
             "-" if row["value"] is None or row["value"] != row["value"] else f"{row['value']:.4f}",
             f"`{row['mlflow_run_id']}`"] for _, row in trials.iterrows()]
    return _Section("Trials", [f"{len(trials)} trials; MLflow run ids link each to its child run.",
                               _Table(["study hash", "trial", "paper batch", *keys, "state", "outcome", "value",
                                       "MLflow run"], rows)], collapsed=True)
