"""A worker: claims configs from a study's queue and trains them until none is left.

The same loop runs in ``nfstudy worker`` (another machine, or a process of ``nfstudy run
--workers N``) and in-process for ``nfstudy run --workers 1``. Each claimed config beats
from the claim on, is skipped when MLflow has it FINISHED already (exactly once), and is
otherwise trained as one child run (:func:`study.run.lifecycle.run_child`). Ctrl-C,
SIGTERM or SIGUSR1 (Slurm's warning before a time limit) closes the run KILLED and puts its
config back in the queue. Every worker also
recovers the runs of dead workers (:func:`recover_lost`), between runs and, while it
trains, from its heartbeat thread.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mlflow.entities import RunStatus
from optuna.trial import TrialState

from study.record import spool
from study.record.tags import DIVERGED, ERROR, OWNER_ATTR, QUEUE_TRIAL, ROLE
from study.record.tracking import Tracking
from study.run.lifecycle import Heartbeat, parent_gone, run_child
from study.run.liveness import LOOK_S
from study.run.queue import MAX_ATTEMPTS, Claim, EndKind, Job, RunQueue

#: Seconds between looks at an empty queue while other workers still run configs; doubled
#: after each empty look up to :data:`~study.run.liveness.LOOK_S`, so idle workers cost the
#: database little and still look for lost runs that often.
POLL_S = 1.0

RunEvent = Callable[[str, Job, "dict[str, Any] | None"], None]


@dataclass
class WorkerSummary:
    """What one worker did, and what the queue cost it per run."""

    completed: int = 0
    diverged: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    recovered: int = 0
    runs: int = 0
    interrupted: bool = False
    """Stopped by Ctrl-C, SIGTERM or the death of its parent (the run was put back)."""
    queue_s: float = 0.0
    """Optuna storage time: recovery scan, pop, attrs, complete."""
    check_s: float = 0.0
    """MLflow exactly-once checks (before training and before recording)."""

    def overhead_ms(self) -> tuple[float, float]:
        """``(queue, checks)`` milliseconds per run."""
        runs = max(self.runs, 1)
        return 1000 * self.queue_s / runs, 1000 * self.check_s / runs


def kill_orphan_runs(tracking: Tracking, queue: RunQueue, experiment_id: str, reason: str) -> int:
    """Mark KILLED the RUNNING child runs of this queue whose trial is no longer RUNNING.

    MLflow is read before the queue: a claim made between the two reads is RUNNING in the
    second, and a run created after the first is not in it, so a live run is never closed.

    Returns:
        How many runs were closed (none spool-only: ``nfstudy sync`` closes a spooled run
        its worker left unfinished as KILLED).
    """
    if tracking.spool_only:
        return 0
    runs = tracking.retry(lambda: tracking.client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{ROLE}` = 'child'",
        max_results=5000))
    running = {queue.tag(t._trial_id) for t in queue.trials([TrialState.RUNNING])}
    closed = 0
    for run in runs:
        owner = run.data.tags.get(QUEUE_TRIAL)
        if queue.owns(owner) and owner not in running:
            tracking.retry(lambda: tracking.client.set_tag(run.info.run_id, ERROR, reason))
            tracking.retry(lambda: tracking.client.set_terminated(run.info.run_id,
                                                                  RunStatus.to_string(RunStatus.KILLED)))
            closed += 1
    return closed


def recover_lost(queue: RunQueue, tracking: Tracking) -> int:
    """Re-queue the configs of RUNNING trials whose worker is gone (up to
    :data:`~study.run.queue.MAX_ATTEMPTS` attempts in all), fail those trials, then mark
    their MLflow runs KILLED (best effort: the next ``nfstudy run`` does it too).

    Returns:
        How many lost trials this call recovered.
    """
    recovered = 0
    for trial in queue.lost():
        job = Job.from_trial(trial)
        owner = trial.system_attrs.get(OWNER_ATTR) or {}
        reason = f"worker lost (pid {owner.get('pid')} on {owner.get('name')})"
        successor = replace(job, attempt=job.attempt + 1) \
            if job.attempt < MAX_ATTEMPTS and not _finished_or_unknown(tracking, job) else None
        if not queue.requeue(trial._trial_id, EndKind.LOST, reason, successor):
            continue  # another observer recovered it first
        recovered += 1
        with contextlib.suppress(Exception):  # the tracking server may be away: the run stays for later
            kill_orphan_runs(tracking, queue, job.experiment_id, reason)
    return recovered


def _finished_or_unknown(tracking: Tracking, job: Job) -> bool:
    """Whether MLflow has ``job`` FINISHED; ``False`` when it cannot tell now (re-queue: the
    worker that takes it checks again before training)."""
    try:
        return tracking.finished_run_id(job.experiment_id, job.config_hash) is not None
    except Exception:  # noqa: BLE001 - unreachable or failing tracking store
        return False


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_worker(
    queue: RunQueue,
    tracking: Tracking,
    *,
    wait: bool = True,
    hashes: set[str] | None = None,
    parent_pid: int | None = None,
    on_event: RunEvent | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    nproc_per_node: int = 1,
) -> WorkerSummary:
    """Train queued configs until nothing is WAITING (and, with ``wait``, nothing RUNNING
    elsewhere that could come back to the queue).

    Args:
        queue: the study's queue (opened without ``create``).
        tracking: the MLflow store the coordinator created the experiment in.
        wait: keep polling while other workers run configs (their runs may be lost and
            re-queued); ``False`` returns as soon as nothing is WAITING.
        hashes: train only these configs (a coordinator's plan); ``None``: any.
        parent_pid: stop (as on Ctrl-C) when this parent process dies.
        on_event: ``(event, job, result)`` with event ``start``, ``finished``, ``failed``,
            ``skipped``.
        on_epoch: passed to :func:`study.train.trainer.train`.
        nproc_per_node: processes per run; above 1 each run is one torchrun DDP job
            (:func:`study.train.ddp.train_distributed`).

    Returns:
        A :class:`WorkerSummary`; ``interrupted`` after Ctrl-C or SIGTERM, once the current
        run is closed KILLED and its config re-queued.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        # Slurm's warning before a time limit or preemption (sbatch --signal=B:USR1@SECONDS).
        signal.signal(signal.SIGUSR1, _terminate_as_interrupt)
    summary, pause, next_scan = WorkerSummary(), POLL_S, 0.0
    try:
        while True:
            if parent_gone(parent_pid):
                raise KeyboardInterrupt
            started = time.perf_counter()
            if time.monotonic() >= next_scan:
                summary.recovered += recover_lost(queue, tracking)
                next_scan = time.monotonic() + LOOK_S
            _sync_spool(tracking)
            claim = queue.pop(hashes)
            if claim is None:
                if not wait or not _active(queue, hashes):
                    return summary
                time.sleep(pause)
                pause = min(2 * pause, LOOK_S)
                continue
            pause = POLL_S
            summary.queue_s += time.perf_counter() - started
            summary.runs += 1
            _run_claim(queue, tracking, claim, summary, parent_pid, on_event, on_epoch, nproc_per_node)
    except KeyboardInterrupt:
        summary.interrupted = True
        return summary
    finally:
        with contextlib.suppress(Exception):
            _sync_spool(tracking)


def _active(queue: RunQueue, hashes: set[str] | None) -> bool:
    active = queue.trials([TrialState.WAITING, TrialState.RUNNING])
    return any(hashes is None or t.user_attrs.get("config_hash") in hashes for t in active)


def _sync_spool(tracking: Tracking) -> None:
    """Upload the runs this process spooled, once the tracking server answers again."""
    if tracking.spooled and tracking.reachable():
        tracking.offline = False
        spool.sync(tracking)
        tracking.spooled = False


@dataclass
class _QueueTrial:
    """The queue side of one claimed config (:class:`study.run.lifecycle.TrialSide`)."""

    queue: RunQueue
    tracking: Tracking
    claim: Claim
    summary: WorkerSummary

    def interrupted(self) -> None:
        self.queue.requeue(self.claim.trial_id, EndKind.INTERRUPTED, "interrupted", self.claim.job)

    def failed(self, reason: str) -> None:
        self.queue.fail(self.claim.trial_id, EndKind.FAILED, reason[:2000])

    def pruned(self) -> dict[str, str]:
        raise AssertionError("queue runs are never pruned")

    def recorded_elsewhere(self) -> bool:
        clock = time.perf_counter()
        done = self.tracking.finished_run_id(self.claim.job.experiment_id, self.claim.job.config_hash)
        self.summary.check_s += time.perf_counter() - clock
        return done is not None

    def duplicate(self) -> None:
        self.queue.complete(self.claim.trial_id, None)

    def finished(self, result: dict[str, Any]) -> None:
        clock = time.perf_counter()
        value = result.get("val/top1")
        value = value if isinstance(value, float) and math.isfinite(value) else None
        self.queue.complete(self.claim.trial_id, value, outcome=str(result["outcome"]))
        self.summary.queue_s += time.perf_counter() - clock


def _run_claim(queue: RunQueue, tracking: Tracking, claim: Claim, summary: WorkerSummary, parent_pid,
               on_event, on_epoch, nproc_per_node: int = 1) -> None:
    from study.config.run_config import make_config
    from study.record.system_metrics import system_metrics
    from study.train.ddp import train_distributed
    from study.train.trainer import train

    job, side = claim.job, _QueueTrial(queue, tracking, claim, summary)

    def look() -> None:  # a busy worker still finds the runs of dead workers
        summary.recovered += recover_lost(queue, tracking)

    def run() -> dict[str, Any]:
        config = make_config(job.config, where=job.run_name)
        if config.config_hash() != job.config_hash:
            raise RuntimeError(f"config hash {config.config_hash()} != queued {job.config_hash}: "
                               "this worker's nfstudy version differs from the coordinator's")
        with system_metrics(child.run_id, tracking.uri, config.train.system_metrics):
            if nproc_per_node > 1:
                return train_distributed(config, nproc_per_node, tracker=child, on_epoch=on_epoch)
            return train(config, tracker=child, on_epoch=on_epoch)

    with Heartbeat(lambda: queue.beat(claim.trial_id), parent_pid, look=look):  # from the claim on: a slow tracking server never makes it look lost
        if side.recorded_elsewhere():
            queue.complete(claim.trial_id, None)
            summary.skipped += 1
            if on_event:
                on_event("skipped", job, None)
            return
        child = tracking.start_child(job.experiment_id, job.parent_id, job.study, job.arm, job.run_name,
                                     job.config_hash, job.config, tags={QUEUE_TRIAL: queue.tag(claim.trial_id)})
        queue.set_attr(claim.trial_id, "mlflow_run_id", child.run_id)
        if on_event:
            on_event("start", job, None)
        ended = run_child(child, run, side)
    if ended.status == "FAILED":
        summary.failed.append(f"{job.run_name}: {ended.reason.splitlines()[-1]}")
        if on_event:
            on_event("failed", job, None)
    elif ended.status == "FINISHED":
        assert ended.result is not None
        if ended.result["outcome"] == DIVERGED:
            summary.diverged += 1
        else:
            summary.completed += 1
        if on_event:
            on_event("finished", job, ended.result)
