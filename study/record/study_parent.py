"""What a study's MLflow parent run holds: the question, next to the child runs that answer it.

- params: the study's ``fixed:`` overrides (dotted keys, as the children's params) and
  ``study.base``, ``study.arms``, ``study.grid``, ``study.seeds``, ``study.metric``. MLflow
  params never change once logged, so these are the values first recorded; a later edit of
  the study file shows in its artifact, which every ``nfstudy run`` replaces;
- artifacts ``study/<study file>`` (as run) and ``study/plan.json`` (every planned run:
  name, arm, grid point, seed, config hash and resolved config), or
  ``study/<scale>/plan.json`` for the runs of a ``--preset``/``--set`` scale.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from mlflow.entities import Param

from study.config.expand import PlannedRun
from study.config.run_config import flatten
from study.config.study_file import StudySpec
from study.record.tracking import Tracking, param_value


def study_params(spec: StudySpec) -> dict[str, str]:
    """The parent run's params: the study's fixed overrides and the shape of its plan."""
    params = {key: param_value(value) for key, value in flatten(spec.fixed).items()}
    params.update({"study.base": str(spec.base), "study.arms": json.dumps(list(spec.arms)),
                   "study.grid": json.dumps(spec.grid), "study.seeds": json.dumps(spec.seeds),
                   "study.metric": spec.metric})
    return params


def plan_rows(runs: list[PlannedRun]) -> list[dict]:
    """The resolved plan, one JSON-ready row per run."""
    return [{"name": run.name, "arm": run.arm, "point": run.point, "seed": run.seed,
             "config_hash": run.config_hash, "config": run.config.flat()} for run in runs]


def record_study(tracking: Tracking, parent_id: str, spec: StudySpec, runs: list[PlannedRun],
                 scale: str = "") -> None:
    """Log the study's params (those not logged yet), its file and its resolved plan on the
    parent run ``parent_id``."""
    client = tracking.client
    logged = client.get_run(parent_id).data.params
    params = [Param(k, v) for k, v in study_params(spec).items() if k not in logged]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(parent_id, params=params[i:i + 100])
    with tempfile.TemporaryDirectory(prefix="nfstudy-parent-") as folder:
        if spec.source is not None and spec.source.is_file():
            copy = Path(folder) / spec.source.name
            shutil.copyfile(spec.source, copy)
            client.log_artifact(parent_id, str(copy), "study")
        plan = Path(folder) / "plan.json"
        plan.write_text(json.dumps(plan_rows(runs), indent=1, default=str))
        client.log_artifact(parent_id, str(plan), "study" + (f"/{scale}" if scale else ""))
