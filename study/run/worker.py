"""A worker: pops configs from a study's queue and trains them, until the queue is empty.

The same loop runs in ``nfstudy worker`` (another machine, or a process started by
``nfstudy run --workers N``) and in-process for ``nfstudy run --workers 1``. For each
claimed config (:class:`study.run.queue.Claim`):

1. MLflow is checked first: a config hash already FINISHED is not trained again (its
   trial is closed COMPLETE), whatever the number of workers (exactly once).
2. The MLflow child run is started, tagged with the queue trial that owns it, and its id
   is stored on the trial; a heartbeat thread keeps the trial alive in the queue.
3. Training (:func:`study.train.trainer.train`). A result is recorded in MLflow first (FINISHED,
   outcome ``completed`` or ``diverged``), then the trial is marked COMPLETE, so a crash in
   between loses nothing: the next look at MLflow finds the result. A raise records the
   run FAILED, then the trial FAIL; the next ``nfstudy run`` re-queues it.
4. Ctrl-C / SIGTERM (or the death of the local coordinator): the run is KILLED in MLflow,
   the trial FAIL and its config re-queued at once (another worker may take it), then the
   worker exits 130.

A worker also recovers runs whose worker died (:func:`recover_lost`): their trial is
failed, their MLflow run marked KILLED (never left RUNNING) and the config re-queued.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mlflow.entities import RunStatus
from optuna.trial import TrialState

from study.record.tags import DIVERGED, ERROR, OWNER_ATTR, QUEUE_TRIAL, ROLE
from study.record.tracking import Tracking
from study.run.queue import HEARTBEAT_S, MAX_ATTEMPTS, Claim, Job, RunQueue

#: Seconds between looks at an empty queue while other workers still run configs.
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
    queue_s: float = 0.0
    """Optuna storage time: recovery scan, pop, attrs, complete."""
    check_s: float = 0.0
    """MLflow exactly-once checks (before training and before recording)."""

    def overhead_ms(self) -> tuple[float, float]:
        """``(queue, checks)`` milliseconds per run."""
        runs = max(self.runs, 1)
        return 1000 * self.queue_s / runs, 1000 * self.check_s / runs


def trial_tag(queue: RunQueue, trial_id: int) -> str:
    return f"{queue.name}#{trial_id}"


def _finished_run(tracking: Tracking, job: Job) -> str | None:
    """The id of a FINISHED child run of ``job``'s config in its experiment (or in the
    local spool while the tracking server is unreachable), if any."""
    return tracking.finished_run_id(job.experiment_id, job.config_hash)


def kill_orphan_runs(tracking: Tracking, queue: RunQueue, experiment_id: str, reason: str) -> int:
    """Mark KILLED the RUNNING child runs whose owning queue trial is no longer RUNNING.

    Returns:
        How many runs were closed.
    """
    running = {trial_tag(queue, t._trial_id) for t in queue.trials([TrialState.RUNNING])}
    runs = tracking.client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{ROLE}` = 'child'",
        max_results=5000,
    )
    closed = 0
    for run in runs:
        owner = run.data.tags.get(QUEUE_TRIAL)
        if owner and owner.startswith(queue.name + "#") and owner not in running:
            tracking.client.set_tag(run.info.run_id, ERROR, reason)
            tracking.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            closed += 1
    return closed


def recover_lost(queue: RunQueue, tracking: Tracking) -> int:
    """Fail the RUNNING trials whose worker is gone, mark their MLflow runs KILLED and
    re-queue their configs (up to :data:`study.run.queue.MAX_ATTEMPTS` attempts in all).

    Returns:
        How many lost trials this call recovered.
    """
    recovered = 0
    for trial in queue.lost():
        if not queue.fail(trial._trial_id):
            continue  # another observer recovered it first
        recovered += 1
        job = Job.from_trial(trial)
        owner = trial.system_attrs.get(OWNER_ATTR) or {}
        reason = f"worker lost (pid {owner.get('pid')} on {owner.get('name')})"
        queue.set_attr(trial._trial_id, "error", reason)
        kill_orphan_runs(tracking, queue, job.experiment_id, reason)
        if job.attempt < MAX_ATTEMPTS and _finished_run(tracking, job) is None:
            queue.enqueue([replace(job, attempt=job.attempt + 1)])
    return recovered


class _Heartbeat:
    """Beats for a claimed trial; interrupts the worker when its parent process dies."""

    def __init__(self, queue: RunQueue, trial_id: int, parent_pid: int | None):
        self.queue, self.trial_id, self.parent_pid = queue, trial_id, parent_pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nfstudy-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            if parent_gone(self.parent_pid):
                os.kill(os.getpid(), signal.SIGTERM)  # stop like Ctrl-C
                return
            if time.monotonic() >= next_beat:
                try:
                    self.queue.beat(self.trial_id)
                except Exception:  # noqa: BLE001 - a storage hiccup must not kill the run
                    pass
                next_beat = time.monotonic() + HEARTBEAT_S
            self._stop.wait(min(1.0, HEARTBEAT_S))


def parent_gone(parent_pid: int | None) -> bool:
    """Whether this process was started by ``parent_pid`` and has since been orphaned."""
    return parent_pid is not None and os.getppid() != parent_pid


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_worker(
    queue: RunQueue,
    tracking: Tracking,
    *,
    wait: bool = True,
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
        parent_pid: stop (as on Ctrl-C) when this parent process dies.
        on_event: ``(event, job, result)`` with event ``start``, ``finished``, ``failed``,
            ``skipped``.
        on_epoch: passed to :func:`study.train.trainer.train`.
        nproc_per_node: processes per run; above 1 each run is one torchrun DDP job
            (:func:`study.train.ddp.train_distributed`).

    Returns:
        A :class:`WorkerSummary`.

    Raises:
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after the current run is closed KILLED
            and its config re-queued.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    summary = WorkerSummary()
    while True:
        if parent_gone(parent_pid):
            raise KeyboardInterrupt
        started = time.perf_counter()
        summary.recovered += recover_lost(queue, tracking)
        claim = queue.pop()
        if claim is None:
            if not wait or not queue.trials([TrialState.WAITING, TrialState.RUNNING]):
                return summary
            time.sleep(POLL_S)
            continue
        summary.queue_s += time.perf_counter() - started
        summary.runs += 1
        _run_claim(queue, tracking, claim, summary, parent_pid, on_event, on_epoch, nproc_per_node)


def _run_claim(queue, tracking, claim: Claim, summary: WorkerSummary, parent_pid, on_event, on_epoch,
               nproc_per_node: int = 1) -> None:
    from study.config.run_config import make_config
    from study.train.ddp import train_distributed
    from study.train.trainer import train

    job = claim.job
    clock = time.perf_counter()
    done_already = _finished_run(tracking, job)
    summary.check_s += time.perf_counter() - clock
    if done_already is not None:
        queue.complete(claim.trial_id, None)
        summary.skipped += 1
        if on_event:
            on_event("skipped", job, None)
        return
    child = tracking.start_child(job.experiment_id, job.parent_id, job.study, job.arm, job.run_name,
                                 job.config_hash, job.config, tags={QUEUE_TRIAL: trial_tag(queue, claim.trial_id)})
    clock = time.perf_counter()
    queue.set_attr(claim.trial_id, "mlflow_run_id", child.run_id)
    summary.queue_s += time.perf_counter() - clock
    if on_event:
        on_event("start", job, None)
    try:
        with _Heartbeat(queue, claim.trial_id, parent_pid):
            config = make_config(job.config, where=job.run_name)
            if config.config_hash() != job.config_hash:
                raise RuntimeError(f"config hash {config.config_hash()} != queued {job.config_hash}: "
                                   "this worker's nfstudy version differs from the coordinator's")
            result = (train_distributed(config, nproc_per_node, tracker=child, on_epoch=on_epoch)
                      if nproc_per_node > 1 else train(config, tracker=child, on_epoch=on_epoch))
    except KeyboardInterrupt:
        # Finish the bookkeeping even if a second Ctrl-C / SIGTERM arrives meanwhile.
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            child.end("KILLED", "interrupted (Ctrl-C, SIGTERM or coordinator gone)")
            queue.set_attr(claim.trial_id, "error", "interrupted")
            if queue.fail(claim.trial_id):
                queue.enqueue([job])
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        raise
    except Exception as err:  # noqa: BLE001 - record the failure first, then go on
        reason = "".join(traceback.format_exception_only(err)).strip()
        child.end("FAILED", reason)
        queue.set_attr(claim.trial_id, "error", reason[:2000])
        queue.fail(claim.trial_id)
        summary.failed.append(f"{job.run_name}: {reason.splitlines()[-1]}")
        if on_event:
            on_event("failed", job, None)
        return
    clock = time.perf_counter()
    done_already = _finished_run(tracking, job)
    summary.check_s += time.perf_counter() - clock
    if done_already is not None:
        # Taken for dead and re-run elsewhere, which finished first: keep one result.
        child.end("KILLED", "duplicate: another worker recorded this config first")
        queue.complete(claim.trial_id, None)
        return
    child.finish(result)  # MLflow first: the result is safe before the queue hears of it
    clock = time.perf_counter()
    value = result.get("val/top1")
    queue.set_attr(claim.trial_id, "outcome", result["outcome"])
    queue.complete(claim.trial_id, value if isinstance(value, float) and math.isfinite(value) else None)
    summary.queue_s += time.perf_counter() - clock
    if result["outcome"] == DIVERGED:
        summary.diverged += 1
    else:
        summary.completed += 1
    if on_event:
        on_event("finished", job, result)
