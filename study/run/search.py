"""``nfstudy search``: an Optuna search over a study's ``search:`` space, with pruning,
resumable storage and one MLflow child run per trial; the README's "Searching λ with
Optuna" says what a user sees.

A trial's config is the study's base preset → ``fixed`` → suggested values → ``--set``; it
trains the study's first seed. The Optuna study is ``nfstudy-search:<study>:<hash of the
space, metric, direction and resolved fixed config>``, so the same command adds trials to
one study and a changed space starts another. A diverged trial tells the sampler the value
the trainer records (chance accuracy for ``top1``), so TPE learns the region is bad. Each
trial is created with its owner and beats like a queue trial (:mod:`study.run.liveness`),
so a trial whose search process died is marked FAIL (``outcome=lost``), its MLflow run
KILLED, by the next search of that study on any machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import optuna
from mlflow.entities import Metric, RunTag
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from study import paths
from study.config.expand import fixed_overrides
from study.config.run_config import make_config
from study.config.search_space import EPOCH_METRICS, Distribution, SearchSpec
from study.config.study_file import StudySpec
from study.errors import ConfigError
from study.record import optuna_storage
from study.record.system_metrics import system_metrics
from study.record.tags import (
    BEST_PARAMS,
    BEST_TRIAL,
    HEARTBEAT_ATTR,
    LOST,
    N_TRIALS,
    OPTUNA_STUDY,
    OWNER_ATTR,
    PRUNED,
    PRUNED_AT_EPOCH,
    RUN_NAME,
    SEARCH,
    TRIAL_NUMBER,
)
from study.record.tracking import ChildRun, Tracking
from study.run import liveness
from study.run.lifecycle import Heartbeat, run_child

#: Prefix of every Optuna study ``nfstudy search`` creates (other users of the storage
#: pick other prefixes).
STUDY_PREFIX = "nfstudy-search:"
_MAXIMIZED = ("top1", "top5", "acc")


@dataclass(frozen=True)
class SearchPlan:
    """A validated search: the space, the fixed overrides and the Optuna study name."""

    spec: StudySpec
    search: SearchSpec
    space: dict[str, Distribution | list[Any]]
    fixed: dict[str, Any]
    """Every override of a trial except the searched keys (base, fixed, seed, ``--set``)."""
    fixed_config: dict[str, Any]
    """The resolved fixed config, flattened, without the searched keys."""
    metric: str
    direction: str
    study_name: str

    @property
    def experiment(self) -> str:
        """The MLflow experiment of this search's trials."""
        return f"search:{self.spec.name}"


@dataclass
class TrialRecord:
    """What one trial did and where its time went (seconds)."""

    number: int
    state: str
    value: float | None
    outcome: str
    params: dict[str, Any]
    run_id: str
    wall_s: float = 0.0
    train_s: float = 0.0
    """Inside ``train()``, without the pruning callback's storage calls."""
    storage_s: float = 0.0
    """Optuna: ask, user attrs, per-epoch report/should_prune, tell."""
    tracking_s: float = 0.0
    """MLflow: create the child run, log its params, finish it."""

    @property
    def overhead_ms(self) -> float:
        """Wall time of the trial not spent training (storage, tracking, sampling, config)."""
        return 1000 * (self.wall_s - self.train_s)


@dataclass
class SearchResult:
    study_name: str
    storage: str
    existed: int
    """Trials in the study before this invocation."""
    trials: list[TrialRecord] = field(default_factory=list)
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str = ""
    recovered: int = 0
    """Trials left RUNNING by a dead search process on this host, marked FAIL on start."""


def default_direction(metric: str) -> str:
    """``maximize`` for accuracy-like metrics (``top1``, ``top5``, ``acc``), else ``minimize``."""
    return "maximize" if any(word in metric for word in _MAXIMIZED) else "minimize"


def plan_search(spec: StudySpec, preset: str | None = None, overrides: dict[str, Any] | None = None) -> SearchPlan:
    """Validate a study's search and resolve its fixed config and Optuna study name.

    Args:
        spec: a study with a ``search:`` section.
        preset: swaps the study's base preset (``smoke``, ``digits``…).
        overrides: ``--set`` values; a searched key set here is pinned (left out of the space).

    Returns:
        The plan :func:`run_search` runs.

    Raises:
        ConfigError: no ``search:`` section, no key left to search, a pruner watching a
            metric that is only known at the end, or a range whose ends make an invalid
            config (naming the key and value).
    """
    if spec.search is None:
        raise ConfigError(f"study '{spec.name}' has no 'search:' section; add one, e.g. "
                          "search: {agc.clipping: {low: 0.001, high: 1.0, log: true}}")
    search, overrides = spec.search, dict(overrides or {})
    space = {k: v for k, v in search.space.items() if k not in overrides}
    if not space:
        raise ConfigError(f"{spec.name}: --set pins every searched key ({', '.join(search.space)}); nothing to search")
    metric = search.metric or spec.metric
    if search.pruner.name != "none" and metric not in EPOCH_METRICS:
        raise ConfigError(f"{spec.name}: search.pruner '{search.pruner.name}' needs a per-epoch metric "
                          f"({', '.join(EPOCH_METRICS)}), got '{metric}'; or set pruner: none")
    fixed = {**fixed_overrides(spec, preset, overrides), "seed": spec.seeds[0]}
    for key, value in space.items():
        for end in (value.low, value.high) if isinstance(value, Distribution) else value:
            make_config({**fixed, key: end}, where=f"{spec.name}: search {key}={end}")
    config = make_config(fixed, where=f"{spec.name}: search fixed config")
    fixed_config = {k: v for k, v in config.flat().items() if k not in space}
    direction = search.direction or default_direction(metric)
    identity = {
        "space": _space_dict(space),
        "metric": metric, "direction": direction,
        # the same identity as a run's hash: a key added later at its old behaviour keeps the
        # Optuna study's name, so a search started before it resumes instead of starting over
        "fixed": {k: v for k, v in config.identity().items() if k not in space},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]
    return SearchPlan(spec, search, space, {k: v for k, v in fixed.items() if k not in space},
                      fixed_config, metric, direction, f"{STUDY_PREFIX}{spec.name}:{digest}")


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage: an RDB URL (``sqlite:///…``, ``postgresql://…``) or a journal file path.

    Args:
        url: ``None`` = :func:`study.paths.optuna_storage`.

    Raises:
        TrackingError: the storage cannot be opened (one line naming the URL).
        ConfigError: a URL of an unsupported kind.
    """
    return optuna_storage.open_storage(paths.optuna_storage(url), create=True)


def make_sampler(search: SearchSpec, space: dict[str, Distribution | list[Any]], seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``search.sampler`` names, seeded with ``seed``."""
    sampler = search.sampler
    if sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sampler.name == "grid":
        return _AskTellGridSampler(_grid(space), seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=sampler.n_startup_trials, seed=seed)


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose ``after_trial`` does not call ``Study.stop`` (which Optuna only
    allows inside ``optimize``; we ask and tell, and :func:`run_search` stops at the grid's size)."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_pruner(search: SearchSpec) -> optuna.pruners.BasePruner:
    """The pruner ``search.pruner`` names; steps are epochs."""
    pruner = search.pruner
    if pruner.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.n_startup_trials,
                                           n_warmup_steps=pruner.n_warmup_steps)
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=pruner.min_resource,
                                              reduction_factor=pruner.reduction_factor)
    if pruner.name == "threshold":
        return optuna.pruners.ThresholdPruner(lower=pruner.lower, upper=pruner.upper,
                                              n_warmup_steps=pruner.n_warmup_steps)
    return optuna.pruners.NopPruner()


def _grid(space: dict[str, Distribution | list[Any]]) -> dict[str, list[Any]]:
    grid = {}
    for key, value in space.items():
        if isinstance(value, list):
            grid[key] = value
        else:
            count = int(math.floor((value.high - value.low) / value.step + 1e-9)) + 1
            grid[key] = [value.low + i * value.step for i in range(count)]
            grid[key] = [int(v) for v in grid[key]] if value.is_int else [round(v, 12) for v in grid[key]]
    return grid


def suggest(trial: optuna.Trial, space: dict[str, Distribution | list[Any]]) -> dict[str, Any]:
    """Ask ``trial`` for a value of every searched key (Optuna param name = the dotted key)."""
    values = {}
    for key, value in space.items():
        if isinstance(value, list):
            values[key] = trial.suggest_categorical(key, value)
        elif value.is_int:
            values[key] = trial.suggest_int(key, value.low, value.high, step=value.step or 1, log=value.log)
        else:
            values[key] = trial.suggest_float(key, value.low, value.high, step=value.step, log=value.log)
    return values


def _tracked_study(plan: SearchPlan, tracking: Tracking) -> tuple[str, str]:
    """The search's MLflow experiment and this Optuna study's parent run (created once)."""
    experiment_id, parent_id = tracking.ensure_study(
        plan.experiment, plan.spec.description,
        parent={OPTUNA_STUDY: plan.study_name, RUN_NAME: plan.study_name},
    )
    if not tracking.client.get_run(parent_id).data.params:
        ChildRun(tracking.client, parent_id).log_params({
            **plan.fixed_config, "search.space": json.dumps(_space_dict(plan.space)),
            "search.metric": plan.metric, "search.direction": plan.direction,
        })
    return experiment_id, parent_id


def _space_dict(space: dict[str, Distribution | list[Any]]) -> dict[str, Any]:
    return {k: v.model_dump() if isinstance(v, Distribution) else v for k, v in space.items()}


def run_search(
    plan: SearchPlan,
    n_trials: int,
    *,
    storage: str | None = None,
    tracking: Tracking | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> SearchResult:
    """Run ``n_trials`` more trials of a search, each trained and tracked in MLflow.

    Example:
        >>> plan = plan_search(load_study("agc-lambda"), overrides={"data.batch_size": 4096})
        >>> run_search(plan, 20).best_params
        {'agc.clipping': 0.0112...}

    Args:
        plan: from :func:`plan_search`.
        n_trials: trials to add (a grid stops early when every point has a trial).
        storage: Optuna storage URL; ``None`` = :func:`study.paths.optuna_storage`.
        tracking: the MLflow side; ``None`` = :class:`Tracking` at the default URI.
        on_trial: called with each finished trial's record (progress lines).
        on_epoch: called after each epoch of a trial with ``(epoch, metrics)``.

    Returns:
        The study name, trials before and during this invocation, the best so far.

    Raises:
        TrackingError: the Optuna storage or the MLflow store cannot be used.
        Exception: whatever a trial raised (the trial is recorded FAIL/FAILED first).
    """
    from study.train.trainer import train

    storage_url = paths.optuna_storage(storage)
    store = open_storage(storage_url)
    tracking = tracking or Tracking()
    experiment_id, parent_id = _tracked_study(plan, tracking)
    study = optuna.create_study(storage=store, study_name=plan.study_name, direction=plan.direction,
                                pruner=make_pruner(plan.search), load_if_exists=True)
    existed = len(study.trials)
    with warnings.catch_warnings():  # experimental in Optuna: the dashboard labels the objective by it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([plan.metric])
    study.sampler = make_sampler(plan.search, plan.space, plan.search.sampler.seed + existed)
    for key, value in {SEARCH: plan.spec.name, "metric": plan.metric, "fixed": plan.fixed_config,
                       "space": _space_dict(plan.space), "mlflow_experiment": plan.experiment,
                       "mlflow_parent_run_id": parent_id}.items():
        study.set_user_attr(key, value)
    if plan.search.sampler.name == "grid":
        size = math.prod(len(v) for v in _grid(plan.space).values())
        n_trials = min(n_trials, max(size - existed, 0))

    result = SearchResult(plan.study_name, storage_url, existed, parent_run_id=parent_id,
                          recovered=recover_lost_trials(study, tracking))
    for _ in range(n_trials):
        record = _run_trial(plan, study, tracking, experiment_id, parent_id, train, on_epoch)
        result.trials.append(record)
        if on_trial:
            on_trial(record)
    _log_best(study, tracking, parent_id, plan, result)
    return result


@dataclass
class _SearchTrial:
    """The Optuna side of one search trial (:class:`study.run.lifecycle.TrialSide`)."""

    study: optuna.Study
    trial: optuna.Trial
    metric: str
    record: TrialRecord
    pruned_at: int = -1
    report_s: float = 0.0
    """Storage time of the pruner's per-epoch calls (inside training)."""

    def _timed(self, call: Callable[[], Any]) -> Any:
        tick = time.perf_counter()
        try:
            return call()
        finally:
            self.record.storage_s += time.perf_counter() - tick

    def interrupted(self) -> None:
        self._timed(lambda: self.study.tell(self.trial, state=TrialState.FAIL))

    def failed(self, reason: str) -> None:
        self.trial.set_user_attr("outcome", "failed")
        self._timed(lambda: self.study.tell(self.trial, state=TrialState.FAIL))

    def pruned(self) -> dict[str, str]:
        self.trial.set_user_attr("outcome", PRUNED)
        frozen = self._timed(lambda: self.study.tell(self.trial, state=TrialState.PRUNED))
        self.record.state, self.record.value, self.record.outcome = "PRUNED", frozen.value, PRUNED
        return {PRUNED_AT_EPOCH: str(self.pruned_at)}

    def recorded_elsewhere(self) -> bool:
        return False  # every trial is its own run

    def duplicate(self) -> None:
        raise AssertionError("a search trial is never a duplicate")

    def finished(self, result: dict[str, Any]) -> None:
        value = result.get(self.metric)
        self.record.outcome = str(result["outcome"])
        self.trial.set_user_attr("outcome", self.record.outcome)
        self.trial.set_user_attr("test/top1", result.get("test/top1"))
        if isinstance(value, float) and math.isfinite(value):
            self._timed(lambda: self.study.tell(self.trial, value))
            self.record.state, self.record.value = "COMPLETE", value
        else:  # a diverged run with no finite metric (a loss): tell the sampler nothing
            self._timed(lambda: self.study.tell(self.trial, state=TrialState.FAIL))
            self.record.state = "FAIL"


def trial_name(number: int, values: dict[str, Any]) -> str:
    """A trial's MLflow run name: its number and its searched values, e.g.
    ``trial-3/clipping=0.0123`` (the last part of each key, 4 significant digits)."""
    shown = [f"{key.split('.')[-1]}={value:.4g}" if isinstance(value, float) else f"{key.split('.')[-1]}={value}"
             for key, value in values.items()]
    return "/".join([f"trial-{number}", *shown])


def _ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, but the trial is created with its owner and first heartbeat in one
    write, so a search killed at any moment never leaves a RUNNING trial nobody can recover."""
    template = optuna.trial.FrozenTrial(
        number=0, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(), datetime_complete=None,
        params={}, distributions={}, user_attrs={}, intermediate_values={}, trial_id=0,
        system_attrs={OWNER_ATTR: liveness.owner_record(), HEARTBEAT_ATTR: time.time()})
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    study._thread_local.cached_all_trials = None  # as ask() does: the sampler sees every trial
    return optuna.Trial(study, trial_id)


def _run_trial(plan, study, tracking, experiment_id, parent_id, train, on_epoch) -> TrialRecord:
    """Ask, train, tell one trial; record it in MLflow. Failures are recorded, then re-raised."""
    start = time.perf_counter()
    trial = _ask(study)
    with Heartbeat(lambda: liveness.beat(study._storage, trial._trial_id)):
        values = suggest(trial, plan.space)
        storage_s = time.perf_counter() - start
        config = make_config({**plan.fixed, **values}, where=f"{plan.spec.name} trial {trial.number}")
        mark = time.perf_counter()
        child = tracking.start_child(experiment_id, parent_id, plan.spec.name, "", trial_name(trial.number, values),
                                     config.config_hash(), config.flat(),
                                     tags={TRIAL_NUMBER: str(trial.number), OPTUNA_STUDY: plan.study_name})
        tracking_s = time.perf_counter() - mark
        mark = time.perf_counter()
        trial.set_user_attr("mlflow_run_id", child.run_id)
        trial.set_user_attr("config_hash", config.config_hash())
        record = TrialRecord(trial.number, "", None, "", values, child.run_id or "",
                             storage_s=storage_s + time.perf_counter() - mark)
        side = _SearchTrial(study, trial, plan.metric, record)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            if on_epoch:
                on_epoch(epoch, metrics)
            if plan.metric not in metrics:
                return
            tick = time.perf_counter()
            trial.report(metrics[plan.metric], epoch)
            prune = trial.should_prune()
            side.report_s += time.perf_counter() - tick
            side.pruned_at = epoch
            if prune:
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        def trained() -> dict[str, Any]:
            with system_metrics(child.run_id, tracking.uri, config.train.system_metrics):
                return train(config, tracker=child, on_epoch=report)

        ended = run_child(child, trained, side)
    if ended.error is not None:
        raise ended.error
    record.train_s = ended.train_s - side.report_s
    record.storage_s += side.report_s
    record.tracking_s = tracking_s + ended.tracking_s
    record.wall_s = time.perf_counter() - start
    return record


def recover_lost_trials(study: optuna.Study, tracking: Tracking) -> int:
    """Marks FAIL the RUNNING trials whose search process is gone (:mod:`study.run.liveness`:
    its pid on this host, or a stale heartbeat on any host), and closes their MLflow child
    runs KILLED. Returns how many it recovered."""
    recovered = 0
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in liveness.Liveness().lost(study._storage, running):
        owner = trial.system_attrs.get(OWNER_ATTR) or {}
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "outcome", LOST)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # another search recovered it first
            continue
        recovered += 1
        run_id = trial.user_attrs.get("mlflow_run_id")
        with contextlib.suppress(Exception):  # best effort: the tracking server may be away
            if run_id and tracking.client.get_run(run_id).info.status == "RUNNING":
                ChildRun(tracking.client, run_id).end(
                    "KILLED", f"search process lost (pid {owner.get('pid')} on {owner.get('name')})")
    return recovered


def _log_best(study: optuna.Study, tracking: Tracking, parent_id: str, plan: SearchPlan,
              result: SearchResult) -> None:
    """Best value and parameters so far on the parent run (metrics ``best/*``, step = trials)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return
    best = study.best_trial
    result.best_value, result.best_params = best.value, dict(best.params)
    step = len(study.trials)
    numbers = {f"best/{key}": float(value) for key, value in best.params.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    metrics = [Metric(key, value, int(time.time() * 1000), step)
               for key, value in {f"best/{plan.metric}": best.value, **numbers}.items()]
    tags = [RunTag(BEST_PARAMS, json.dumps(best.params)), RunTag(BEST_TRIAL, str(best.number)),
            RunTag(N_TRIALS, str(step))]
    try:
        tracking.client.log_batch(parent_id, metrics=metrics, tags=tags)
    except Exception:
        if tracking.reachable():
            raise
        # The tracking server is away: the trials are in the spool; the next search logs
        # the best again (the report reads it from Optuna).
