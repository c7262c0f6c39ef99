"""A study's report: MLflow runs → tables, figures, verdicts → ``report.md`` + ``report.html``.

One report per study (``nfstudy report NAME``) and an index over studies (``--all``).
The Markdown and the HTML come from the same list of sections, so they always agree; the
HTML is self-contained (figures embedded as base64 PNG) and can be mailed or opened from
an MLflow artifact view. The report is also logged on the study's parent run under
``report/``.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis import figures, roles
from analysis.reference import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, RuleContext, reference
from analysis.runs import load_runs, parent_run_id, results
from analysis.stats import format_ci, paired_delta, summarise

TEST_METRIC = "test/top1"
EMA_TEST_METRIC = "test/top1_ema"
CI_METHOD = ("Means are over seeds; intervals are two-sided 95% Student-t intervals over seeds (or "
             "over seed pairs for Δ). With fewer than 5 seeds a t-interval is wide and assumes "
             "normality; `analysis.stats.bootstrap_ci` gives a percentile bootstrap to compare. "
             "Diverged runs are results: their accuracy enters as recorded (usually chance) and they "
             "are counted in the *diverged* column.")
SCALE_NOTE = (
    "These runs use small data and small models (by default the embedded `digits` set: 1,400 "
    "training images of 8×8 digits upsampled to 16×16, a small NF-ResNet and its BN twin, a few "
    "hundred steps on a CPU), not ImageNet and NFNet-F0…F6 for 360 epochs. What this scale "
    "can show (PAPER.md §8): unclipped NF-ResNets break as the learning rate grows while BN does "
    "not; AGC restores training; the best λ falls as the learning rate grows; a large λ diverges "
    "at the largest. It needs the paper's learning rate for the paper's batch size at a fixed "
    "step budget, so presets may map the paper's batch sizes to smaller real ones (the figures "
    "say so). What it cannot show: ImageNet accuracy levels, gaps of a few tenths of a point "
    "(one seed moves digits accuracy by more), regularisation effects of long training, and "
    "accelerator step times (CPU timings of tiny models say little about them). "
    "A verdict here is about this scale only.")
_VERDICT_CLASS = {SUPPORTED: "supported", NOT_SUPPORTED: "refuted", INCONCLUSIVE: "inconclusive"}


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class _Image:
    path: Path
    caption: str


@dataclass
class _Verdict:
    verdict: str


@dataclass
class _Section:
    title: str
    blocks: list = field(default_factory=list)
    collapsed: bool = False


def _fmt(metric: str, mean, low, high, n, *, signed=False) -> str:
    percent = "top1" in metric or "top5" in metric
    return format_ci(mean, low, high, int(n), scale=100.0 if percent else 1.0, digits=1 if percent else 2,
                     signed=signed) + (" %" if percent and n else "")


def _value(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "None"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _entry(item) -> dict:
    return dict(item) if isinstance(item, dict) else item.model_dump()


def _design(spec) -> _Section:
    arms = dict(spec.arms or {})
    scientific = list(getattr(spec, "scientific", None) or sorted(
        {key for overrides in arms.values() for key in overrides} | set(spec.grid or {})))
    nuisance = list(getattr(spec, "nuisance", None) or ["seed"])
    fixed = dict(getattr(spec, "fixed", None) or {})
    blocks = [
        f"**Scientific** (varied to answer the question): {', '.join(f'`{k}`' for k in scientific) or 'none'}.",
        f"**Nuisance** (varied only to average over): {', '.join(f'`{k}`' for k in nuisance)}; "
        f"seeds {list(spec.seeds)}, the same in every arm.",
        "**Fixed**: " + (", ".join(f"`{k}` = {_value(v)}" for k, v in fixed.items()) or "none")
        + "; every other key at its RunConfig default or preset value (see the MLflow params).",
    ]
    if arms:
        blocks.append(_Table(["arm", "overrides"], [[name, ", ".join(f"`{k}` = {_value(v)}" for k, v in o.items())
                                                    or "(none)"] for name, o in arms.items()]))
    if spec.grid:
        blocks.append(_Table(["grid axis", "values"], [[f"`{k}`", ", ".join(map(_value, v))]
                                                        for k, v in spec.grid.items()]))
    return _Section("Design", blocks)


def _results_table(frame: pd.DataFrame, group_cols: list[str], metrics: list[str]) -> _Table:
    summaries = [summarise(frame, group_cols, metric) for metric in metrics]
    header = [*group_cols, *(f"{m} (95% CI)" for m in metrics), "n", "diverged"]
    rows = []
    for index in range(len(summaries[0])):
        first = summaries[0].iloc[index]
        cells = [_value(first[c]) if c != "arm" else str(first[c]) for c in group_cols]
        cells += [_fmt(m, *s.iloc[index][["mean", "low", "high", "n"]]) for m, s in zip(metrics, summaries)]
        rows.append(cells + [str(int(first["n_runs"])), str(int(first["n_diverged"]))])
    return _Table(header, rows)


def _delta_table(frame, baseline, metrics, grid_keys) -> _Table:
    header = ["arm", *grid_keys, "metric", f"Δ vs {baseline} (95% CI)", "pairs", "pairs with a diverged run"]
    rows = []
    for metric in metrics:
        delta = paired_delta(frame, "arm", baseline, metric, match=grid_keys)
        for _, row in delta.iterrows():
            rows.append([str(row["arm"]), *(_value(row[k]) for k in grid_keys), metric,
                         _fmt(metric, row["mean"], row["low"], row["high"], row["n_pairs"], signed=True),
                         str(int(row["n_pairs"])), str(int(row["n_diverged"]))])
    return _Table(header, rows)


def _paper_figure(paper, frame, metric, grid_keys):
    """The paper's own figure for this study, if its columns are there."""
    needs = {
        "fig2a": ([roles.MODEL, roles.BATCH], lambda: figures.fig2a_batch_scaling(frame, select_metric=metric)),
        "fig2b": ([roles.CLIPPING, roles.BATCH], lambda: figures.fig2b_clip_threshold(frame)),
        "unit-vs-layer": ([roles.AGC_MODE], lambda: figures.unit_vs_layer(
            frame, hue=roles.BATCH if roles.BATCH in grid_keys else None)),
        "clip-final-layer": ([roles.AGC_EXCLUDE], lambda: figures.final_layer(frame)),
        "table6": ([roles.MODEL, "time/step_ms"], lambda: figures.bn_vs_nf(frame)),
        "table3-sam": ([roles.SAM_MODE, "time/step_ms"], lambda: figures.sam_cost(frame)),
    }
    columns, draw = needs.get(paper, (None, None))
    if draw is None or not set(columns + [TEST_METRIC]) <= set(frame.columns):
        return None
    return draw()


def headline_metric(frame: pd.DataFrame) -> str:
    """The test metric a report leads with: the EMA weights' (``test/top1_ema``) when every
    run evaluated them, as the paper reports its EMA weights; else ``test/top1``."""
    if EMA_TEST_METRIC in frame.columns and len(frame) and frame[EMA_TEST_METRIC].notna().all():
        return EMA_TEST_METRIC
    return TEST_METRIC


def _claims(spec, frame, spp, grid_keys) -> tuple[_Section, list[dict]]:
    context = RuleContext(grid_keys=tuple(grid_keys), select_metric=spec.metric, test_metric=headline_metric(frame))
    result = reference(spec.paper)
    judged = [(claim, frame) for claim in result.claims if spec.paper != "spp"]
    if spp is not None and spec.paper in ("table6", "spp"):
        judged += [(claim, spp) for claim in reference("spp").claims]
    blocks = [f"**{result.title}** — {result.source}.", _Table(["paper", "value"], [list(r) for r in result.numbers])]
    verdicts = []
    for claim, data in judged:
        verdict = claim.judge(data, context)
        verdicts.append({"claim": claim.id, "verdict": verdict.verdict})
        blocks += [
            f"### {claim.id}",
            _Verdict(verdict.verdict),
            f"**Paper:** {claim.statement}" + (f" ({claim.paper_numbers})" if claim.paper_numbers else ""),
            f"**Rule:** {claim.rule_text}",
        ]
        if verdict.numbers:
            blocks.append(_Table(["ours", "value"], [[k, v] for k, v in verdict.numbers.items()]))
        if verdict.reason:
            blocks.append(f"*Why not decided:* {verdict.reason}." if verdict.verdict == INCONCLUSIVE
                          else f"*Note:* {verdict.reason}.")
    return _Section("Paper claims", blocks), verdicts


def _runs_section(runs: pd.DataFrame, columns: list[str], parent_id) -> _Section:
    rows = [[*(_value(run.get(k)) for k in columns), str(run["status"]), str(run["outcome"]), f"`{run['run_id']}`"]
            for _, run in runs.iterrows()]
    return _Section("MLflow runs", [
        f"Experiment `{runs['study'].iloc[0]}`, parent run `{parent_id}`; {len(runs)} child runs.",
        _Table([*columns, "status", "outcome", "run id"], rows)], collapsed=True)


def build_report(spec, tracking_uri: str | None, out_dir, command: str, *, spp: pd.DataFrame | None = None,
                 config_hashes: set[str] | None = None, artifact_path: str = "report") -> dict:
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
        spp: signal-propagation rows for ``[I] Fig. 1`` (columns as
            :func:`analysis.figures.signal_propagation` takes; the caller computes them
            with ``study.models.spp``, analysis never builds models), drawn when given and
            judged when the study's paper key is ``table6`` or ``spp``.
        config_hashes: when given, only runs of these configs count (the runs of one
            preset and set of overrides; a study's experiment can hold several scales).
        artifact_path: where the report folder goes among the parent run's artifacts.

    Returns:
        ``{"markdown": Path, "html": Path, "summary": Path, "figures": [Path, ...],
        "verdicts": [{"claim", "verdict"}, ...]}``.

    Raises:
        TrackingError: the tracking store cannot be read.
        ConfigError: the study's paper key is unknown.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(spec.name, tracking_uri)
    others = 0
    if config_hashes is not None:
        others = int((~runs["config_hash"].isin(config_hashes)).sum())
        runs = runs[runs["config_hash"].isin(config_hashes)]
    frame = results(runs)
    grid_keys = [k for k in (spec.grid or {}) if k in frame.columns]
    arms = list(spec.arms or {})
    metrics = list(dict.fromkeys([spec.metric, headline_metric(frame)]))
    sections = [_Section("Study", [
        spec.description or "",
        f"Paper result: `{spec.paper}`." if spec.paper else "No paper result attached.",
        f"Regenerate: `{command}`",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from `{tracking_uri or 'the default MLflow store'}`.",
    ])]
    sections.append(_design(spec))
    excluded = runs[~runs["run_id"].isin(frame["run_id"])]
    counts = ", ".join(f"{n} {status.lower()}" for status, n in excluded["status"].value_counts().items())
    written, verdicts = [], []
    if frame.empty:
        other_text = (f" {others} runs of other configs (another preset or other overrides) are in this "
                      "study's experiment: report them with the same --preset/--set as the run."
                      if others else "")
        sections.append(_Section("Results", ["**No runs yet.**" + (f" Not results: {counts}." if counts else "")
                                             + other_text]))
        if spp is not None:
            paths = figures.save_figure(figures.signal_propagation(spp), out / "signal-propagation")
            written += paths
            sections.append(_Section("Figures", [_Image(paths[0], reference("spp").title)]))
    else:
        caption = roles.mapping_caption(frame)
        group_cols = (["arm"] if arms else []) + grid_keys
        blocks = [
            f"{len(frame)} results ({int((frame['outcome'] == 'diverged').sum())} diverged)"
            + (f"; not counted: {counts} (FAILED/KILLED/RUNNING runs are not results)." if counts else "."),
            CI_METHOD,
        ]
        if caption:
            blocks.append(f"**Scale mapping:** {caption}.")
        blocks.append(_results_table(frame, group_cols, [m for m in metrics if m in frame.columns]))
        sections.append(_Section("Results", blocks))
        if len(arms) >= 2:
            baseline = spec.baseline or arms[0]
            sections.append(_Section(f"Paired Δ against `{baseline}`", [
                f"Δ = arm − `{baseline}` on the same seed and the same grid values.",
                _delta_table(frame, baseline, [m for m in metrics if m in frame.columns], grid_keys)]))
        drawn = []
        for index, item in enumerate(spec.figures or []):
            entry = _entry(item)
            draw = figures.line if entry.get("kind", "line") == "line" else figures.bar
            options = {"logx": bool(entry.get("logx"))} if draw is figures.line else {}
            caption_text = entry.get("title") or (f"{entry['y']} against {entry['x']}"
                                                  + (f" by {entry['hue']}" if entry.get("hue") else ""))
            drawn.append((f"figure-{index + 1}", draw(frame, entry["x"], entry["y"], hue=entry.get("hue"),
                                                       title=caption_text, **options), caption_text))
        if spec.paper and (paper_figure := _paper_figure(spec.paper, frame, spec.metric, grid_keys)):
            drawn.append((f"paper-{spec.paper}", paper_figure, reference(spec.paper).title))
        if spp is not None:
            drawn.append(("signal-propagation", figures.signal_propagation(spp), reference("spp").title))
        images = []
        for name, figure, caption_text in drawn:
            paths = figures.save_figure(figure, out / name)
            written += paths
            images.append(_Image(paths[0], caption_text))
        sections.append(_Section("Figures", images or ["No figures requested."]))
    if spec.paper:
        claims, verdicts = _claims(spec, frame, spp, grid_keys)
        sections.append(claims)
    sections.append(_Section("Scale", [SCALE_NOTE]))
    parent_id = parent_run_id(spec.name, tracking_uri)
    if not runs.empty:
        sections.append(_runs_section(runs, (["arm"] if arms else []) + grid_keys + ["seed"], parent_id))
    title = f"Study report: {spec.name}"
    paths = {"markdown": out / "report.md", "html": out / "report.html", "summary": out / "summary.json"}
    paths["markdown"].write_text(_markdown(title, sections, out))
    paths["html"].write_text(_html(title, sections))
    paths["summary"].write_text(json.dumps({"study": spec.name, "paper": spec.paper, "n_results": len(frame),
                                            "verdicts": verdicts}, indent=2))
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
    sections = [_Section("Studies", [_Table(["study", "paper", "results", "verdicts"], rows)])]
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.md").write_text(_markdown("nfstudy reports", sections, root))
    (root / f"{name}.html").write_text(_html("nfstudy reports", sections))
    return root / f"{name}.html"


# -- rendering -------------------------------------------------------------------------

def _md_table(table: _Table) -> str:
    cells = lambda row: "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"  # noqa: E731
    return "\n".join([cells(table.header), cells(["---"] * len(table.header)), *map(cells, table.rows)])


def _markdown(title: str, sections: list[_Section], folder: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, _Table):
                lines.append(_md_table(block))
            elif isinstance(block, _Image):
                lines.append(f"![{block.caption}]({block.path.relative_to(folder)})")
            elif isinstance(block, _Verdict):
                lines.append(f"**Verdict: {block.verdict}**")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's inline marks used above (code, bold, italics, links) as HTML."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)


def _html_block(block) -> str:
    if isinstance(block, _Table):
        head = "".join(f"<th>{_inline(c)}</th>" for c in block.header)
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, _Image):
        data = base64.b64encode(block.path.read_bytes()).decode()
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    if isinstance(block, _Verdict):
        return f'<p class="verdict {_VERDICT_CLASS[block.verdict]}">{html.escape(block.verdict)}</p>'
    if block.startswith("### "):
        return f"<h3>{_inline(block[4:])}</h3>"
    return f"<p>{_inline(block)}</p>" if block else ""


_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 2px solid #2b5b84; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; color: #2b5b84; }
h3 { font-size: 1.05em; margin: 1.4em 0 .3em; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .9em; }
th, td { border: 1px solid #d4d9e1; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #eef2f7; } tbody tr:nth-child(even) { background: #f8f9fb; }
code { font: .9em ui-monospace, monospace; background: #eef2f7; padding: .05em .3em; border-radius: 3px; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #e3e6eb; }
figcaption { font-size: .85em; color: #555; }
.verdict { display: inline-block; padding: .15em .8em; border-radius: 1em; font-weight: 600; margin: 0; }
.supported { background: #dff3e3; color: #1b6b2c; } .refuted { background: #fbe0e0; color: #9b1c1c; }
.inconclusive { background: #fff3d6; color: #7a5a00; }
details summary { cursor: pointer; color: #2b5b84; }
"""


def _html(title: str, sections: list[_Section]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        body = "".join(_html_block(block) for block in section.blocks)
        if section.collapsed:
            body = f"<details><summary>show {len(section.blocks[-1].rows)} rows</summary>{body}</details>"
        parts.append(f"<section><h2>{_inline(section.title)}</h2>{body}</section>")
    return "".join(parts) + "</body></html>"
