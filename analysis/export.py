"""``nfstudy export``: a study's per-arm and paired tables, as its report computes them, for
papers and scripts: CSV, LaTeX or JSON.

The per-arm table has one row per cell (arm and grid values) and metric: mean, 95% interval
(``low``, ``high``), runs with a value (``n``), runs (``n_runs``) and diverged runs. The
paired table has one row per comparison of the study's design (each arm against the
baseline arm; each value of a scientific grid axis against its first value), paired on seed
and the other grid values: mean Δ, its 95% t-interval, pairs, pairs with a diverged run and
the status the report prints. Accuracies are fractions (0.912), Δ in fractions too.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from analysis import roles
from analysis.formats import metric_ci
from analysis.report import _scientific
from analysis.runs import load_runs, results
from analysis.stats import summarise
from analysis.summary import comparison_status, design_comparisons

FORMATS = ("csv", "latex", "json")
TABLES = ("per-arm", "paired")


def export_tables(spec, tracking_uri: str | None, config_hashes: set[str] | None = None) -> dict[str, pd.DataFrame]:
    """``{"per-arm": frame, "paired": frame}`` of the study's FINISHED runs (of
    ``config_hashes`` only, when given: one scale's plan)."""
    runs = load_runs(spec.name, tracking_uri)
    if config_hashes is not None:
        runs = runs[runs["config_hash"].isin(config_hashes)]
    frame = results(runs)
    if frame.empty:
        return {"per-arm": pd.DataFrame(), "paired": pd.DataFrame()}
    grid_keys = [k for k in (spec.grid or {}) if k in frame.columns]
    arms = list(spec.arms or {})
    groups = (["arm"] if arms else []) + grid_keys
    metrics = [m for m in dict.fromkeys([spec.metric, roles.headline_metric(frame)]) if m in frame.columns]
    per_arm = pd.concat([summarise(frame, groups, metric).assign(metric=metric) for metric in metrics],
                        ignore_index=True)
    per_arm = per_arm[[*groups, "metric", "mean", "low", "high", "n", "n_runs", "n_diverged"]]
    axes = [k for k in _scientific(spec) if k in grid_keys]
    baseline = spec.baseline or (arms[0] if arms else None)
    paired = pd.DataFrame([
        {"comparison": c.label, "metric": c.metric, "mean": c.row["mean"], "low": c.row["low"], "high": c.row["high"],
         "n_pairs": int(c.row["n_pairs"]), "n_diverged": int(c.row["n_diverged"]), "status": comparison_status(c)}
        for metric in metrics for c in design_comparisons(frame, arms, baseline, axes, grid_keys, metric)])
    return {"per-arm": per_arm, "paired": paired}


def render(tables: dict[str, pd.DataFrame], fmt: str, study: str) -> str:
    """The tables as ``fmt``: CSV (one table: give a dict of one), LaTeX (a ``tabular`` per
    table, intervals written as the report writes them) or JSON (``{table: [rows]}``)."""
    if fmt == "csv":
        (frame,) = tables.values()
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps({name: [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
                           for name, frame in tables.items()}, indent=1) + "\n"
    return "\n".join(_latex(name, frame, study) for name, frame in tables.items())


def _plain(item):
    if isinstance(item, float) and not math.isfinite(item):
        return None
    return item.item() if hasattr(item, "item") else item


def _latex(name: str, frame: pd.DataFrame, study: str) -> str:
    if frame.empty:
        return f"% {study}: no {name} rows (no finished runs)\n"
    label = [c for c in frame.columns if c not in ("mean", "low", "high", "n", "n_runs", "n_diverged", "n_pairs",
                                                   "status", "metric")]
    count = "n_pairs" if "n_pairs" in frame.columns else "n_runs"
    header = [*label, "metric", "mean (95\\% CI)", count.replace("_", " "), "diverged",
              *(["status"] if "status" in frame.columns else [])]
    lines = [f"% {study}: {name} table (nfstudy export)", "\\begin{tabular}{" + "l" * len(label) + "lrrr"
             + ("l" if "status" in frame.columns else "") + "}", "\\hline", " & ".join(header) + " \\\\", "\\hline"]
    for row in frame.to_dict("records"):
        signed = "n_pairs" in frame.columns
        interval = metric_ci(row["metric"], row["mean"], row["low"], row["high"], row.get("n", row.get("n_pairs")),
                             signed=signed)
        cells = [*(str(row[c]) for c in label), row["metric"], interval, str(row[count]), str(row["n_diverged"]),
                 *([row["status"]] if "status" in row else [])]
        lines.append(" & ".join(_escape(c) for c in cells) + " \\\\")
    return "\n".join([*lines, "\\hline", "\\end{tabular}"]) + "\n"


#: LaTeX for the characters of table cells that are not plain text in LaTeX.
LATEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "_": "\\_", "#": "\\#", "$": "\\$", "{": "\\{",
         "}": "\\}", "−": "$-$", "Δ": "$\\Delta$", "λ": "$\\lambda$", "±": "$\\pm$", "–": "--"}


def _escape(text: str) -> str:
    return "".join(LATEX.get(char, char) for char in text)
