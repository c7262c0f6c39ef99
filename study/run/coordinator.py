"""The coordinator of ``nfstudy run``: fills a study's queue, runs workers, waits.

README "Many workers and machines". MLflow is the source of truth for what is done; the queue
(:mod:`study.run.queue`, Optuna storage) only says what is to do and who does it.

1. :func:`prepare` creates the MLflow experiment and parent run *before* any worker starts
   (workers never create them), copies in results other studies already made of the same
   configs, recovers runs whose worker died, closes their MLflow runs, and enqueues every
   config not FINISHED in MLflow: failed and interrupted configs are queued again. It is
   idempotent, and safe with several coordinators at once (:meth:`RunQueue.enqueue`).
2. :func:`execute` trains the queue with ``workers`` local workers: in this process for
   one, else ``python -m study worker`` subprocesses, each with its own GPUs
   (:mod:`study.run.placement`), or an equal share of the CPU cores each. A worker that dies (``kill -9``,
   out of memory) has its run recovered and is started again. Workers on other machines
   (``nfstudy worker``) may pull from the same queue meanwhile.
3. Ctrl-C stops every local worker cleanly: each closes its run KILLED and puts its config
   back in the queue; the next ``nfstudy run`` resumes.
"""

from __future__ import annotations

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
from study.record.tracking import Tracking
from study.run.placement import check_placement, visible_gpus, worker_env
from study.run.queue import Job, RunQueue
from study.run.run_cache import Stale, Survey, supersede, survey
from study.run.worker import RunEvent, kill_orphan_runs, recover_lost, run_worker

#: Seconds between the coordinator's looks at the queue and its workers.
POLL_S = 0.5
#: Seconds a worker gets to close its run after Ctrl-C before it is killed.
STOP_TIMEOUT_S = 60.0
#: Queue errors of trials whose config goes back to the queue (not reported as failures).
_NOT_A_FAILURE = ("cancelled", "worker lost", "interrupted")


@dataclass
class Summary:
    """The outcome of one ``nfstudy run`` over the study's plan."""

    total: int
    done_before: int = 0
    completed: int = 0
    diverged: int = 0
    failed: list[str] = field(default_factory=list)
    """``run name: reason`` of the configs that are still not FINISHED."""
    restarts: int = 0


@dataclass
class Prepared:
    """What :func:`prepare` found and did."""

    experiment_id: str
    parent_id: str
    done_before: set[str]
    adopted: int = 0
    recovered: int = 0
    enqueued: int = 0
    cancelled: int = 0
    survey: Survey | None = None
    """What the plan found recorded (done, stale, copies): the line ``--dry-run`` predicts."""


def jobs_for(spec: StudySpec, runs: list[PlannedRun], experiment_id: str, parent_id: str) -> list[Job]:
    """The queue entries of ``runs`` (everything a worker needs, without the study file)."""
    return [Job(config_hash=run.config_hash, config=run.config.flat(), study=spec.name, arm=run.arm,
                run_name=run.name, point=run.point, experiment_id=experiment_id, parent_id=parent_id)
            for run in runs]


def prepare(spec: StudySpec, runs: list[PlannedRun], tracking: Tracking, queue: RunQueue,
            stale: Stale = Stale.STOP) -> Prepared:
    """Make MLflow and the queue ready for workers: experiment and parent, adopted results,
    recovered lost runs, and one queue entry per config not FINISHED.

    Returns:
        A :class:`Prepared` with the ids and counts.

    Raises:
        TrackingError: the tracking store cannot be used.
        StaleRunsError: runs trained by other code were found and ``stale`` is ``STOP``.
    """
    experiment_id, parent_id = tracking.ensure_study(spec.name, spec.description)
    found = survey(tracking, spec.name, runs, stale)  # what --dry-run predicted
    found.check(spec.name)
    supersede(tracking, found)
    done = found.kept
    wanted = {run.config_hash: (run.arm, run.name) for run in runs if run.config_hash not in done}
    code = None if stale == Stale.REUSE else code_fingerprint()
    adopted = tracking.adopt_finished(experiment_id, parent_id, spec.name, wanted, code) if wanted else 0
    if adopted:
        done = set(tracking.finished_hashes(experiment_id))
    recovered = recover_lost(queue, tracking)
    kill_orphan_runs(tracking, queue, experiment_id, "left RUNNING by a worker that is gone")
    todo = [run for run in runs if run.config_hash not in done]
    enqueued, cancelled = queue.enqueue(jobs_for(spec, todo, experiment_id, parent_id), cancel_others=True)
    return Prepared(experiment_id, parent_id, done & {run.config_hash for run in runs},
                    adopted, recovered, enqueued, cancelled, found)


def worker_process(index: int, workers: int, gpus: list[str], queue: RunQueue, tracking: Tracking,
                   nproc_per_node: int = 1) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of local worker ``index``. The storage URL and tracking
    URI travel in the environment (``$NFSTUDY_STORAGE``, ``$MLFLOW_TRACKING_URI``): a
    password in them would be readable by every user in ``ps``'s command lines, while a
    process's environment is readable by its owner only."""
    command = [sys.executable, "-m", "study", "worker", "--study", queue.study,
               "--parent-pid", str(os.getpid()), "--nproc-per-node", str(nproc_per_node)]
    env = {**worker_env(index, workers, gpus, nproc_per_node),
           "NFSTUDY_STORAGE": queue.url, "MLFLOW_TRACKING_URI": tracking.uri}
    return command, env


def _spawn(index: int, workers: int, gpus: list[str], queue: RunQueue, tracking: Tracking, log: Path,
           nproc_per_node: int = 1) -> subprocess.Popen:
    command, env = worker_process(index, workers, gpus, queue, tracking, nproc_per_node)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # Same process group: a terminal's Ctrl-C reaches the workers too.
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env)


def _deliberate(returncode: int) -> bool:
    """A worker that drained the queue or was stopped on purpose (not to be restarted)."""
    return returncode in (0, 130, -signal.SIGINT, -signal.SIGTERM)


class _Watcher:
    """Turns the queue's trials into progress and per-run events (for subprocess workers)."""

    def __init__(self, queue: RunQueue, plan: set[str], done_before: set[str]):
        self.queue, self.plan, self.done = queue, plan, set(done_before)
        self._reported: set[int] = set()

    def poll(self, on_event: RunEvent | None) -> int:
        for trial in self.queue.trials([TrialState.COMPLETE, TrialState.FAIL]):
            if trial._trial_id in self._reported or trial.user_attrs.get("config_hash") not in self.plan:
                continue
            self._reported.add(trial._trial_id)
            job = Job.from_trial(trial)
            if trial.state == TrialState.COMPLETE:
                self.done.add(job.config_hash)
                if on_event and "outcome" in trial.user_attrs:
                    on_event("finished", job, {"outcome": trial.user_attrs["outcome"], "val/top1": trial.value})
            elif on_event and not trial.user_attrs.get("error", "").startswith(_NOT_A_FAILURE):
                on_event("failed", job, {"error": trial.user_attrs.get("error", "")})
        return len(self.done & self.plan)


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

    Returns:
        A :class:`Summary`, read back from MLflow at the end.

    Raises:
        KeyboardInterrupt: after Ctrl-C, once every local worker has closed its run.
        TrackingError: the tracking store or the queue storage cannot be used.
        StaleRunsError: stale runs were found and ``stale`` is ``STOP``.
    """
    if workers < 1:
        from study.errors import ConfigError

        raise ConfigError(f"--workers {workers}: must be at least 1")
    check_placement(workers, nproc_per_node, {run.config.train.device for run in runs}, visible_gpus())
    queue = RunQueue(spec.name, storage, create=True)
    prepared = prepare(spec, runs, tracking, queue, stale)
    if on_prepared:
        on_prepared(prepared)
    plan = {run.config_hash for run in runs}
    watcher = _Watcher(queue, plan, prepared.done_before)
    restarts = 0
    if on_progress:
        on_progress(len(prepared.done_before), len(plan))
    if prepared.done_before != plan:
        if workers == 1:
            def forward(event: str, job: Job, result: dict[str, Any] | None) -> None:
                if event in ("finished", "skipped") and job.config_hash in plan:
                    watcher.done.add(job.config_hash)
                if on_progress:
                    on_progress(len(watcher.done & plan), len(plan))
                if on_event:
                    on_event(event, job, result)

            run_worker(queue, tracking, on_event=forward, on_epoch=on_epoch, nproc_per_node=nproc_per_node)
        else:
            restarts = _run_local_workers(queue, tracking, workers, watcher, on_progress, on_event, nproc_per_node)
    return _summarise(tracking, prepared, runs, queue, restarts)


def _run_local_workers(queue: RunQueue, tracking: Tracking, workers: int, watcher: _Watcher,
                       on_progress, on_event, nproc_per_node: int = 1) -> int:
    gpus = visible_gpus()
    logs = paths.confined("logs", queue.study)
    procs = {i: _spawn(i, workers, gpus, queue, tracking, logs / f"worker-{i}.log", nproc_per_node) for i in range(workers)}
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
                if restarts < max_restarts and queue.trials([TrialState.WAITING, TrialState.RUNNING]):
                    restarts += 1
                    procs[index] = _spawn(index, workers, gpus, queue, tracking, logs / f"worker-{index}.log", nproc_per_node)
            recover_lost(queue, tracking)
            finished = watcher.poll(on_event)
            if on_progress and finished != shown:
                shown = finished
                on_progress(finished, len(watcher.plan))
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        _stop(procs.values())
        recover_lost(queue, tracking)
        raise
    watcher.poll(on_event)
    return restarts


def _stop(procs) -> None:
    """SIGINT to each worker (a terminal's Ctrl-C may have reached them already: a worker
    ignores the second), wait for them to close their runs, then kill the stragglers."""
    procs = [p for p in procs if p.poll() is None]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _summarise(tracking: Tracking, prepared: Prepared, runs: list[PlannedRun], queue: RunQueue,
               restarts: int) -> Summary:
    plan = {run.config_hash: run for run in runs}
    summary = Summary(total=len(plan), done_before=len(prepared.done_before), restarts=restarts)
    outcome = tracking.finished_outcomes(prepared.experiment_id)  # MLflow, or the spool while offline
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
