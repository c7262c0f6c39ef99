"""The coordinator of ``nfstudy run``: fills a study's queue with its plan, runs local
workers, waits. MLflow is the source of truth for what is done; the queue
(:mod:`study.run.queue`) says what is to do and who does it.

:func:`prepare` (under the queue's lock, so coordinators started together queue each
config once) creates the MLflow experiment and parent before any worker starts, copies in
results other studies made of the same configs, recovers runs whose worker died and
enqueues every config not FINISHED. :func:`execute` then trains the plan with local
workers (:func:`run_local_workers`, each with its own GPUs: :mod:`study.run.placement`); workers on other machines may join meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from study import paths
from study.config.code_fingerprint import code_fingerprint
from study.config.expand import PlannedRun
from study.config.study_file import StudySpec
from study.errors import ConfigError
from study.record.tags import ENDED_ATTR
from study.record.tracking import Tracking
from study.run.placement import check_placement, visible_gpus, worker_env
from study.run.queue import EndKind, Job, RunQueue, plan_id
from study.run.run_cache import Stale, Survey, supersede, survey
from study.run.worker import RunEvent, kill_orphan_runs, recover_lost, run_worker

#: Seconds between the coordinator's looks at the queue and its workers.
POLL_S = 1.0
#: Seconds a worker gets to close its run after Ctrl-C before it is killed.
STOP_TIMEOUT_S = 60.0


@dataclass
class Summary:
    """The outcome of one ``nfstudy run`` over the study's plan."""

    total: int
    done_before: int = 0
    completed: int = 0
    diverged: int = 0
    failed: list[str] = field(default_factory=list)
    """``run name: reason`` of the configs that are still not FINISHED."""
    interrupted: bool = False
    """Stopped by Ctrl-C or SIGTERM (every local run was closed and put back in the queue)."""


@dataclass
class Prepared:
    """What :func:`prepare` found and did."""

    experiment_id: str
    parent_id: str
    plan: str
    done_before: set[str]
    adopted: int = 0
    recovered: int = 0
    survey: Survey | None = None
    """What the plan found recorded (done, stale, copies): the line ``--dry-run`` predicts."""


def jobs_for(spec: StudySpec, runs: list[PlannedRun], experiment_id: str, parent_id: str) -> list[Job]:
    """The queue entries of ``runs`` (everything a worker needs, without the study file)."""
    return [Job(config_hash=run.config_hash, config=run.config.flat(), study=spec.name, arm=run.arm,
                run_name=run.name, point=run.point, experiment_id=experiment_id, parent_id=parent_id)
            for run in runs]


def prepare(spec: StudySpec, runs: list[PlannedRun], tracking: Tracking, queue: RunQueue,
            stale: Stale = Stale.STOP, force: bool = False) -> Prepared:
    """Make MLflow and the queue ready for workers: experiment and parent, adopted results,
    recovered lost runs, and one queue entry per config not FINISHED.

    Returns:
        A :class:`Prepared` with the ids and counts.

    Raises:
        TrackingError: the tracking store or the queue cannot be used.
        StaleRunsError: runs trained by other code were found and ``stale`` is ``STOP``.
    """
    plan = plan_id(run.config_hash for run in runs)
    with queue.lock():  # one coordinator at a time copies results and fills the queue
        experiment_id, parent_id = tracking.ensure_study(spec.name, spec.description)
        found = survey(tracking, spec.name, runs, stale)  # what --dry-run predicted
        found = found.forced_again() if force else found  # --force: train them all again
        found.check(spec.name)
        supersede(tracking, found, experiment_id)
        done = set(found.kept)
        if tracking.spool_only:  # no store to read: what the queue completed is done
            done |= {t.user_attrs.get("config_hash") for t in queue.trials([TrialState.COMPLETE])}
        wanted = {run.config_hash: (run.arm, run.name) for run in runs
                  if run.config_hash not in done and not force}  # nothing is copied in when forced
        code = None if stale == Stale.REUSE else code_fingerprint()
        adopted = tracking.retry(lambda: tracking.adopt_finished(experiment_id, parent_id, spec.name, dict(wanted),
                                                                 code)) if wanted else 0
        if adopted:
            done = set(tracking.retry(lambda: tracking.finished_hashes(experiment_id)))
    recovered = recover_lost(queue, tracking)
    kill_orphan_runs(tracking, queue, experiment_id, "left RUNNING by a worker that is gone")
    todo = [run for run in runs if run.config_hash not in done]
    queue.enqueue(jobs_for(spec, todo, experiment_id, parent_id), plan=plan)
    return Prepared(experiment_id, parent_id, plan, done & {run.config_hash for run in runs}, adopted, recovered,
                    found)


def worker_process(index: int, workers: int, gpus: list[str], queue: RunQueue, tracking: Tracking,
                   nproc_per_node: int = 1, plan: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of local worker ``index``. The storage URL and tracking
    URI travel in the environment (``$NFSTUDY_STORAGE``, ``$MLFLOW_TRACKING_URI``): a
    password in them would be readable by every user in ``ps``'s command lines, while a
    process's environment is readable by its owner only."""
    command = [sys.executable, "-m", "study", "worker", "--study", queue.study,
               "--parent-pid", str(os.getpid()), "--nproc-per-node", str(nproc_per_node),
               *(["--plan", plan] if plan else [])]
    env = {**worker_env(index, workers, gpus, nproc_per_node),
           "NFSTUDY_STORAGE": queue.url, "MLFLOW_TRACKING_URI": tracking.uri}
    return command, env


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # Same process group: a terminal's Ctrl-C reaches the workers too.
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)


def _deliberate(returncode: int) -> bool:
    """A worker that drained the queue or was stopped on purpose (not to be restarted)."""
    return returncode in (0, 130, -signal.SIGINT, -signal.SIGTERM)


class _Watcher:
    """Turns the queue's finished trials into progress and per-run events. Polls only the
    ids of finished trials and reads each new one once, so a poll costs little however
    many trials the queue holds."""

    def __init__(self, queue: RunQueue, plan: set[str], done_before: set[str]):
        self.queue, self.plan, self.done = queue, plan, set(done_before)
        self._seen: set[int] = set()

    def poll(self, on_event: RunEvent | None) -> int:
        for trial_id in sorted(self.queue.finished_ids() - self._seen):
            self._seen.add(trial_id)
            trial = self.queue.trial(trial_id)
            if trial.user_attrs.get("config_hash") not in self.plan:
                continue
            job = Job.from_trial(trial)
            if trial.state == TrialState.COMPLETE:
                self.done.add(job.config_hash)
                if on_event and "outcome" in trial.user_attrs:
                    on_event("finished", job, {"outcome": trial.user_attrs["outcome"], "val/top1": trial.value})
            elif on_event and trial.user_attrs.get(ENDED_ATTR) == EndKind.FAILED.value:
                on_event("failed", job, {"error": trial.user_attrs.get("error", "")})
        return len(self.done & self.plan)


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def execute(
    spec: StudySpec,
    runs: list[PlannedRun],
    tracking: Tracking,
    *,
    workers: int = 1,
    storage: str | None = None,
    on_prepared: Callable[[Prepared], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_event: RunEvent | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    nproc_per_node: int = 1,
    stale: Stale = Stale.STOP,
    force: bool = False,
) -> Summary:
    """Train every run of ``runs`` not yet FINISHED, through the study's queue.

    Args:
        spec: the study.
        runs: its planned runs (:func:`study.config.plan`).
        tracking: the MLflow store.
        workers: local workers; 1 trains in this process.
        storage: the queue's storage (:func:`study.run.queue.storage_url`).
        on_prepared: called once the queue is filled, before any training.
        on_progress: ``(finished, total)`` over the whole plan, as it changes.
        on_event: per-run events (see :func:`study.run.worker.run_worker`).
        on_epoch: per-epoch metrics (in-process worker only).
        nproc_per_node: processes (GPUs) per run: each run becomes a torchrun DDP job.
        stale: what to do with FINISHED runs trained by other code (:mod:`study.run.run_cache`).
        force: train every run again, even those FINISHED (``--force``; the old runs superseded).

    Returns:
        A :class:`Summary`, read back from MLflow at the end (``interrupted`` after Ctrl-C
        or SIGTERM, once every local worker has closed its run).

    Raises:
        TrackingError: the tracking store or the queue storage cannot be used.
        StaleRunsError: stale runs were found and ``stale`` is ``STOP``.
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    check_placement(workers, nproc_per_node, {run.config.train.device for run in runs}, visible_gpus())
    queue = RunQueue(spec.name, storage, create=True)
    prepared = prepare(spec, runs, tracking, queue, stale, force)
    if on_prepared:
        on_prepared(prepared)
    plan = {run.config_hash for run in runs}
    watcher = _Watcher(queue, plan, prepared.done_before)
    if on_progress:
        on_progress(len(prepared.done_before), len(plan))
    interrupted = False
    if prepared.done_before != plan:
        if workers == 1:
            def forward(event: str, job: Job, result: dict[str, Any] | None) -> None:
                if event in ("finished", "skipped") and job.config_hash in plan:
                    watcher.done.add(job.config_hash)
                if on_progress:
                    on_progress(len(watcher.done & plan), len(plan))
                if on_event:
                    on_event(event, job, result)

            interrupted = run_worker(queue, tracking, hashes=plan, on_event=forward, on_epoch=on_epoch,
                                     nproc_per_node=nproc_per_node).interrupted
        else:
            interrupted = run_local_workers(queue, tracking, workers, nproc_per_node, plan=prepared.plan,
                                            watcher=watcher, on_progress=on_progress, on_event=on_event)
    summary = _summarise(tracking, prepared, runs, queue)
    summary.interrupted = interrupted
    return summary


def run_local_workers(queue: RunQueue, tracking: Tracking, workers: int, nproc_per_node: int = 1, *,
                      plan: str | None = None, watcher: _Watcher | None = None,
                      on_progress: Callable[[int, int], None] | None = None,
                      on_event: RunEvent | None = None) -> bool:
    """Run ``workers`` ``nfstudy worker`` processes on this machine until the queue (or the
    ``plan``) is done; restart those that die; recover their runs. SIGTERM stops like Ctrl-C.

    Returns:
        Whether it was interrupted (each worker closed its run and put its config back).
    """
    gpus, logs = visible_gpus(), paths.confined("logs", queue.study)
    hashes = queue.plan_hashes(plan) if plan else None

    def spawn(index: int) -> subprocess.Popen:
        command, env = worker_process(index, workers, gpus, queue, tracking, nproc_per_node, plan)
        return _spawn(command, env, logs / f"worker-{index}.log")

    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    procs = {i: spawn(i) for i in range(workers)}
    restarts, max_restarts, shown = 0, 2 * workers + 2, -1
    try:
        while procs:
            for index, proc in list(procs.items()):
                returncode = proc.poll()
                if returncode is None:
                    continue
                del procs[index]
                if _deliberate(returncode):
                    continue
                recover_lost(queue, tracking)
                active = [t for t in queue.trials([TrialState.WAITING, TrialState.RUNNING])
                          if hashes is None or t.user_attrs.get("config_hash") in hashes]
                if restarts < max_restarts and active:
                    restarts += 1
                    procs[index] = spawn(index)
            recover_lost(queue, tracking)
            if watcher is not None:
                finished = watcher.poll(on_event)
                if on_progress and finished != shown:
                    shown = finished
                    on_progress(finished, len(watcher.plan))
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        _stop(procs.values())
        with contextlib.suppress(Exception):
            recover_lost(queue, tracking)
        return True
    finally:
        signal.signal(signal.SIGTERM, previous)
    if watcher is not None:
        watcher.poll(on_event)
    return False


def _stop(procs) -> None:
    """SIGINT to each worker (a terminal's Ctrl-C may have reached them already: a worker
    ignores the second), wait for them to close their runs, then kill the stragglers."""
    procs = [p for p in procs if p.poll() is None]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _summarise(tracking: Tracking, prepared: Prepared, runs: list[PlannedRun], queue: RunQueue) -> Summary:
    plan = {run.config_hash: run for run in runs}
    summary = Summary(total=len(plan), done_before=len(prepared.done_before))
    outcome = tracking.finished_outcomes(prepared.experiment_id)  # MLflow, or the spool while offline
    # A worker whose tracking server was away holds its results in its own spool until the
    # server answers again; the queue heard of them already.
    for trial in queue.trials([TrialState.COMPLETE]):
        if "outcome" in trial.user_attrs and trial.user_attrs.get("experiment_id") == prepared.experiment_id:
            outcome.setdefault(trial.user_attrs.get("config_hash"), trial.user_attrs["outcome"])
    for config_hash in plan.keys() - prepared.done_before:
        if config_hash not in outcome:
            continue
        if outcome[config_hash] == "diverged":
            summary.diverged += 1
        else:
            summary.completed += 1
    errors = {t.user_attrs.get("config_hash"): t.user_attrs.get("error", "not run")
              for t in queue.trials([TrialState.FAIL])}
    for config_hash, run in plan.items():
        if config_hash not in outcome:
            reason = errors.get(config_hash, "still queued (no worker took it)")
            summary.failed.append(f"{run.name}: {reason.strip().splitlines()[-1] if reason.strip() else reason}")
    return summary
