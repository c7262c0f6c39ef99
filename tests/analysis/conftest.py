"""Real stores filled as the framework writes them: an SQLite MLflow store with the layout
of study.record.tracking, and Optuna studies as ``nfstudy search`` leaves them."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import optuna
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from study.record.tags import SEARCH


def _param_text(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def fill_store(uri: str, study: str, runs: list[dict]) -> dict:
    """Create the study's experiment, its parent run and one child run per entry.

    Each entry: ``params`` (dotted keys → Python values), ``metrics`` (final values),
    optional ``history`` (key → list of per-epoch values), ``arm``, ``outcome``
    (default completed) and ``status`` (default FINISHED).

    Returns:
        ``{"parent": parent run id, "children": [child run ids]}``.
    """
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(study)
    parent = client.create_run(experiment_id, run_name=study, tags={"nfstudy.role": "parent"})
    children = []
    for index, run in enumerate(runs):
        tags = {"mlflow.parentRunId": parent.info.run_id, "nfstudy.role": "child", "nfstudy.study": study,
                "nfstudy.arm": run.get("arm", ""), "nfstudy.config_hash": run.get("hash", f"h{index:04d}"),
                "nfstudy.outcome": run.get("outcome", "completed"), "nfstudy.git_commit": "abc123",
                "nfstudy.host": "test"}
        child = client.create_run(experiment_id, run_name=f"{study}-{index}", tags=tags)
        metrics = [Metric(k, v, 0, step) for k, values in run.get("history", {}).items()
                   for step, v in enumerate(values)]
        last_step = max((len(v) for v in run.get("history", {}).values()), default=1)
        metrics += [Metric(k, v, 0, last_step) for k, v in run.get("metrics", {}).items() if not math.isnan(v)]
        client.log_batch(child.info.run_id, metrics=metrics,
                         params=[Param(k, _param_text(v)) for k, v in run["params"].items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        status = run.get("status", "FINISHED")
        if status != "RUNNING":
            client.set_terminated(child.info.run_id, status=status)
        children.append(child.info.run_id)
    client.set_terminated(parent.info.run_id)
    return {"parent": parent.info.run_id, "children": children}


def clip_threshold_runs() -> list[dict]:
    """A Fig. 2b-like grid: λ {0.01, 0.04, 0.16} × batch {256, 4096} × seeds {0, 1, 2}.

    Large λ at batch 4096 diverges (chance accuracy); the best λ falls from 0.16 to 0.01.
    """
    accuracy = {(256, 0.01): 0.90, (256, 0.04): 0.93, (256, 0.16): 0.96,
                (4096, 0.01): 0.95, (4096, 0.04): 0.90, (4096, 0.16): 0.10}
    runs = []
    for (batch, clipping), top1 in accuracy.items():
        for seed in (0, 1, 2):
            wobble = 0.01 * (seed - 1)
            runs.append({
                "params": {"agc.clipping": clipping, "data.batch_size": batch, "data.device_batch_size": 128,
                           "optim.lr": 0.1 * batch / 256, "train.steps": 300, "model.name": "nf_resnet_small",
                           "sam.mode": "off", "agc.exclude": None, "seed": seed},
                "metrics": {"val/top1": top1 + wobble, "test/top1": top1 + wobble / 2, "time/step_ms": 20.0},
                "history": {"val/top1": [0.5, top1 + wobble]},
                "outcome": "diverged" if top1 < 0.2 else "completed",
            })
    return runs


def clip_threshold_spec():
    """A StudySpec-like object for :func:`clip_threshold_runs`."""
    return SimpleNamespace(
        name="clip-threshold", description="AGC clipping threshold against batch size (paper Fig. 2b)",
        paper="fig2b", arms={}, grid={"agc.clipping": [0.01, 0.04, 0.16], "data.batch_size": [256, 4096]},
        seeds=[0, 1, 2], metric="val/top1", baseline=None, fixed={"model.name": "nf_resnet_small"},
        figures=[{"kind": "line", "x": "agc.clipping", "y": "val/top1", "hue": "data.batch_size", "logx": True}],
    )


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="session")
def store_filler():
    """:func:`fill_store`, for tests (conftest modules are not imported by name)."""
    return fill_store


@pytest.fixture(scope="session")
def clip_threshold_study():
    """``(spec, runs)`` of the Fig. 2b-like synthetic study."""
    return clip_threshold_spec(), clip_threshold_runs()


def add_search_study(storage, study: str, name: str, batch, trials: list[tuple]) -> None:
    """An Optuna study laid out as ``nfstudy search`` leaves one: the ``nfstudy.search`` and
    ``fixed`` user attrs, and one trial per ``(params, value, state, outcome)``."""
    created = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    created.set_user_attr(SEARCH, study)
    created.set_user_attr("fixed", {"data.batch_size": batch, "data.device_batch_size": 128, "optim.lr": 0.1,
                                    "train.steps": 150})
    spaces = {"agc.clipping": FloatDistribution(0.001, 1.0, log=True), "data.batch_size": FloatDistribution(64, 4096),
              "optim.lr": FloatDistribution(0.01, 1.0, log=True)}
    for number, (params, value, state, outcome) in enumerate(trials):
        created.add_trial(create_trial(
            params=params, distributions={k: spaces[k] for k in params},
            value=value if state == TrialState.COMPLETE else None, state=state,
            intermediate_values={0: value} if state == TrialState.PRUNED else {},
            user_attrs={"outcome": outcome, "mlflow_run_id": f"run{number}", "test/top1": value},
        ))


@pytest.fixture(scope="session")
def search_filler():
    """:func:`add_search_study`, for tests."""
    return add_search_study
