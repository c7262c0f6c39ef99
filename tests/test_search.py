"""``nfstudy search``: real Optuna storage and MLflow store in the test's $NFSTUDY_HOME, real
training on the smoke preset (one epoch of two 512-image steps, 8×8 digits)."""

from __future__ import annotations

import json

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study import paths
from study.cli import main
from study.config.study_file import load_study
from study.run.search import plan_search

SMOKE = """\
name: {name}
base: presets/smoke.yaml
fixed:
  model.norm: nf
  data.device_batch_size: 512
  train.steps: 2
seeds: [0]
search:
{search}
"""
LAMBDA = "  agc.clipping: {low: 0.001, high: 1.0, log: true}\n"


def _children(experiment: str) -> list:
    client = MlflowClient(paths.tracking_uri())
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], filter_string="tags.`nfstudy.role` = 'child'")


def _trials(storage_name_prefix: str) -> list[optuna.trial.FrozenTrial]:
    names = [n for n in optuna.get_all_study_names(paths.optuna_storage()) if n.startswith(storage_name_prefix)]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=paths.optuna_storage()).trials


@pytest.mark.slow
def test_trials_are_recorded_and_a_second_invocation_adds_to_the_same_study(study_file, capsys):
    path = study_file(SMOKE.format(name="lam", search=LAMBDA + "  pruner: none\n"))
    assert main(["search", str(path), "--trials", "2"]) == 0
    assert main(["search", str(path), "--trials", "1"]) == 0
    out = capsys.readouterr().out
    assert "0 trials existed, 2 added" in out and "2 trials existed, 1 added" in out

    trials = _trials("nfstudy-search:lam:")
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(0.001 <= t.params["agc.clipping"] <= 1.0 for t in trials)
    children = {run.info.run_id: run for run in _children("search:lam")}
    assert len(children) == len(trials)
    for trial in trials:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert run.info.status == "FINISHED" and run.data.tags["nfstudy.outcome"] == "completed"
        assert float(run.data.params["agc.clipping"]) == pytest.approx(trial.params["agc.clipping"])
        assert run.data.metrics["val/top1"] == pytest.approx(trial.value)

    client = MlflowClient(paths.tracking_uri())
    parent = client.get_run(next(iter(children.values())).data.tags["mlflow.parentRunId"])
    best = max(trials, key=lambda t: t.value)
    assert parent.data.metrics["best/val/top1"] == pytest.approx(best.value)
    assert json.loads(parent.data.tags["nfstudy.best_params"]) == best.params
    history = client.get_metric_history(parent.info.run_id, "best/val/top1")
    assert sorted(m.step for m in history) == [2, 3]  # logged after each invocation

    assert main(["report", str(path)]) == 0  # the report lands beside the trials in the MLflow UI
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/history.png"} <= logged


def test_a_pruner_that_prunes_marks_the_trial_in_optuna_and_mlflow(study_file):
    search = LAMBDA + "  pruner: {name: threshold, lower: 0.99}\n"
    path = study_file(SMOKE.format(name="pruned", search=search))
    assert main(["search", str(path), "--trials", "1"]) == 0
    (trial,) = _trials("nfstudy-search:pruned:")
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]  # reported epoch 0, then stopped
    (child,) = _children("search:pruned")
    assert child.info.status == "KILLED"
    assert child.data.tags["nfstudy.outcome"] == "pruned"
    assert child.data.tags["nfstudy.pruned_at_epoch"] == "0"
    assert "test/top1" not in child.data.metrics  # stopped before the end-of-run evaluation


@pytest.mark.slow
def test_a_diverged_trial_tells_the_sampler_chance_accuracy(study_file):
    text = SMOKE.format(name="boom", search="  agc.clipping: [1000.0]\n  pruner: none\n")
    path = study_file(text.replace("  train.steps: 2\n", "  train.steps: 2\n  optim.lr: 1.0e+38\n"))
    assert main(["search", str(path), "--trials", "1"]) == 0
    (trial,) = _trials("nfstudy-search:boom:")
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["outcome"] == "diverged"
    assert trial.value == pytest.approx(1 / 10)  # chance on the ten digits
    (child,) = _children("search:boom")
    assert child.info.status == "FINISHED" and child.data.tags["nfstudy.outcome"] == "diverged"


@pytest.mark.slow
def test_a_grid_search_stops_when_every_point_has_a_trial(study_file, capsys):
    search = "  agc.clipping: [0.05]\n  sampler: grid\n  pruner: none\n"
    path = study_file(SMOKE.format(name="grid", search=search))
    assert main(["search", str(path), "--trials", "3"]) == 0
    assert len(_trials("nfstudy-search:grid:")) == 1
    assert main(["search", str(path), "--trials", "3"]) == 0
    assert len(_trials("nfstudy-search:grid:")) == 1
    assert "1 trials existed, 0 added" in capsys.readouterr().out


@pytest.mark.parametrize("entry, expected", [
    ("agc.clipping: {low: 1.0, high: 0.001}", ["agc.clipping", "low (1.0) is above high (0.001)"]),
    ("agc.clipping: {low: 0.0, high: 1.0, log: true}", ["agc.clipping", "log: true needs low > 0"]),
    ("agc.cliping: {low: 0.001, high: 1.0}", ["unknown key 'agc.cliping'", "did you mean 'agc.clipping'"]),
    ("data.batch_size: []", ["data.batch_size", "empty list"]),
    ("agc.clipping: {low: 0.001, high: 1.0, step: 0.1}\n  sampler: grid\n  pruner: {name: median, lower: 1}",
     ["pruner 'median' takes n_startup_trials, n_warmup_steps (got lower)"]),
    ("agc.clipping: {low: 0.001, high: 1.0}\n  sampler: grid", ["sampler 'grid' needs a step", "agc.clipping"]),
    ("data.batch_size: {low: 0, high: 8}", ["data.batch_size=0", "greater than 0"]),
])
def test_an_invalid_search_space_exits_2_with_one_line(study_file, capsys, entry, expected):
    path = study_file(SMOKE.format(name="bad", search=f"  {entry}\n"))
    assert main(["search", str(path), "--trials", "1"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    for fragment in expected:
        assert fragment in lines[0]
    assert not paths.home().joinpath("optuna.db").exists()  # nothing was created


def test_a_pruner_needs_a_per_epoch_metric(study_file, capsys):
    path = study_file(SMOKE.format(name="late", search=LAMBDA + "  metric: test/top1\n"))
    assert main(["search", str(path), "--trials", "1"]) == 2
    assert "needs a per-epoch metric" in capsys.readouterr().err


def test_the_study_name_follows_the_space_and_the_fixed_config(study_file):
    spec = load_study(study_file(SMOKE.format(name="names", search=LAMBDA)))
    narrower = load_study(study_file(SMOKE.format(name="names", search=LAMBDA.replace("1.0", "0.5")), "b.yaml"))
    same = plan_search(spec).study_name
    assert same.startswith("nfstudy-search:names:") and same == plan_search(spec).study_name
    assert plan_search(narrower).study_name != same
    assert plan_search(spec, overrides={"data.batch_size": 4096}).study_name != same
    # Where a run executes is not what it computes: same study on another device.
    assert plan_search(spec, overrides={"train.device": "cpu"}).study_name == same
    assert plan_search(spec, overrides={"train.tf32": "all"}).study_name != same


def test_a_key_added_later_at_its_old_behaviour_keeps_the_study_name(study_file, monkeypatch):
    """A search begun before a config key existed resumes after an upgrade adds that key at
    the value that reproduces the old behaviour (as a run's hash does)."""
    from study.config import run_config

    spec = load_study(study_file(SMOKE.format(name="later", search=LAMBDA)))
    before = plan_search(spec).study_name
    flat = run_config.RunConfig.flat
    monkeypatch.setattr(run_config.RunConfig, "flat", lambda self: {**flat(self), "train.new_knob": "old"})
    assert plan_search(spec).study_name != before  # the new key is part of the identity...
    monkeypatch.setitem(run_config.HASH_NEUTRAL_DEFAULTS, "train.new_knob", "old")
    assert plan_search(spec).study_name == before  # ...unless it keeps the old behaviour


def test_set_pins_a_searched_key(study_file, capsys):
    search = LAMBDA + "  data.batch_size: [1024, 4096]\n"
    spec = load_study(study_file(SMOKE.format(name="pin", search=search)))
    plan = plan_search(spec, overrides={"data.batch_size": 4096})
    assert list(plan.space) == ["agc.clipping"]
    assert plan.fixed["data.batch_size"] == 4096
    path = study_file(SMOKE.format(name="pin", search=LAMBDA), "pin.yaml")
    assert main(["search", str(path), "--set", "agc.clipping=0.1", "--trials", "1"]) == 2
    assert "pins every searched key" in capsys.readouterr().err


def test_default_storage_is_the_home_sqlite_and_direction_follows_the_metric(study_file):
    spec = load_study(study_file(SMOKE.format(name="dirs", search=LAMBDA + "  metric: val/loss\n"
                                                                             "  pruner: none\n")))
    assert plan_search(spec).direction == "minimize"
    assert paths.optuna_storage() == f"sqlite:///{paths.home() / 'optuna.db'}"


def test_the_registered_agc_lambda_search_is_valid():
    spec = load_study("agc-lambda")
    plan = plan_search(spec)
    assert list(plan.space) == ["agc.clipping"]
    assert (plan.space["agc.clipping"].low, plan.space["agc.clipping"].high) == (0.001, 1.0)
    assert plan.space["agc.clipping"].log
    assert plan.fixed_config["data.batch_size"] == 1024 and plan.direction == "maximize"
    assert plan_search(spec, overrides={"data.batch_size": 4096}).fixed_config["data.batch_size"] == 4096
