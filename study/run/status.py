"""``nfstudy status``: where each config of a study stands, from its queue and MLflow.

One read of the queue's trials and one search of the FINISHED runs, whatever the number of
configs. A config's state is MLflow's when MLflow has it FINISHED (``finished`` or
``diverged``: results are recorded there first), else its newest queue trial's:
``waiting``, ``running`` (with the worker's host, Slurm job and the run's age),
``failed`` (with the reason), or ``not queued`` (in the plan, never enqueued).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass

from optuna.trial import FrozenTrial, TrialState

from study.record.tags import DIVERGED, ENDED_ATTR, OWNER_ATTR
from study.record.tracking import Tracking
from study.run.queue import EndKind, RunQueue

STATES = ("finished", "diverged", "running", "waiting", "failed", "not queued")


@dataclass
class ConfigStatus:
    """One config's state (see the module docstring)."""

    config_hash: str
    run_name: str
    state: str
    attempt: int = 0
    host: str = ""
    job: str = ""
    """The Slurm job of the worker that runs it (``JOBID`` or ``ARRAYID_TASK``)."""
    age_s: float | None = None
    """Seconds since its worker claimed it (running)."""
    reason: str = ""
    """Why it failed, or what its last attempt ended with."""


@dataclass
class StudyStatus:
    study: str
    configs: list[ConfigStatus]

    def counts(self) -> dict[str, int]:
        found = Counter(c.state for c in self.configs)
        return {state: found[state] for state in STATES if found[state] or state != "not queued"}

    def as_json(self) -> dict:
        return {"study": self.study, "total": len(self.configs), "counts": self.counts(),
                "configs": [asdict(c) for c in self.configs]}


def _newest(trials: list[FrozenTrial]) -> dict[str, FrozenTrial]:
    newest: dict[str, FrozenTrial] = {}
    for trial in trials:  # oldest first: the last one seen wins
        config_hash = trial.user_attrs.get("config_hash")
        if config_hash:
            newest[config_hash] = trial
    return newest


def _from_trial(config_hash: str, trial: FrozenTrial, now: float) -> ConfigStatus:
    attrs = trial.user_attrs
    status = ConfigStatus(config_hash, attrs.get("run_name", ""), "waiting", attempt=int(attrs.get("attempt", 1)))
    if trial.state == TrialState.RUNNING:
        owner = trial.system_attrs.get(OWNER_ATTR) or {}
        status.state, status.host, status.job = "running", str(owner.get("name", "")), str(owner.get("job", ""))
        if trial.datetime_start is not None:
            status.age_s = round(now - trial.datetime_start.timestamp(), 1)
    elif trial.state == TrialState.COMPLETE:
        status.state = "diverged" if attrs.get("outcome") == DIVERGED else "finished"
    elif trial.state == TrialState.FAIL:
        status.state = "failed"
        lines = str(attrs.get("error", "")).strip().splitlines()
        status.reason = lines[-1] if lines else str(attrs.get(ENDED_ATTR, EndKind.FAILED.value))
    return status


def study_status(queue: RunQueue, tracking: Tracking | None, plan: dict[str, str] | None = None) -> StudyStatus:
    """The state of every config of the queue (and of ``plan``, ``{config hash: run name}``,
    when given: only those, with ``not queued`` for the ones the queue never had).

    Args:
        queue: the study's queue.
        tracking: the MLflow store, or ``None`` to read the queue only.
        plan: the configs to report (a study file's plan at one scale).
    """
    newest = _newest(queue.trials())
    finished: dict[str, str] = {}
    if tracking is not None:
        for experiment_id in {t.user_attrs.get("experiment_id") for t in newest.values()} - {None}:
            finished.update(tracking.finished_outcomes(experiment_id))
    now = time.time()
    wanted = plan if plan is not None else {h: t.user_attrs.get("run_name", "") for h, t in newest.items()}
    configs = []
    for config_hash, run_name in wanted.items():
        if config_hash in finished:
            state = "diverged" if finished[config_hash] == DIVERGED else "finished"
            configs.append(ConfigStatus(config_hash, run_name, state))
        elif config_hash in newest:
            configs.append(_from_trial(config_hash, newest[config_hash], now))
        else:
            configs.append(ConfigStatus(config_hash, run_name, "not queued"))
    return StudyStatus(queue.study, configs)
