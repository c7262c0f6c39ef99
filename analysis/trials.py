"""Optuna storage → tidy pandas: one row per trial of a study's searches.

``nfstudy search NAME`` makes one Optuna study per search space and fixed config (e.g. one
per ``--set data.batch_size=…``), each marked with the user attr ``nfstudy.search`` = NAME
and holding its fixed config (``fixed``), space, metric and MLflow parent run. Each trial
records its ``outcome``, ``test/top1`` and ``mlflow_run_id`` as user attrs. The storage is
opened for reading only: nothing is created, no lock is taken (a journal is read as
appended lines, so a search writing meanwhile is harmless).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from analysis import roles
from study.errors import TrackingError
from study.record.tags import SEARCH

TRIAL_COLUMNS = ["optuna_study", "batch", "number", "state", "outcome", "value", "last_value",
                 "pruned_epoch", "test/top1", "mlflow_run_id"]


def shown_url(url: str) -> str:
    """The storage URL as a report may print it: a password in it becomes ``***``."""
    if "://" not in url or url.startswith("file://"):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url.split("://", 1)[0] + "://…"


def open_storage(url: str) -> BaseStorage | None:
    """Open an Optuna storage for reading: an RDB URL (``sqlite:///…``, ``postgresql://…``) or
    the path of a journal file (optionally ``file://``).

    Returns:
        The storage, or None when its SQLite or journal file does not exist (no searches yet).

    Raises:
        TrackingError: the storage cannot be read (one line; a password in the URL is hidden).
    """
    if "://" not in url or url.startswith("file://"):
        path = Path(url.removeprefix("file://")).expanduser()
        return JournalStorage(JournalFileBackend(str(path))) if path.is_file() else None
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    try:
        return RDBStorage(url, skip_table_creation=True)
    except Exception as error:  # SQLAlchemy and the database drivers raise many types
        raise TrackingError(f"Optuna storage '{shown_url(url)}' cannot be read: {_root_cause(error)}") from None


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost cause (Optuna wraps a refused connection in a generic
    commit error)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_trials(study: str, storage: str | BaseStorage | None) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Every trial of every Optuna study of search ``study``, one row each.

    Example:
        >>> trials, studies = load_trials("agc-lambda", "sqlite:///.nfstudy/optuna.db")
        >>> trials.groupby("batch")["value"].max()

    Args:
        study: the nfstudy study name.
        storage: an Optuna storage URL (or journal path), or a storage opened by
            :func:`open_storage`; a missing file or None means no trials.

    Returns:
        ``(trials, studies)``: trials with :data:`TRIAL_COLUMNS` plus the fixed real batch,
        lr and steps and one column per searched key; ``studies`` maps each Optuna study
        name to its user attrs (``fixed`` config, ``space``, ``metric``…) plus ``direction``.

    Raises:
        TrackingError: the storage cannot be read.
    """
    store = open_storage(storage) if isinstance(storage, str) else storage
    if store is None:
        return pd.DataFrame(columns=TRIAL_COLUMNS), {}
    rows, studies = [], {}
    summaries = optuna.get_all_study_summaries(store, include_best_trial=False)
    for name in sorted(s.study_name for s in summaries if s.user_attrs.get(SEARCH) == study):
        loaded = optuna.load_study(study_name=name, storage=store)
        attrs = dict(loaded.user_attrs)
        studies[name] = {**attrs, "direction": loaded.direction.name.lower()}
        fixed = attrs.get("fixed", {})
        for trial in loaded.get_trials(deepcopy=False):
            steps = sorted(trial.intermediate_values)
            params = dict(trial.params)
            rows.append({
                "optuna_study": name,
                "batch": params.get(roles.BATCH, fixed.get(roles.BATCH)),
                "number": trial.number,
                "state": trial.state.name,
                "outcome": trial.user_attrs.get("outcome", trial.state.name.lower()),
                "value": trial.value,
                "last_value": trial.intermediate_values[steps[-1]] if steps else trial.value,
                "pruned_epoch": steps[-1] if trial.state.name == "PRUNED" and steps else None,
                "test/top1": trial.user_attrs.get("test/top1"),
                "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
                **{key: fixed.get(key) for key in (roles.DEVICE_BATCH, roles.LR, roles.STEPS)},
                **params,
            })
    return pd.DataFrame(rows, columns=list(dict.fromkeys(TRIAL_COLUMNS + [k for r in rows for k in r]))), studies
