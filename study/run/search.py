"""Optuna search over a study's ``search:`` space (``nfstudy search``), with pruning,
resumable storage and one MLflow child run per trial.

A trial suggests values for the searched keys, builds its RunConfig from the study's
base preset → ``fixed`` → suggested values → ``--set`` (a ``--set`` key is pinned and
leaves the space), trains the study's first seed, and is scored on the search metric.

Decisions (README, "Searching λ with Optuna"):

- **Optuna study name** ``nfstudy-search:<study>:<hash>``: the hash covers the searched
  space, the metric, the direction and the resolved fixed config, so a changed space or
  ``--set data.batch_size=4096`` opens a new study and never mixes with an old one, and
  running the same command again adds trials to the same study. The prefix keeps searches
  apart from other Optuna studies in the same storage (the run queue).
- **Storage**: :func:`study.paths.optuna_storage` (SQLite under ``$NFSTUDY_HOME``), or any
  Optuna RDB URL (``postgresql://…`` for many machines), or a journal file path.
- **Pruned trial**: Optuna ``PRUNED``; its MLflow child run is ``KILLED`` (stopped on
  purpose before its budget: not a result, ``analysis.runs.results`` never counts it)
  with tag ``nfstudy.outcome=pruned`` and ``nfstudy.pruned_at_epoch``.
- **Diverged trial** (the loss became NaN/Inf): a result, as in ``nfstudy run``. The MLflow
  child is FINISHED with outcome ``diverged``, the trial gets user attr
  ``outcome=diverged``, and the sampler is told the metric the trainer records for a
  diverged run: chance accuracy (0.1 on digits) for ``top1``. That is the worst value a
  trained model scores, so TPE puts the region among its bad trials and samples less
  there. Failing the trial instead would make TPE ignore it and keep sampling the region
  that diverges. A metric with no finite value after divergence (a loss) fails the trial.
- **MLflow bridge** (ours; optuna-integration's callback leaves no parent run): experiment
  ``search:<study>``, one parent run per Optuna study (run name = the Optuna study name,
  tag ``nfstudy.optuna_study``; params: the fixed config and the space), one child run per
  trial (tags ``optuna.trial_number``, ``nfstudy.optuna_study``; the run id is the trial
  user attr ``mlflow_run_id``). After each invocation the parent gets the best value and
  parameters as metrics ``best/*`` (step = number of trials) and tag ``nfstudy.best_params``.

- **Lost trials**: every trial records its owner (host, boot, pid namespace, pid) as a
  system attr. A search process killed with SIGKILL (or out of memory) leaves its trial
  RUNNING; the next ``nfstudy search`` of the same study on the same host finds the owner
  gone, marks the trial FAIL (user attr ``outcome=lost``) and its MLflow child KILLED with
  an ``nfstudy.error`` tag, so reports and the grid count see it as what it is.

Limits: trials run one after another in this process; several ``nfstudy search``
processes on one RDB storage share the study safely (Optuna's storage does the locking).
A trial whose process died on *another* machine stays RUNNING until a search on that
machine runs again (searches keep no heartbeat; the run queue's workers do).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from study import paths
from study.config.expand import fixed_overrides
from study.config.run_config import HASH_EXCLUDED_KEYS, make_config
from study.config.search_space import EPOCH_METRICS, Distribution, SearchSpec
from study.config.study_file import StudySpec
from study.errors import ConfigError
from study.record.tags import (
    BEST_PARAMS,
    BEST_TRIAL,
    LOST,
    N_TRIALS,
    OPTUNA_STUDY,
    OUTCOME,
    OWNER_ATTR,
    PRUNED,
    PRUNED_AT_EPOCH,
    RUN_NAME,
    SEARCH,
    TRIAL_NUMBER,
)
from study.record.tracking import ChildRun, Tracking
from study.run.queue import owner_gone, owner_record

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
    flat = make_config(fixed, where=f"{spec.name}: search fixed config").flat()
    fixed_config = {k: v for k, v in flat.items() if k not in space}
    direction = search.direction or default_direction(metric)
    identity = {
        "space": _space_dict(space),
        "metric": metric, "direction": direction,
        "fixed": {k: v for k, v in fixed_config.items() if k not in HASH_EXCLUDED_KEYS},
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
    from study.run.queue import open_storage as _open

    # The queue's opener: journal files with a kill-safe lock, RDB schema creation that
    # survives another process creating the same tables, credentials redacted in errors.
    return _open(paths.optuna_storage(url), create=True)


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


def _run_trial(plan, study, tracking, experiment_id, parent_id, train, on_epoch) -> TrialRecord:
    """Ask, train, tell one trial; record it in MLflow. Failures are recorded, then re-raised."""
    start = time.perf_counter()
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, owner_record())
    values = suggest(trial, plan.space)
    storage_s = time.perf_counter() - start
    config = make_config({**plan.fixed, **values}, where=f"{plan.spec.name} trial {trial.number}")
    mark = time.perf_counter()
    child = tracking.start_child(experiment_id, parent_id, plan.spec.name, "", f"trial-{trial.number}",
                                 config.config_hash(), config.flat())
    tracking.client.set_tag(child.run_id, TRIAL_NUMBER, str(trial.number))
    tracking.client.set_tag(child.run_id, OPTUNA_STUDY, plan.study_name)
    tracking_s = time.perf_counter() - mark
    mark = time.perf_counter()
    trial.set_user_attr("mlflow_run_id", child.run_id)
    trial.set_user_attr("config_hash", config.config_hash())
    storage_s += time.perf_counter() - mark
    reporting = {"s": 0.0, "epoch": -1}

    def report(epoch: int, metrics: dict[str, float]) -> None:
        if on_epoch:
            on_epoch(epoch, metrics)
        if plan.metric not in metrics:
            return
        tick = time.perf_counter()
        trial.report(metrics[plan.metric], epoch)
        prune = trial.should_prune()
        reporting["s"] += time.perf_counter() - tick
        reporting["epoch"] = epoch
        if prune:
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    record = TrialRecord(trial.number, "", None, "", values, child.run_id)
    mark = time.perf_counter()
    try:
        outcome = train(config, tracker=child, on_epoch=report)
    except optuna.TrialPruned:
        record.train_s = time.perf_counter() - mark - reporting["s"]
        mark = time.perf_counter()
        tracking.client.set_tag(child.run_id, OUTCOME, PRUNED)
        tracking.client.set_tag(child.run_id, PRUNED_AT_EPOCH, str(reporting["epoch"]))
        child.end("KILLED")
        tracking_s += time.perf_counter() - mark
        mark = time.perf_counter()
        trial.set_user_attr("outcome", "pruned")
        frozen = study.tell(trial, state=TrialState.PRUNED)
        record.state, record.value, record.outcome = "PRUNED", frozen.value, "pruned"
    except KeyboardInterrupt:
        child.end("KILLED", "interrupted (Ctrl-C)")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as err:
        child.end("FAILED", "".join(traceback.format_exception_only(err)).strip())
        trial.set_user_attr("outcome", "failed")
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        record.train_s = time.perf_counter() - mark - reporting["s"]
        mark = time.perf_counter()
        child.finish(outcome)
        tracking_s += time.perf_counter() - mark
        mark = time.perf_counter()
        value = outcome.get(plan.metric)
        record.outcome = str(outcome["outcome"])
        trial.set_user_attr("outcome", record.outcome)
        trial.set_user_attr("test/top1", outcome.get("test/top1"))
        if isinstance(value, float) and math.isfinite(value):
            study.tell(trial, value)
            record.state, record.value = "COMPLETE", value
        else:  # a diverged run with no finite metric (a loss): tell the sampler nothing
            study.tell(trial, state=TrialState.FAIL)
            record.state = "FAIL"
    record.storage_s = storage_s + reporting["s"] + (time.perf_counter() - mark)
    record.tracking_s = tracking_s
    record.wall_s = time.perf_counter() - start
    return record


def recover_lost_trials(study: optuna.Study, tracking: Tracking) -> int:
    """Marks FAIL the RUNNING trials whose owner process on this host is gone, and closes
    their MLflow child runs KILLED. Returns how many it recovered."""
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER_ATTR)
        if not owner_gone(owner):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "outcome", LOST)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # another search recovered it first
            continue
        recovered += 1
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and tracking.client.get_run(run_id).info.status == "RUNNING":
            ChildRun(tracking.client, run_id).end(
                "KILLED", f"search process lost (pid {owner['pid']} on {owner.get('name')})")
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
    tracking.client.log_metric(parent_id, f"best/{plan.metric}", best.value, step=step)
    for key, value in best.params.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            tracking.client.log_metric(parent_id, f"best/{key}", float(value), step=step)
    tracking.client.set_tag(parent_id, BEST_PARAMS, json.dumps(best.params))
    tracking.client.set_tag(parent_id, BEST_TRIAL, str(best.number))
    tracking.client.set_tag(parent_id, N_TRIALS, str(step))
