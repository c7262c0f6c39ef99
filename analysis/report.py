"""A study's report: MLflow runs → summary, tables, figures, verdicts → ``report.md`` +
``report.html``.

One report per study and scale (``nfstudy report NAME``) and an index over studies
(``--all``). It opens with the answer (:mod:`analysis.summary`: what is missing, warnings,
each paper claim's verdict and whether it is resolved, each comparison of the study's
design), then the design, the results with their paired differences, the figures, each
claim with its rule, what scale ran (:mod:`analysis.scale`) and the runs. The sections are
rendered by :mod:`analysis.document`; the paper's side (claims, figure, numbers) comes from
the study's entry in :mod:`analysis.reference`. The report is logged on the study's parent
run under ``report/``, and its summary as the parent's metrics and tags.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis import figures, floor, roles, scale
from analysis.document import Section, Table, VerdictBadge, save_figures, write
from analysis.formats import metric_ci, sequence_ci, value
from analysis.reference import RUNS, PaperResult, reference
from analysis.rules import INCONCLUSIVE, RuleContext
from analysis.runs import load_runs, parent_run_id, results
from analysis.sequential import ClaimStatus, claim_status
from analysis.stats import group_rows, summarise
from analysis.summary import (
    MAX_LINES,
    ClaimLine,
    Summary,
    cell_means,
    comparison_status,
    design_comparisons,
    log_summary,
    warnings,
)
from study.record.tags import AGC_MAX_SKIPINIT_GAIN, DIVERGED

CI_METHOD = ("Means are over seeds. An accuracy's interval is a 95% Student-t interval of the seeds' logits "
             "mapped back, so it stays inside [0, 100] % (the figures draw the same one); other metrics get a "
             "Student-t interval. A Δ is paired (same seed, same other grid values) with a 95% t-interval over "
             "seeds, in points for accuracies; beside it, the anytime-valid 95% confidence sequence (CS), which "
             "stays valid when seeds are added until it decides (`analysis.confseq`): *resolved* means the CS "
             "excludes 0. With fewer than 5 seeds every interval is wide and leans on normality. Diverged runs "
             "are results: their accuracy enters as recorded (chance) and they are counted in the *diverged* "
             "column.")


def _entry(item) -> dict:
    return dict(item) if isinstance(item, dict) else item.model_dump()


def _scientific(spec) -> list[str]:
    arms = dict(spec.arms or {})
    return list(getattr(spec, "scientific", None) or sorted(
        {key for overrides in arms.values() for key in overrides} | set(spec.grid or {})))


def _design(spec) -> Section:
    arms = dict(spec.arms or {})
    nuisance = list(getattr(spec, "nuisance", None) or ["seed"])
    fixed = dict(getattr(spec, "fixed", None) or {})
    blocks = [
        f"**Scientific** (varied to answer the question): {', '.join(f'`{k}`' for k in _scientific(spec)) or 'none'}.",
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


def _cell_notes(frame: pd.DataFrame, group_cols: list[str]) -> tuple[list[str], list[list[str]]]:
    """Extra columns of the results table, per group in :func:`summarise` order: the
    reachable SkipInit gain (and the measured one) where AGC clips an NF net's gains."""
    gains = floor.bounds(frame)
    if gains.isna().all():
        return [], []
    bound = floor.floor_bound(frame)
    measured = AGC_MAX_SKIPINIT_GAIN in frame.columns
    header = ["reachable SkipInit gain"] + (["measured gain"] if measured else []) + ["floor-bound"]
    rows = []
    for _, rows_of_group in group_rows(frame, group_cols):
        index = rows_of_group.index
        cells = [floor.gain_text(gains[index].max())]
        if measured:
            cells.append(f"{pd.to_numeric(frame.loc[index, AGC_MAX_SKIPINIT_GAIN]).mean():.2g}")
        cells.append("**yes**" if bound[index].all() else "some seeds" if bound[index].any() else "")
        rows.append(cells)
    return header, rows


def _results_table(frame: pd.DataFrame, group_cols: list[str], metrics: list[str]) -> Table:
    summaries = [summarise(frame, group_cols, metric) for metric in metrics]
    extra_header, extra = _cell_notes(frame, group_cols)
    header = [*group_cols, *(f"{m} (95% CI)" for m in metrics), "n", "diverged", *extra_header]
    rows = []
    for index in range(len(summaries[0])):
        first = summaries[0].iloc[index]
        cells = [value(first[c]) if c != "arm" else str(first[c]) for c in group_cols]
        cells += [metric_ci(m, *s.iloc[index][["mean", "low", "high", "n"]]) for m, s in zip(metrics, summaries)]
        rows.append(cells + [str(int(first["n_runs"])), str(int(first["n_diverged"]))] + (extra[index] if extra else []))
    return Table(header, rows)


def _delta_table(comparisons) -> Table:
    return Table(["comparison", "metric", "Δ (95% CI)", "pairs", "pairs with a diverged run", "anytime-valid 95% CS",
                  "status"],
                 [[c.label, c.metric, metric_ci(c.metric, c.row["mean"], c.row["low"], c.row["high"], c.row["n_pairs"],
                                                signed=True),
                   str(int(c.row["n_pairs"])), str(int(c.row["n_diverged"])), sequence_ci(c.row, scale=c.scale, unit=c.unit),
                   comparison_status(c)] for c in comparisons])


def _results_sections(spec, frame: pd.DataFrame, excluded: str, others: int, grid_keys: list[str]) -> list[Section]:
    """Results (or why there are none) and the paired differences of the study's design."""
    arms = list(spec.arms or {})
    if frame.empty:
        other_text = (f" {others} runs of other configs (another preset or other overrides) are in this "
                      "study's experiment: `nfstudy report` without --preset/--set reports every scale that has runs."
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
    axes = [k for k in _scientific(spec) if k in grid_keys]
    baseline = spec.baseline or (arms[0] if arms else None)
    comparisons = [c for metric in metrics
                   for c in design_comparisons(frame, arms, baseline, axes, grid_keys, metric)]
    if comparisons:
        against = ([f"arm − `{baseline}`"] if len(arms) >= 2 else []) + [
            f"each `{axis}` − its first value" for axis in axes]
        sections.append(Section("Paired differences", [
            f"Δ = {'; '.join(against)}, on the same seed and the same other grid values.",
            _delta_table(comparisons)]))
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
            caption = item.caption or result.title
            if item.data == RUNS and (mapping := roles.mapping_caption(frame)):
                caption += f" ({mapping})"
            drawn.append((item.file, item.draw(frame, context), caption))
    return drawn


def _judge(result: PaperResult, frames: dict[str, pd.DataFrame], context: RuleContext,
           grid_keys: list[str]) -> list[ClaimLine]:
    """Each claim at the planned seeds, and under optional stopping."""
    statuses = claim_status(frames[RUNS], result.key, grid_keys=tuple(grid_keys), select_metric=context.select_metric,
                            inputs={k: v for k, v in frames.items() if k != RUNS})
    return [ClaimLine(claim.id, claim.judge(frames.get(claim.data), context), status)
            for claim, status in zip(result.claims, statuses)]


def _claims(result: PaperResult, lines: list[ClaimLine]) -> Section:
    blocks = [f"**{result.title}** — {result.source}.", Table(["paper", "value"], [list(r) for r in result.numbers]),
              "Every rule below is applied to the result runs that are not floor-bound (SkipInit gains that cannot "
              "leave AGC's ε floor at the run's budget measure the budget, not the mechanism); a claim only "
              "floor-bound runs would decide is inconclusive: floor-bound at this budget."]
    for claim, line in zip(result.claims, lines):
        verdict = line.verdict
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
        if verdict.left_out:
            blocks.append(f"*Left out as floor-bound* (SkipInit gains cannot leave AGC's ε floor at this budget): "
                          f"{verdict.left_out}.")
        blocks.append(_seeds_text(line.status))
    return Section("Paper claims", blocks)


def _seeds_text(status: ClaimStatus) -> str:
    seeds = f"{status.pairs} pairs (seeds {', '.join(map(value, status.seeds))})" if status.pairs else "no paired seeds"
    text = f"*Seeds:* {seeds}; anytime-valid: {status.text()}"
    if status.needs:
        text += "; needs more paired seeds of " + ", ".join(f"`{cell.text()}`" for cell in status.needs)
    return text + "."


def _runs_section(runs: pd.DataFrame, columns: list[str], parent_id) -> Section:
    rows = [[*(value(run.get(k)) for k in columns), str(run["status"]), str(run["outcome"]), f"`{run['run_id']}`"]
            for _, run in runs.iterrows()]
    return Section("MLflow runs", [
        f"Experiment `{runs['study'].iloc[0]}`, parent run `{parent_id}`; {len(runs)} child runs.",
        Table([*columns, "status", "outcome", "run id"], rows)], collapsed=True)


def _summary(spec, frame, planned, counts, lines, grid_keys, run_command) -> Summary:
    """The report's opening answer (:mod:`analysis.summary`)."""
    arms = list(spec.arms or {})
    metric = roles.TEST_METRIC if roles.TEST_METRIC in frame.columns else spec.metric
    axes = [k for k in _scientific(spec) if k in grid_keys]
    baseline = spec.baseline or (arms[0] if arms else None)
    comparisons, pooled = [], []
    if not frame.empty:
        comparisons = design_comparisons(frame, arms, baseline, axes, grid_keys, metric)
        if len(comparisons) > MAX_LINES:
            comparisons = design_comparisons(frame, arms, baseline, axes, grid_keys, metric, per_point=False)
            pooled = grid_keys
    return Summary(spec.name, planned, len(frame), counts, scale.describe(frame) if len(frame) else "",
                   warnings(frame, grid_keys, metric) if len(frame) else [], lines, comparisons, pooled,
                   cell_means(frame, grid_keys, metric) if len(frame) else [], run_command)


def build_report(spec, tracking_uri: str | None, out_dir, command: str, *,
                 inputs: dict[str, pd.DataFrame] | None = None, config_hashes: set[str] | None = None,
                 artifact_path: str = "report", run_command: str = "") -> dict:
    """Write a study's figures, ``report.md``, ``report.html`` and ``summary.json``, and put
    the summary on the study's MLflow parent run.

    Example:
        >>> build_report(load_study("clip-threshold"), tracking_uri(), ".nfstudy/reports/clip-threshold",
        ...              "nfstudy report clip-threshold")

    Args:
        spec: the study (``StudySpec`` or any object with ``name``, ``description``,
            ``paper``, ``arms``, ``grid``, ``seeds``, ``metric``, ``figures``, ``baseline``
            and optionally ``fixed``, ``scientific``, ``nuisance``).
        tracking_uri: MLflow tracking URI; None uses MLflow's default.
        out_dir: the folder to write (created).
        command: the command line that regenerates this report (printed in it).
        inputs: the data the study's paper result needs besides its runs, by name (its
            :attr:`~analysis.reference.PaperResult.needs`, e.g. ``{"signal-propagation":
            rows}``; ``nfstudy report`` computes them). A claim whose data is not given is
            inconclusive; a figure whose data is not given is not drawn.
        config_hashes: when given, the planned runs: only runs of these configs count (a
            study's experiment can hold several scales), and the summary says how many of
            them are missing.
        artifact_path: where the report folder goes among the parent run's artifacts (and,
            past ``report/``, the scale the parent's summary metrics and tags are named by).
        run_command: the command line that trains what is missing (said when runs are missing).

    Returns:
        ``{"markdown": Path, "html": Path, "summary": Path, "figures": [Path, ...],
        "verdicts": [{"claim", "verdict", "resolved", "pairs"}, ...], "lines": [str, ...]}``
        (``lines``: the summary as the command line prints it).

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
    lines = _judge(result, frames, context, grid_keys) if result else []
    summary = _summary(spec, frame, None if config_hashes is None else len(config_hashes), counts, lines, grid_keys,
                       run_command)
    sections = [summary.section(), Section("Study", [
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
    if result:
        sections.append(_claims(result, lines))
    sections.append(Section("Scale", scale.note(frame)))
    parent_id = parent_run_id(spec.name, tracking_uri)
    if not runs.empty:
        sections.append(_runs_section(runs, (["arm"] if spec.arms else []) + grid_keys + ["seed"], parent_id))
    verdicts = [{"claim": line.claim, "verdict": line.verdict.verdict, "resolved": line.status.resolved,
                 "pairs": line.status.pairs} for line in lines]
    paths = write(out, f"Study report: {spec.name}", sections,
                  summary={"study": spec.name, "paper": spec.paper, "n_results": len(frame),
                           "n_planned": summary.planned, "n_missing": summary.missing, "verdicts": verdicts,
                           "lines": summary.lines()})
    if parent_id is not None:
        MlflowClient(tracking_uri).log_artifacts(parent_id, str(out), artifact_path)
        log_summary(tracking_uri, parent_id, summary, artifact_path.partition("/")[2])
    return {**paths, "figures": written, "verdicts": verdicts, "lines": summary.lines()}


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
        planned = summary.get("n_planned")
        rows.append([f"[{study}]({link})", summary["paper"] or "",
                     str(summary["n_results"]) + (f" of {planned}" if planned else ""), verdicts])
    sections = [Section("Studies", [Table(["study", "paper", "results", "verdicts"], rows)])]
    root.mkdir(parents=True, exist_ok=True)
    return write(root, "nfstudy reports", sections, stem=name)["html"]
