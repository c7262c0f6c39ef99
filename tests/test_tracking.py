"""MLflow layout and resumption, through the real CLI on a real SQLite store."""

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
    import shutil

    from study.config.study_file import experiments_dir

    path = study_file(STUDY)
    shutil.copytree(experiments_dir() / "presets", path.parent / "presets")
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(path.parent))
    assert main(["run", "tiny"]) == 0
    assert main(["report", "--all"]) == 0
    reports = paths.home() / "reports"
    assert (reports / "tiny" / "report.html").is_file() and (reports / "tiny" / "report.md").is_file()
    assert "tiny" in (reports / "index.html").read_text()


def test_a_report_of_another_scale_goes_to_its_own_folder(study_file, capsys, monkeypatch):
    """``--preset``/``--set`` select other runs of the same study: their report must not
    overwrite the base scale's (nor its MLflow artifact)."""
    import shutil

    from study.config.study_file import experiments_dir

    path = study_file(STUDY)
    shutil.copytree(experiments_dir() / "presets", path.parent / "presets")
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(path.parent))
    assert main(["run", "tiny"]) == 0
    assert main(["run", "tiny", "--set", "train.steps=2"]) == 0
    assert main(["report", "tiny"]) == 0
    assert main(["report", "--all", "--set", "train.steps=2"]) == 0
    reports = paths.home() / "reports"
    base, other = reports / "tiny" / "report.md", reports / "tiny" / "train.steps=2" / "report.md"
    assert "--set train.steps=2" not in base.read_text() and "--set train.steps=2" in other.read_text()
    assert 'href="tiny/train.steps=2/report.html"' in (reports / "index-train.steps=2.html").read_text()
    client = MlflowClient(paths.tracking_uri())
    parent = client.get_run(_children(client, "tiny")[0].data.tags["mlflow.parentRunId"]).info.run_id
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/train.steps=2"} <= logged
