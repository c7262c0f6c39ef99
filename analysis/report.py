"""A study's report: MLflow runs → tables, figures, verdicts → ``report.md`` + ``report.html``.

One report per study (``nfstudy report NAME``) and an index over studies (``--all``). The
sections are rendered by :mod:`analysis.document`; the paper's side (claims, figure, numbers)
comes from the study's entry in :mod:`analysis.reference`. The report is also logged on the
study's parent run under ``report/``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis import figures, roles
from analysis.document import Section, Table, VerdictBadge, save_figures, write
from analysis.formats import metric_ci, value
from analysis.reference import RUNS, SCALE_NOTE, PaperResult, reference
from analysis.rules import INCONCLUSIVE, RuleContext
from analysis.runs import load_runs, parent_run_id, results
from analysis.stats import paired_delta, summarise
from study.record.tags import DIVERGED

CI_METHOD = ("Means are over seeds; intervals are two-sided 95% Student-t intervals over seeds (or "
             "over seed pairs for Δ). With fewer than 5 seeds a t-interval is wide and assumes "
             "normality; `analysis.stats.bootstrap_ci` gives a percentile bootstrap to compare. "
             "Diverged runs are results: their accuracy enters as recorded (usually chance) and they "
             "are counted in the *diverged* column.")


def _entry(item) -> dict:
    return dict(item) if isinstance(item, dict) else item.model_dump()


def _design(spec) -> Section:
    arms = dict(spec.arms or {})
    scientific = list(getattr(spec, "scientific", None) or sorted(
        {key for overrides in arms.values() for key in overrides} | set(spec.grid or {})))
    nuisance = list(getattr(spec, "nuisance", None) or ["seed"])
    fixed = dict(getattr(spec, "fixed", None) or {})
    blocks = [
        f"**Scientific** (varied to answer the question): {', '.join(f'`{k}`' for k in scientific) or 'none'}.",
        f"**Nuisance** (varied only to average over): {', '.join(f'`{k}`' for k in nuisance)}; "
        f"seeds {list(spec.seeds)}, the same in every arm.",
        "**Fixed**: " + (", ".join(f"`{k}` = {value(v)}" for k, v in fixed.items()) or "none")
        + "; every other key at its RunConfig default or preset value (see the MLflow params).",
    ]
    if arms:
        blocks.append(Table(["arm", "overrides"], [[name, ", ".join(f"`{k}` = {value(v)}" for k, v in o.items())
                                                   or "(none)"] for name, o in arms.items()]))
    if spec.grid:
        blocks.append(Table(["grid axis", "values"], [[f"`{k}`", ", ".join(map(value, v))]
                                                       for k, v in spec.grid.items()]))
    return Section("Design", blocks)


def _results_table(frame: pd.DataFrame, group_cols: list[str], metrics: list[str]) -> Table:
    summaries = [summarise(frame, group_cols, metric) for metric in metrics]
    header = [*group_cols, *(f"{m} (95% CI)" for m in metrics), "n", "diverged"]
    rows = []
    for index in range(len(summaries[0])):
        first = summaries[0].iloc[index]
        cells = [value(first[c]) if c != "arm" else str(first[c]) for c in group_cols]
        cells += [metric_ci(m, *s.iloc[index][["mean", "low", "high", "n"]]) for m, s in zip(metrics, summaries)]
        rows.append(cells + [str(int(first["n_runs"])), str(int(first["n_diverged"]))])
    return Table(header, rows)


def _delta_table(frame, baseline, metrics, grid_keys) -> Table:
    header = ["arm", *grid_keys, "metric", f"Δ vs {baseline} (95% CI)", "pairs", "pairs with a diverged run"]
    rows = []
    for metric in metrics:
        delta = paired_delta(frame, "arm", baseline, metric, match=grid_keys)
        for _, row in delta.iterrows():
            rows.append([str(row["arm"]), *(value(row[k]) for k in grid_keys), metric,
                         metric_ci(metric, row["mean"], row["low"], row["high"], row["n_pairs"], signed=True),
                         str(int(row["n_pairs"])), str(int(row["n_diverged"]))])
    return Table(header, rows)


def _results_sections(spec, frame: pd.DataFrame, excluded: str, others: int, grid_keys: list[str]) -> list[Section]:
    """Results (or why there are none) and, with two arms or more, the paired Δ against the baseline."""
    arms = list(spec.arms or {})
    if frame.empty:
        other_text = (f" {others} runs of other configs (another preset or other overrides) are in this "
                      "study's experiment: report them with the same --preset/--set as the run."
                      if others else "")
        return [Section("Results", ["**No runs yet.**" + (f" Not results: {excluded}." if excluded else "")
                                    + other_text])]
    metrics = [m for m in dict.fromkeys([spec.metric, roles.headline_metric(frame)]) if m in frame.columns]
    blocks = [
        f"{len(frame)} results ({int((frame['outcome'] == DIVERGED).sum())} diverged)"
        + (f"; not counted: {excluded} (FAILED/KILLED/RUNNING runs are not results)." if excluded else "."),
        CI_METHOD,
    ]
    if caption := roles.mapping_caption(frame):
        blocks.append(f"**Scale mapping:** {caption}.")
    blocks.append(_results_table(frame, (["arm"] if arms else []) + grid_keys, metrics))
    sections = [Section("Results", blocks)]
    if len(arms) >= 2:
        baseline = spec.baseline or arms[0]
        sections.append(Section(f"Paired Δ against `{baseline}`", [
            f"Δ = arm − `{baseline}` on the same seed and the same grid values.",
            _delta_table(frame, baseline, metrics, grid_keys)]))
    return sections


def _study_figures(spec, frame: pd.DataFrame) -> list[tuple]:
    """The figures the study file asks for: ``(file name, figure, caption)``."""
    drawn = []
    for index, item in enumerate(spec.figures or []):
        entry = _entry(item)
        draw = figures.line if entry.get("kind", "line") == "line" else figures.bar
        options = {"logx": bool(entry.get("logx"))} if draw is figures.line else {}
        caption = entry.get("title") or (f"{entry['y']} against {entry['x']}"
                                         + (f" by {entry['hue']}" if entry.get("hue") else ""))
        drawn.append((f"figure-{index + 1}", draw(frame, entry["x"], entry["y"], hue=entry.get("hue"),
                                                  title=caption, **options), caption))
    return drawn


def _paper_figures(result: PaperResult, frames: dict[str, pd.DataFrame], context: RuleContext) -> list[tuple]:
    """The paper result's figures whose data is there with every column they draw."""
    drawn = []
    for item in result.figures:
        frame = frames.get(item.data)
        if frame is not None and not frame.empty and set(item.columns) <= set(frame.columns):
            drawn.append((item.file, item.draw(frame, context), item.caption or result.title))
    return drawn


def _claims(result: PaperResult, frames: dict[str, pd.DataFrame], context: RuleContext) -> tuple[Section, list[dict]]:
    blocks = [f"**{result.title}** — {result.source}.", Table(["paper", "value"], [list(r) for r in result.numbers])]
    verdicts = []
    for claim in result.claims:
        verdict = claim.judge(frames.get(claim.data), context)
        verdicts.append({"claim": claim.id, "verdict": verdict.verdict})
        blocks += [
            f"### {claim.id}",
            VerdictBadge(verdict.verdict),
            f"**Paper:** {claim.statement}" + (f" ({claim.paper_numbers})" if claim.paper_numbers else ""),
            f"**Rule:** {claim.rule_text}",
        ]
        if verdict.numbers:
            blocks.append(Table(["ours", "value"], [[k, v] for k, v in verdict.numbers.items()]))
        if verdict.reason:
            blocks.append(f"*Why not decided:* {verdict.reason}." if verdict.verdict == INCONCLUSIVE
                          else f"*Note:* {verdict.reason}.")
    return Section("Paper claims", blocks), verdicts


def _runs_section(runs: pd.DataFrame, columns: list[str], parent_id) -> Section:
    rows = [[*(value(run.get(k)) for k in columns), str(run["status"]), str(run["outcome"]), f"`{run['run_id']}`"]
            for _, run in runs.iterrows()]
    return Section("MLflow runs", [
        f"Experiment `{runs['study'].iloc[0]}`, parent run `{parent_id}`; {len(runs)} child runs.",
        Table([*columns, "status", "outcome", "run id"], rows)], collapsed=True)


def build_report(spec, tracking_uri: str | None, out_dir, command: str, *,
                 inputs: dict[str, pd.DataFrame] | None = None, config_hashes: set[str] | None = None,
                 artifact_path: str = "report") -> dict:
    """Write a study's figures, ``report.md``, ``report.html`` and ``summary.json``.

    Example:
        >>> build_report(load_study("clip-threshold"), tracking_uri(), ".nfstudy/reports/clip-threshold",
        ...              "nfstudy report clip-threshold")

    Args:
        spec: the study (``StudySpec`` or any object with ``name``, ``description``,
            ``paper``, ``arms``, ``grid``, ``seeds``, ``metric``, ``figures``, ``baseline``
            and optionally ``fixed``).
        tracking_uri: MLflow tracking URI; None uses MLflow's default.
        out_dir: the folder to write (created).
        command: the command line that regenerates this report (printed in it).
        inputs: the data the study's paper result needs besides its runs, by name (its
            :attr:`~analysis.reference.PaperResult.needs`, e.g. ``{"signal-propagation":
            rows}``; ``nfstudy report`` computes them). A claim whose data is not given is
            inconclusive; a figure whose data is not given is not drawn.
        config_hashes: when given, only runs of these configs count (the runs of one
            preset and set of overrides; a study's experiment can hold several scales).
        artifact_path: where the report folder goes among the parent run's artifacts.

    Returns:
        ``{"markdown": Path, "html": Path, "summary": Path, "figures": [Path, ...],
        "verdicts": [{"claim", "verdict"}, ...]}``.

    Raises:
        TrackingError: the tracking store cannot be read.
        ConfigError: the study's paper key is unknown (before anything is written).
    """
    result = reference(spec.paper) if spec.paper else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(spec.name, tracking_uri)
    others = 0
    if config_hashes is not None:
        others = int((~runs["config_hash"].isin(config_hashes)).sum())
        runs = runs[runs["config_hash"].isin(config_hashes)]
    frame = results(runs)
    grid_keys = [k for k in (spec.grid or {}) if k in frame.columns]
    context = RuleContext(grid_keys=tuple(grid_keys), select_metric=spec.metric,
                          test_metric=roles.headline_metric(frame))
    frames = {**(inputs or {}), RUNS: frame}
    excluded = runs[~runs["run_id"].isin(frame["run_id"])]
    counts = ", ".join(f"{n} {status.lower()}" for status, n in excluded["status"].value_counts().items())
    sections = [Section("Study", [
        spec.description or "",
        f"Paper result: `{spec.paper}`." if spec.paper else "No paper result attached.",
        f"Regenerate: `{command}`",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from `{tracking_uri or 'the default MLflow store'}`.",
    ]), _design(spec), *_results_sections(spec, frame, counts, others, grid_keys)]
    drawn = ([] if frame.empty else _study_figures(spec, frame)) + (
        _paper_figures(result, frames, context) if result else [])
    images, written = save_figures(drawn, out)
    if images or not frame.empty:
        sections.append(Section("Figures", images or ["No figures requested."]))
    verdicts = []
    if result:
        claims, verdicts = _claims(result, frames, context)
        sections.append(claims)
    sections.append(Section("Scale", [SCALE_NOTE]))
    parent_id = parent_run_id(spec.name, tracking_uri)
    if not runs.empty:
        sections.append(_runs_section(runs, (["arm"] if spec.arms else []) + grid_keys + ["seed"], parent_id))
    paths = write(out, f"Study report: {spec.name}", sections,
                  summary={"study": spec.name, "paper": spec.paper, "n_results": len(frame), "verdicts": verdicts})
    if parent_id is not None:
        MlflowClient(tracking_uri).log_artifacts(parent_id, str(out), artifact_path)
    return {**paths, "figures": written, "verdicts": verdicts}


def build_index(reports_root, studies, folders: dict[str, Path] | None = None, name: str = "index") -> Path:
    """Write ``NAME.md`` and ``NAME.html`` listing studies with their verdicts.

    Args:
        reports_root: the folder holding one ``STUDY/`` report folder per study.
        studies: the study names, in the order to list them.
        folders: a study's report folder when it is not ``reports_root / STUDY`` (another scale).
        name: the index's file name without suffix.

    Returns:
        The path of the HTML index.
    """
    root = Path(reports_root)
    rows = []
    for study in studies:
        folder = Path((folders or {}).get(study, root / study))
        summary_path = folder / "summary.json"
        if not summary_path.exists():
            rows.append([study, "", "0", "no report yet"])
            continue
        summary = json.loads(summary_path.read_text())
        verdicts = "; ".join(f"{v['claim']}: {v['verdict']}" for v in summary["verdicts"]) or "no paper claims"
        link = (folder / "report.html").relative_to(root).as_posix()
        rows.append([f"[{study}]({link})", summary["paper"] or "", str(summary["n_results"]), verdicts])
    sections = [Section("Studies", [Table(["study", "paper", "results", "verdicts"], rows)])]
    root.mkdir(parents=True, exist_ok=True)
    return write(root, "nfstudy reports", sections, stem=name)["html"]
