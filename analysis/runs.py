"""MLflow → tidy pandas: one row per child run of a study.

The layout read here is the one ``study.record.tracking`` writes (the README, "Where results
live"): one experiment per study, named after it; one parent run (tag ``nfstudy.role=parent``);
one child run per RunConfig (tag ``nfstudy.role=child``) whose params are the flattened
RunConfig under dotted keys and whose metrics are logged per epoch (``step`` = epoch).

Only FINISHED child runs whose outcome is ``completed`` or ``diverged`` are results
(:func:`results`); FAILED, KILLED and RUNNING runs are loaded too, so that a report can
count them, but never enter a statistic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study.errors import TrackingError
from study.record.tags import ARM, HASH, OUTCOME, RESULT_OUTCOMES, ROLE, STUDY

RUN_COLUMNS = [
    "run_id", "run_name", "status", "start_time", "end_time",
    "study", "arm", "config_hash", "outcome",
]
HISTORY_COLUMNS = ["run_id", "arm", "seed", "key", "step", "value"]
_PAGE_SIZE = 1000
# MLflow params are strings; str() of these Python values is not JSON.
_LITERALS = {"None": None, "True": True, "False": False}


def parse_param(text: str):
    """Turn an MLflow param string back into the Python value that was logged.

    ``"None"`` → None, ``"True"``/``"true"`` → True, numbers → int/float (``"1e-3"``
    included), JSON lists/dicts → lists/dicts; anything else stays a string. YAML is not
    used on purpose: YAML 1.1 reads ``off`` (``sam.mode``) as False.

    Args:
        text: the param value as MLflow stores it.

    Returns:
        The parsed value.
    """
    if text in _LITERALS:
        return _LITERALS[text]
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def default_tracking_uri() -> str:
    """Where ``nfstudy run`` records, read from the same environment: ``$MLFLOW_TRACKING_URI``,
    else ``$NFSTUDY_HOME/mlflow.db`` (default ``./.nfstudy``) as an absolute ``sqlite:///``
    URI. Never MLflow's own default, which would create an empty ``./mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = Path(os.environ.get("NFSTUDY_HOME", ".nfstudy")).expanduser().resolve()
    return f"sqlite:///{home / 'mlflow.db'}"


def _client(tracking_uri: str | None) -> MlflowClient | None:
    """A client of the store, or ``None`` for a SQLite file that does not exist (opening it
    would create an empty one)."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    return MlflowClient(uri)


def _experiment_id(client: MlflowClient | None, study: str) -> str | None:
    if client is None:
        return None
    try:
        experiment = client.get_experiment_by_name(study)
    except MlflowException as error:
        raise TrackingError(
            f"tracking store {client.tracking_uri!r} cannot be read for study {study!r}: {error}"
        ) from error
    return None if experiment is None else experiment.experiment_id


def _search_all(client: MlflowClient, experiment_id: str, role: str) -> list:
    """Every run of the experiment with the given role, page by page (no truncation)."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE}` = '{role}'",
            max_results=_PAGE_SIZE,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _child_runs(study: str, tracking_uri: str | None) -> tuple[MlflowClient, list] | None:
    """The client and every child run of the study, or None when it has no experiment yet."""
    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, study)
    return None if experiment_id is None else (client, _search_all(client, experiment_id, "child"))


def _timestamp(millis: int | None):
    return pd.NaT if millis is None else pd.Timestamp(millis, unit="ms")


def load_runs(study: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """Load every child run of a study as one row.

    Columns: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time``,
    ``study``, ``arm``, ``config_hash``, ``outcome``; then one column per param under its
    dotted key (``agc.clipping``, ``data.batch_size``, ``seed``…) with the value parsed
    back by :func:`parse_param`; then one column per metric under its logged name
    (``val/top1``, ``test/top1``, ``time/step_ms``…) holding the last logged value.

    Example:
        >>> df = load_runs("clip-threshold", "sqlite:///.nfstudy/mlflow.db")
        >>> results(df).groupby("agc.clipping")["test/top1"].mean()

    Args:
        study: the study name (= the MLflow experiment name).
        tracking_uri: MLflow tracking URI; None: :func:`default_tracking_uri` (nfstudy's).

    Returns:
        The runs, oldest first; an empty frame with the run columns when the study has
        no experiment yet.

    Raises:
        TrackingError: the tracking store cannot be read.
    """
    found = _child_runs(study, tracking_uri)
    if found is None:
        return pd.DataFrame(columns=RUN_COLUMNS)
    info, params, metrics = [], [], []
    for run in found[1]:
        tags = run.data.tags
        info.append({
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": _timestamp(run.info.start_time),
            "end_time": _timestamp(run.info.end_time),
            "study": tags.get(STUDY, study),
            "arm": tags.get(ARM, ""),
            "config_hash": tags.get(HASH),
            "outcome": tags.get(OUTCOME),
        })
        params.append({key: parse_param(value) for key, value in run.data.params.items()})
        metrics.append(run.data.metrics)
    # object dtype keeps params as logged: None stays None (not NaN), ints stay ints.
    params = pd.DataFrame(params, index=range(len(info)), dtype=object)
    params = params.where(params.notna(), None)
    return pd.concat([
        pd.DataFrame(info, columns=RUN_COLUMNS),
        params[sorted(params.columns)],
        pd.DataFrame(metrics, index=range(len(info)), dtype=float).sort_index(axis=1),
    ], axis=1)


def results(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that are results: FINISHED with outcome ``completed`` or ``diverged``.

    When one config hash was finished more than once (a rerun), the latest run is kept,
    so a configuration never counts twice.

    Args:
        runs: a frame from :func:`load_runs`.

    Returns:
        The result rows, in the order of ``runs``.
    """
    keep = runs[(runs["status"] == "FINISHED") & runs["outcome"].isin(RESULT_OUTCOMES)]
    latest = keep.sort_values("end_time").drop_duplicates("config_hash", keep="last")
    return keep.loc[keep.index.isin(latest.index)]


def parent_run_id(study: str, tracking_uri: str | None = None) -> str | None:
    """The id of the study's parent run, or None when there is none yet.

    Raises:
        TrackingError: the tracking store cannot be read.
    """
    client = _client(tracking_uri)
    experiment_id = _experiment_id(client, study)
    if experiment_id is None:
        return None
    parents = _search_all(client, experiment_id, "parent")
    return parents[0].info.run_id if parents else None


def load_history(study: str, tracking_uri: str | None = None, *, keys=None) -> pd.DataFrame:
    """Per-step metric values of every child run (learning curves), long format.

    Args:
        study: the study name.
        tracking_uri: MLflow tracking URI; None: :func:`default_tracking_uri` (nfstudy's).
        keys: metric names to load (e.g. ``["val/top1"]``); None loads every metric.

    Returns:
        Columns ``run_id``, ``arm``, ``seed``, ``key``, ``step``, ``value``; join with
        :func:`load_runs` on ``run_id`` for the other params. Empty when the study has
        no experiment.

    Raises:
        TrackingError: the tracking store cannot be read.
    """
    found = _child_runs(study, tracking_uri)
    if found is None:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    client, rows = found[0], []
    for run in found[1]:
        seed = parse_param(run.data.params.get("seed", "None"))
        arm = run.data.tags.get(ARM, "")
        wanted = run.data.metrics.keys() if keys is None else [k for k in keys if k in run.data.metrics]
        for key in wanted:
            rows.extend(
                (run.info.run_id, arm, seed, key, metric.step, metric.value)
                for metric in client.get_metric_history(run.info.run_id, key)
            )
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    return frame.sort_values(["run_id", "key", "step"], ignore_index=True)

