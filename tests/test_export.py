"""`nfstudy export` against a real MLflow store: the report's per-arm and paired tables."""

from __future__ import annotations

import csv
import io
import json

from cli_studies import tiny

from study.cli import main

TINY = tiny("[0, 1]")


def test_export_csv_json_latex_of_a_real_store(study_file, capsys):
    from mlflow.tracking import MlflowClient

    from study import paths

    path = str(study_file(TINY))
    assert main(["run", path]) == 0
    capsys.readouterr()
    client = MlflowClient(paths.tracking_uri(None))
    experiment = client.get_experiment_by_name("tiny").experiment_id
    recorded = {}
    for run in client.search_runs([experiment], "tags.`nfstudy.role` = 'child'"):
        recorded.setdefault(run.data.tags["nfstudy.arm"], []).append(run.data.metrics["val/top1"])

    assert main(["export", path, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    val = {row["arm"]: row for row in rows if row["metric"] == "val/top1"}
    for arm, values in recorded.items():
        assert abs(float(val[arm]["mean"]) - sum(values) / 2) < 1e-9 and val[arm]["n_runs"] == "2"

    assert main(["export", path, "--format", "json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    paired = [row for row in tables["paired"] if row["metric"] == "val/top1"]
    assert [row["comparison"] for row in paired] == ["agc − plain"] and paired[0]["n_pairs"] == 2
    by_seed = {arm: values for arm, values in recorded.items()}
    assert abs(paired[0]["mean"] - (sum(by_seed["agc"]) - sum(by_seed["plain"])) / 2) < 1e-9

    assert main(["export", path, "--format", "latex"]) == 0
    latex = capsys.readouterr().out
    assert latex.count("\\begin{tabular}") == 2 and "agc $-$ plain" in latex and "95\\% CI" in latex


def test_export_bad_format_is_one_line(study_file, capsys):
    assert main(["export", str(study_file(TINY)), "--format", "xlsx"]) == 2
    assert capsys.readouterr().err.strip() == "error: --format xlsx: allowed: csv, latex, json"
