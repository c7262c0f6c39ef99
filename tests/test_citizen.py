"""nfstudy as an MLflow and Optuna citizen: system metrics on child runs, trial runs named by
their searched values, the objective's name on Optuna studies, run_study for notebooks."""

from __future__ import annotations

import json
import sys

import optuna
from mlflow.tracking import MlflowClient

from study import paths
from study.cli import main
from study.run.search import trial_name

TINY = """name: tiny
base: presets/smoke.yaml
fixed: {train.steps: 30, data.device_batch_size: 64}
arms:
  agc: {agc.clipping: 0.01}
seeds: [0]
"""


def _children(experiment: str) -> list:
    client = MlflowClient(paths.tracking_uri())
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.`nfstudy.role` = 'child'")


def test_system_metrics_and_weights_are_on_the_child_run(study_file, monkeypatch, tmp_path, capsys):
    import torch

    import study.record.system_metrics as system

    monkeypatch.setattr(system, "SAMPLING_S", 0.2)
    path = str(study_file(TINY))
    assert main(["run", path, "--set", "train.system_metrics=true", "--set", "train.log_model=true",
                 "--set", "train.log_dataset=true"]) == 0
    (run,) = _children("tiny")
    names = set(run.data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= names
    assert run.data.params["train.system_metrics"] == "True"
    local = MlflowClient(paths.tracking_uri()).download_artifacts(run.info.run_id, "model/state_dict.pt", str(tmp_path))
    weights = torch.load(local, weights_only=True)
    assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())
    (used,) = MlflowClient(paths.tracking_uri()).get_run(run.info.run_id).inputs.dataset_inputs
    assert used.dataset.name == "digits" and json.loads(used.dataset.profile)["num_classes"] == 10
    assert [(t.key, t.value) for t in used.tags] == [("mlflow.data.context", "training")]
    # Recording more is the same run: neither switch is in the config hash.
    capsys.readouterr()
    assert main(["show", path]) == 0
    assert "1 done, 0 to run" in capsys.readouterr().out


def test_system_metrics_without_psutil_is_one_line(study_file, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psutil", None)
    assert main(["run", str(study_file(TINY)), "--set", "train.system_metrics=true"]) == 2
    assert "train.system_metrics needs psutil: pip install 'nfstudy[system-metrics]'" in capsys.readouterr().err


def test_trial_names_show_the_searched_values():
    assert trial_name(3, {"agc.clipping": 0.0123456, "optim.lr": 0.2}) == "trial-3/clipping=0.01235/lr=0.2"
    assert trial_name(0, {"agc.mode": "unit"}) == "trial-0/mode=unit"


def test_a_search_names_its_trials_and_its_objective(study_file):
    path = study_file(TINY.replace("train.steps: 30", "train.steps: 2").replace("arms:\n  agc: {agc.clipping: 0.01}\n", "")
                      + "search:\n  agc.clipping: {low: 0.001, high: 1.0, log: true}\n  pruner: none\n")
    assert main(["search", str(path), "--trials", "1"]) == 0
    (run,) = _children("search:tiny")
    assert run.info.run_name.startswith("trial-0/clipping=")
    names = [n for n in optuna.get_all_study_names(paths.optuna_storage()) if n.startswith("nfstudy-search:tiny")]
    assert optuna.load_study(study_name=names[0], storage=paths.optuna_storage()).metric_names == ["val/top1"]


def test_run_study_returns_the_tidy_frame_and_raises_on_bad_input(study_file):
    import pytest

    import study
    from study.errors import ConfigError

    path = str(study_file(TINY.replace("train.steps: 30", "train.steps: 2")))
    frame = study.run_study(path, seeds="0-1")
    assert sorted(frame["seed"]) == [0, 1] and set(frame["arm"]) == {"agc"}
    assert {"config_hash", "agc.clipping", "val/top1", "test/top1"} <= set(frame.columns)
    again = study.run_study(path, seeds="0-1")  # nothing left to train: the same results
    assert sorted(again["run_id"]) == sorted(frame["run_id"])
    with pytest.raises(ConfigError, match="--seeds"):
        study.run_study(path, seeds="4-1")
