"""A search's report (``nfstudy report NAME`` for a study with a ``search:`` section).

Reads the Optuna storage (:mod:`analysis.trials`): every Optuna study ``nfstudy search``
made for this study (one per search space and fixed config, e.g. one per ``--set
data.batch_size=…``). Draws the optimisation history, each searched key against the metric
(log x for log ranges, one colour per paper batch size when it varies) and, with more than
one searched key, the parameter importances (``optuna.importance``). Puts what the paper
recommends for a searched key (:class:`analysis.reference.SearchRecommendation`, e.g. λ =
0.01 for batch 1024–4096) beside what the search found. Writes ``report.md``,
``report.html``, ``summary.json`` (:mod:`analysis.document`) and PNG + SVG figures.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.storages import BaseStorage

from analysis import roles
from analysis.document import Section, Table, save_figures, write
from analysis.formats import score, value
from analysis.reference import SCALE_NOTE, SearchRecommendation, search_recommendation
from analysis.search_figures import best_trial, complete, history_figure, importance_figure, param_figure
from analysis.trials import load_trials, open_storage, shown_url
from study.record.tags import DIVERGED

GOOD_MARGIN = 0.01
"""Trials within this much of the best value (one top-1 point) form the "good region"."""


def good_region(rows: pd.DataFrame, key: str, direction: str, margin: float = GOOD_MARGIN) -> tuple | None:
    """The ``(min, max)`` of ``key`` over complete, non-diverged trials within ``margin``
    of the best value (absolute), or None without such trials."""
    done = complete(rows)
    done = done[done["outcome"] != DIVERGED]
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
        storage: the Optuna storage URL the searches used (a missing SQLite or journal file
            means no trials; it is never created).
        tracking_uri: the MLflow store of the trials' runs; the report is logged as artifact
            ``report/`` of each Optuna study's parent run found there.
        out_dir: the folder to write (created).
        command: the command line that regenerates this report.

    Returns:
        ``{"markdown": Path, "html": Path, "summary": Path, "figures": [Path, ...],
        "best": [{"optuna_study", "batch", "params", "value"}, ...]}``.

    Raises:
        TrackingError: the Optuna storage cannot be read.
    """
    store = open_storage(storage)
    trials, studies = load_trials(spec.name, store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric = spec.search.metric or spec.metric
    keys = list(spec.search.space)
    recommendation = search_recommendation(spec.paper, keys)
    sections = [Section("Study", [
        spec.description or "",
        f"Regenerate: `{command}`",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from Optuna storage `{shown_url(storage)}`; "
        f"trials are child runs of MLflow experiment `search:{spec.name}` in "
        f"`{tracking_uri or 'the default store'}`.",
    ]), _search_section(spec, studies, metric)]
    written, best_rows = [], []
    if trials.empty:
        sections.append(Section("Results", [f"**No trials yet.** Run `nfstudy search {spec.name} --trials 20`."]))
    else:
        table, best_rows = _paper_table(trials, studies, keys, recommendation)
        counts = trials["outcome"].value_counts()
        sections.append(Section("The paper beside the search", [
            (recommendation.summary() if recommendation else
             f"No paper result recommends a value for {', '.join(f'`{k}`' for k in keys)}.")
            + f" Best trials are selected on `{metric}`; `{roles.TEST_METRIC}` is the held-out split of the same "
            f"trial. The good region spans the trials within {GOOD_MARGIN:g} of the best value.",
            f"{len(trials)} trials: " + ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) + ".",
            table,
        ]))
        images, written = save_figures(_figures(spec, trials, studies, store, metric, recommendation), out)
        sections += [Section("Figures", images), Section("Scale", [SCALE_NOTE]), _trials_section(trials, keys)]
    n_complete = len(complete(trials)) if not trials.empty else 0
    paths = write(out, f"Search report: {spec.name}", sections,
                  summary={"study": spec.name, "paper": spec.paper, "n_results": n_complete, "verdicts": [],
                           "best": best_rows})
    _log_to_parents(studies, tracking_uri, out)
    return {**paths, "figures": written, "best": best_rows}


def _figures(spec, trials, studies, store, metric, recommendation) -> list[tuple]:
    """The history, each numeric searched key against the metric, and (more than one key)
    the importances: ``(file name, figure, caption)``."""
    direction = _direction(studies)
    drawn = [("history", history_figure(trials, metric, direction), "Optimisation history")]
    for key in spec.search.space:
        if key in trials.columns and pd.api.types.is_numeric_dtype(trials[key].dropna().infer_objects()):
            logx = bool(getattr(spec.search.space[key], "log", False))
            drawn.append((f"param-{key.replace('.', '_')}",
                          param_figure(trials, key, metric, direction, logx=logx, recommendation=recommendation),
                          f"{key} against {metric}"))
    importances = _importances(store, studies) if len(spec.search.space) > 1 else {}
    if importances:
        drawn.append(("importance", importance_figure(importances), "Parameter importance (fANOVA)"))
    return drawn


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


def _search_section(spec, studies: dict[str, dict], metric: str) -> Section:
    search = spec.search
    space = [[f"`{key}`", json.dumps(item) if isinstance(item, list) else
              ", ".join(f"{k} {value(v)}" for k, v in item.model_dump().items() if v not in (None, False))]
             for key, item in search.space.items()]
    options = search.pruner.model_dump(exclude_defaults=True, exclude={"name"})
    pruner = f" ({', '.join(f'{k} {v}' for k, v in options.items())})" if options else ""
    blocks = [
        f"Metric `{metric}`, {_direction(studies) if studies else search.direction or 'default'} direction; "
        f"sampler `{search.sampler.name}`; pruner `{search.pruner.name}`{pruner}; one seed per trial.",
        Table(["searched key", "range"], space),
    ]
    if studies:
        rows = []
        for name, attrs in studies.items():
            fixed = attrs.get("fixed", {})
            batch = fixed.get(roles.BATCH)
            rows.append([f"`{name}`", value(batch), value(roles.real_batch(batch, fixed.get(roles.DEVICE_BATCH))),
                         value(fixed.get(roles.LR)), value(fixed.get(roles.STEPS)), fixed.get(roles.MODEL, "")])
        blocks += ["Optuna studies (one per space and fixed config; the paper batch sets the learning rate "
                   "lr·B/256 while the real batch is what each step draws, as the README's scale presets map it):",
                   Table(["Optuna study", "paper batch", "real batch", "lr per 256", "steps", "model"], rows)]
    return Section("Search", blocks)


def _paper_table(trials: pd.DataFrame, studies: dict[str, dict], keys: list[str],
                 recommendation: SearchRecommendation | None) -> tuple[Table, list[dict]]:
    key = recommendation.key if recommendation else keys[0]
    paper = ([f"paper recommends {recommendation.symbol}", f"paper's {recommendation.symbol} in good region"]
             if recommendation else [])
    header = ["Optuna study", "paper batch", "trials (complete/pruned/diverged)", f"best {key}", "best value",
              f"{roles.TEST_METRIC} of best", f"good {key} region", *paper]
    rows, best_rows = [], []
    for name, group in trials.groupby("optuna_study", sort=False):
        direction = studies[name]["direction"]
        done = complete(group)
        batch = group["batch"].iloc[0] if group["batch"].nunique() <= 1 else None
        counts = (f"{len(done)}/{int((group['state'] == 'PRUNED').sum())}/"
                  f"{int((group['outcome'] == DIVERGED).sum())}")
        recommended = [recommendation.at(batch)] if recommendation else []
        if done.empty:
            rows.append([f"`{name}`", value(batch), counts, "-", "-", "-", "-", *recommended, *(["-"] if paper else [])])
            continue
        best = best_trial(done, direction)
        region = good_region(group, key, direction)
        inside = []
        if recommendation:
            inside = ["-" if region is None else "yes" if region[0] <= recommendation.value <= region[1] else "no"]
        rows.append([f"`{name}`", value(batch), counts, value(best[key]), score(best["value"]),
                     score(best.get(roles.TEST_METRIC)),
                     "-" if region is None else f"{value(region[0])} – {value(region[1])}", *recommended, *inside])
        best_rows.append({"optuna_study": name, "batch": batch, "value": float(best["value"]),
                          "params": {k: _plain(best[k]) for k in keys if k in best}})
    return Table(header, rows), best_rows


def _plain(item):
    return item.item() if isinstance(item, np.generic) else item


def _importances(store: BaseStorage, studies: dict[str, dict]) -> dict[str, dict[str, float]]:
    found = {}
    for name in studies:
        study = optuna.load_study(study_name=name, storage=store)
        done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if len(done) >= 2 and len({k for t in done for k in t.params}) > 1:
            try:
                found[name.rsplit(":", 1)[-1]] = optuna.importance.get_param_importances(study)
            except (RuntimeError, ValueError):  # too few distinct values to fit the forest
                continue
    return found


def _trials_section(trials: pd.DataFrame, keys: list[str]) -> Section:
    rows = [[row["optuna_study"].rsplit(":", 1)[-1], str(row["number"]), value(row["batch"]),
             *(value(row.get(k)) for k in keys), row["state"], row["outcome"], score(row["value"]),
             f"`{row['mlflow_run_id']}`"] for _, row in trials.iterrows()]
    return Section("Trials", [f"{len(trials)} trials; MLflow run ids link each to its child run.",
                              Table(["study hash", "trial", "paper batch", *keys, "state", "outcome", "value",
                                     "MLflow run"], rows)], collapsed=True)
