"""Write docs/RESULTS.md: the verdict table and per-study numbers of every registered study.

Run the studies and their reports first, with the same overrides, e.g.::

    nfstudy run clip-threshold --set data.image_size=8        # … every study
    nfstudy report --all --set data.image_size=8
    python scripts/results_md.py --set data.image_size=8 > docs/RESULTS.md

It reads the reports' ``summary.json`` (verdicts) and MLflow (numbers); it trains nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone

import torch

from analysis.formats import format_ci
from analysis.runs import load_runs, results
from analysis.stats import summarise
from study import paths
from study.config.expand import parse_overrides, plan
from study.config.study_file import list_studies, load_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--preset", default=None)
    args = parser.parse_args()
    flags = " ".join(([f"--preset {args.preset}"] if args.preset else []) + [f"--set {s}" for s in args.sets])
    uri = paths.tracking_uri()
    lines = [
        "# Results: every registered study, measured",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python scripts/results_md.py {flags}` "
        f"on {platform.machine()} CPU (2 cores), torch {torch.__version__}.",
        f"Each study was run with `nfstudy run NAME {flags} --workers 2` and reported with "
        f"`nfstudy report --all {flags}`; the full reports (figures, paired Δ, rules, run ids) are "
        f"in `$NFSTUDY_HOME/reports/NAME/{paths.scale_name(args.preset, args.sets) + '/' if flags else ''}report.html`.",
        "",
    ]
    verdict_rows, sections = [], []
    for name in list_studies():
        spec = load_study(name)
        if spec.search is not None or name == "quickstart":
            continue
        hashes = {r.config_hash for r in plan(spec, preset=args.preset, overrides=parse_overrides(args.sets))}
        runs = load_runs(name, uri)
        frame = results(runs[runs["config_hash"].isin(hashes)]) if not runs.empty else runs
        summary_path = paths.reports_dir(name, paths.scale_name(args.preset, args.sets)) / "summary.json"
        verdicts = json.loads(summary_path.read_text())["verdicts"] if summary_path.exists() else []
        for item in verdicts:
            verdict_rows.append(f"| `{name}` | {item.get('claim', '')} | **{item.get('verdict', '')}** |")
        group = (["arm"] if spec.arms else []) + [k for k in spec.grid if k in frame.columns]
        sections += [f"### `{name}` ({len(frame)} of {len(hashes)} runs finished)", ""]
        if frame.empty:
            sections += ["No results.", ""]
            continue
        table = summarise(frame, group, "test/top1")
        sections.append("| " + " | ".join(group + ["test top-1 % (95% CI)", "n", "diverged"]) + " |")
        sections.append("|" + "---|" * (len(group) + 3))
        for row in table.itertuples(index=False):
            values = [str(row[i]) for i in range(len(group))]
            ci = format_ci(row.mean, row.low, row.high, row.n, scale=100, digits=1)
            sections.append("| " + " | ".join(values + [ci, str(row.n), str(row.n_diverged)]) + " |")
        sections.append("")
    lines += ["## Verdicts", "", "| study | claim | verdict at this scale |", "|---|---|---|", *verdict_rows, ""]
    lines += ["## Numbers (test split, mean over seeds with a 95% t-interval)", "", *sections]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
