"""MLflow layout and resumption, through the real CLI on a real SQLite store."""

import pytest
from mlflow.tracking import MlflowClient

from study import paths
from study.cli import main

STUDY = """
name: tiny
base: presets/smoke.yaml
arms:
  nf: {model.norm: nf}
  bn: {model.norm: bn}
grid:
  agc.clipping: [null, 0.04]
seeds: [0, 1]
"""


def _children(client, name):
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], "tags.`nfstudy.role` = 'child'")


def test_layout_one_parent_n_children_params_tags_metrics(study_file, capsys):
    assert main(["run", str(study_file(STUDY))]) == 0
    client = MlflowClient(paths.tracking_uri())
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    parents = client.search_runs([experiment.experiment_id], "tags.`nfstudy.role` = 'parent'")
    assert len(parents) == 1
    children = _children(client, "tiny")
    assert len(children) == 2 * 2 * 2
    hashes = {run.data.tags["nfstudy.config_hash"] for run in children}
    assert len(hashes) == 8
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["nfstudy.study"] == "tiny"
        assert run.data.tags["nfstudy.arm"] in ("nf", "bn")
        assert run.data.tags["nfstudy.outcome"] in ("completed", "diverged")
        assert run.data.params["data.name"] == "digits"
        assert run.data.params["seed"] in ("0", "1")
        for key in ("val/top1", "test/top1", "train/loss", "final/val/top1", "time/step_ms"):
            assert key in run.data.metrics
    history = client.get_metric_history(children[0].info.run_id, "val/top1")
    assert [m.step for m in history] == list(range(int(children[0].data.metrics["epochs"])))


def test_second_run_starts_nothing(study_file, capsys):
    path = str(study_file(STUDY))
    assert main(["run", path]) == 0
    capsys.readouterr()
    assert main(["run", path]) == 0
    assert "8 done, 0 to run" in capsys.readouterr().out
    assert len(_children(MlflowClient(paths.tracking_uri()), "tiny")) == 8


def test_changed_override_runs_only_the_new_configs(study_file, capsys):
    path = str(study_file(STUDY))
    assert main(["run", path]) == 0
    capsys.readouterr()
    assert main(["run", path, "--set", "train.steps=3"]) == 0
    assert "0 done, 8 to run" in capsys.readouterr().out


def test_another_study_reuses_a_finished_config(study_file, capsys):
    assert main(["run", str(study_file(STUDY))]) == 0
    other = STUDY.replace("name: tiny", "name: other").replace("[null, 0.04]", "[0.04, 0.08]")
    assert main(["run", str(study_file(other, "other.yaml"))]) == 0
    out = capsys.readouterr().out
    assert "4 copied from other studies" in out
    client = MlflowClient(paths.tracking_uri())
    copies = [r for r in _children(client, "other") if "nfstudy.copied_from" in r.data.tags]
    assert len(copies) == 4
    source = client.get_run(copies[0].data.tags["nfstudy.copied_from"])
    assert source.data.tags["nfstudy.config_hash"] == copies[0].data.tags["nfstudy.config_hash"]
    assert copies[0].data.metrics["test/top1"] == source.data.metrics["test/top1"]


def test_report_all_writes_every_report_and_an_index(study_file, capsys, monkeypatch):
    path = study_file(STUDY)
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(path.parent))
    assert main(["run", "tiny"]) == 0
    assert main(["report", "--all"]) == 0
    assert "studies without runs left out" in capsys.readouterr().out  # the built-in studies
    reports = paths.home() / "reports"
    assert (reports / "tiny" / "report.html").is_file() and (reports / "tiny" / "report.md").is_file()
    assert "tiny" in (reports / "index.html").read_text()
    assert sorted(p.name for p in reports.iterdir() if p.is_dir()) == ["tiny"]


def test_a_report_of_another_scale_goes_to_its_own_folder(study_file, capsys, monkeypatch):
    """``--preset``/``--set`` select other runs of the same study: their report must not
    overwrite the base scale's (nor its MLflow artifact)."""
    path = study_file(STUDY)
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(path.parent))
    assert main(["run", "tiny"]) == 0
    assert main(["run", "tiny", "--set", "train.steps=2"]) == 0
    capsys.readouterr()
    assert main(["report", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "tiny: runs at 2 scale(s), each reported in its own folder: base (8 of 8); --set train.steps=2 (8 runs)" in out
    assert main(["report", "--all", "--set", "train.steps=2"]) == 0
    reports = paths.home() / "reports"
    base, other = reports / "tiny" / "report.md", reports / "tiny" / "train.steps=2" / "report.md"
    assert "--set train.steps=2" not in base.read_text() and "--set train.steps=2" in other.read_text()
    assert 'href="tiny/train.steps=2/report.html"' in (reports / "index-train.steps=2.html").read_text()
    client = MlflowClient(paths.tracking_uri())
    parent = client.get_run(_children(client, "tiny")[0].data.tags["mlflow.parentRunId"]).info.run_id
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/train.steps=2"} <= logged


def test_with_no_preset_a_report_covers_every_scale_that_has_runs(study_file, capsys):
    """``run --preset smoke`` then ``report NAME``: the smoke runs are found and reported in
    their own folder, and the Regenerate line names the study as the user did."""
    path = str(study_file(STUDY.replace("presets/smoke.yaml", "presets/digits.yaml")))
    assert main(["run", path, "--preset", "smoke"]) == 0
    capsys.readouterr()
    assert main(["report", path]) == 0
    out = capsys.readouterr().out
    assert "runs at 1 scale(s), each reported in its own folder: preset smoke (8 of 8)" in out
    spec_key = next(p.name for p in (paths.home() / "reports").iterdir())
    markdown = (paths.home() / "reports" / spec_key / "preset-smoke" / "report.md").read_text()
    assert "No runs yet" not in markdown
    assert f"Regenerate: `nfstudy report {path} --preset smoke`" in markdown


def test_parent_run_holds_the_study_and_children_the_resolved_model(study_file, capsys):
    import json

    path = study_file(STUDY)
    assert main(["run", str(path)]) == 0
    client = MlflowClient(paths.tracking_uri())
    experiment = client.get_experiment_by_name("tiny")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`nfstudy.role` = 'parent'")
    assert parent.data.params["study.base"] == "presets/smoke.yaml"
    assert json.loads(parent.data.params["study.grid"]) == {"agc.clipping": [None, 0.04]}
    assert json.loads(parent.data.params["study.arms"]) == ["nf", "bn"]
    study_text = client.download_artifacts(parent.info.run_id, "study/study.yaml")
    assert open(study_text).read() == STUDY
    plan = json.load(open(client.download_artifacts(parent.info.run_id, "study/plan.json")))
    assert len(plan) == 8 and {row["config_hash"] for row in plan} == {
        r.data.tags["nfstudy.config_hash"] for r in _children(client, "tiny")}
    for run in _children(client, "tiny"):
        twin = "bn_resnet_small" if run.data.params["model.norm"] == "bn" else "nf_resnet_small"
        assert run.data.params["model.name"] == "nf_resnet_small"
        assert run.data.params["model.resolved_name"] == twin
        # the learning rate and batch a run actually used, beside the paper batch that set them
        batch = int(run.data.params["data.batch_size"])
        assert float(run.data.params["optim.peak_lr"]) == pytest.approx(float(run.data.params["optim.lr"]) * batch / 256)
        cap = run.data.params["data.device_batch_size"]
        assert int(run.data.params["data.real_batch_size"]) == (batch if cap == "None" else min(batch, int(cap)))
        assert len(run.data.tags["nfstudy.code"]) == 16 and run.data.tags["nfstudy.git_dirty"] in (
            "true", "false", "unknown")


def test_preset_smoke_caps_the_steps_a_study_fixes(study_file, capsys):
    long = "name: long\nbase: presets/digits.yaml\nfixed: {train.steps: 50}\nseeds: [0]\n"
    assert main(["run", str(study_file(long)), "--preset", "smoke"]) == 0
    assert "caps train.steps at 4 (the study asks 50" in capsys.readouterr().out
    (run,) = _children(MlflowClient(paths.tracking_uri()), "long")
    assert run.data.metrics["steps"] == 4


def test_dry_run_predicts_copies_and_the_run_does_them(study_file, capsys):
    assert main(["run", str(study_file(STUDY))]) == 0
    other = str(study_file(STUDY.replace("name: tiny", "name: other").replace("[null, 0.04]", "[0.04, 0.08]"),
                           "other.yaml"))
    capsys.readouterr()
    assert main(["run", other, "--dry-run"]) == 0
    predicted = capsys.readouterr().out
    assert "other: 8 runs, 0 done, 4 copied from other studies, 4 to run (dry run)" in predicted
    assert MlflowClient(paths.tracking_uri()).get_experiment_by_name("other") is None  # nothing written
    assert main(["run", other]) == 0
    assert "other: 0 done, 4 copied from other studies, 4 to run, 1 worker(s)" in capsys.readouterr().out


def test_load_runs_finds_nfstudys_runs_from_any_directory(study_file, tmp_path, monkeypatch, capsys):
    """The README's snippet: ``load_runs("tiny")`` with no URI reads $NFSTUDY_HOME's store,
    wherever Python runs, and never creates MLflow's ./mlflow.db."""
    from analysis.runs import load_runs

    assert main(["run", str(study_file(STUDY))]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert len(load_runs("tiny")) == 8
    monkeypatch.delenv("NFSTUDY_HOME")  # ./.nfstudy, which does not exist here
    assert load_runs("tiny").empty
    assert list(elsewhere.iterdir()) == []


def test_a_deleted_run_is_trained_again(study_file, capsys):
    """The README's way to force a re-run of a fresh run: delete it in MLflow."""
    path = str(study_file(STUDY))
    assert main(["run", path]) == 0
    client = MlflowClient(paths.tracking_uri())
    client.delete_run(_children(client, "tiny")[0].info.run_id)
    capsys.readouterr()
    assert main(["run", path]) == 0
    assert "tiny: 7 done, 1 to run" in capsys.readouterr().out
    assert len(_children(client, "tiny")) == 8
