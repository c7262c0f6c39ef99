"""``nfstudy report`` as a user types it: the summary printed, every scale that has runs
reported in its own folder, a Regenerate line that works for a study file."""

from __future__ import annotations

import json

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from study import paths
from study.cli import main
from study.config.expand import parse_overrides, plan
from study.config.study_file import load_study

STUDY = """\
name: scales
base: presets/smoke.yaml
arms:
  bn: {model.norm: bn}
  nf: {model.norm: nf}
seeds: [0, 1, 2]
"""


def _record(path, sets=None, accuracy=0.9) -> None:
    """Record the study's planned runs at one scale as ``nfstudy run`` leaves them: FINISHED
    child runs of the study's parent carrying their planned config hash and flat config."""
    paths.home().mkdir(parents=True, exist_ok=True)
    client = MlflowClient(paths.tracking_uri())
    experiment = client.get_experiment_by_name("scales")
    if experiment is None:
        experiment_id = client.create_experiment("scales")
        client.create_run(experiment_id, tags={"nfstudy.role": "parent"})
    else:
        experiment_id = experiment.experiment_id
    parent = client.search_runs([experiment_id], "tags.`nfstudy.role` = 'parent'")[0].info.run_id
    for run in plan(load_study(path), overrides=parse_overrides(sets)):
        tags = {"mlflow.parentRunId": parent, "nfstudy.role": "child", "nfstudy.study": "scales",
                "nfstudy.arm": run.arm, "nfstudy.config_hash": run.config_hash, "nfstudy.outcome": "completed"}
        top1 = accuracy + 0.01 * run.seed + 0.02 * (run.arm == "nf")
        child = client.create_run(experiment_id, tags=tags)
        client.log_batch(child.info.run_id, metrics=[Metric("test/top1", top1, 0, 1), Metric("val/top1", top1, 0, 1)],
                         params=[Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                                 for k, v in run.config.flat().items()])
        client.set_terminated(child.info.run_id)


def test_report_of_a_study_file_prints_its_summary_and_a_regenerate_line_that_works(study_file, capsys):
    path = study_file(STUDY)
    _record(path)
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "scales: 6 of 6 planned runs finished" in out
    assert "  nf − bn: +2.0 [+2.0, +2.0] pt, 3 pairs, resolved" in out
    report = (paths.reports_dir(load_study(path).report_key) / "report.md").read_text()
    assert f"Regenerate: `nfstudy report {path}`" in report


def test_report_without_preset_reports_every_scale_that_has_runs(study_file, capsys):
    """Runs at the study's base and with --set train.steps=2: each scale gets its own folder
    and summary, and the command says what it found."""
    path = study_file(STUDY)
    _record(path)
    _record(path, ["train.steps=2"], accuracy=0.5)
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "scales: runs at 2 scale(s), each reported in its own folder: base (6 of 6); --set train.steps=2 (6 runs)" in out
    base, other = paths.reports_dir(load_study(path).report_key), paths.reports_dir(load_study(path).report_key, "train.steps=2")
    assert json.loads((base / "summary.json").read_text())["n_results"] == 6
    summary = json.loads((other / "summary.json").read_text())
    assert (summary["n_results"], summary["n_planned"]) == (6, 6)
    report = (other / "report.md").read_text()
    assert f"Regenerate: `nfstudy report {path} --set train.steps=2`" in report
    assert "Length: 2 steps" in report and "Length: 4 steps" in (base / "report.md").read_text()


@pytest.mark.slow
def test_report_after_real_runs_at_two_scales(study_file, capsys):
    """The README's commands end to end: train at the study's base and with --set, then
    `nfstudy report PATH` reports both."""
    path = study_file("name: twoscales\nbase: presets/smoke.yaml\nfixed: {model.norm: nf, agc.clipping: 0.16}\n"
                      "seeds: [0, 1]\n")
    assert main(["run", str(path)]) == 0
    assert main(["run", str(path), "--set", "train.steps=2"]) == 0
    capsys.readouterr()
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "runs at 2 scale(s)" in out and "twoscales: 2 of 2 planned runs finished" in out
    assert (paths.reports_dir(load_study(path).report_key, "train.steps=2") / "report.html").is_file()
    assert "warning: a cell has only 2 seeds" in out
