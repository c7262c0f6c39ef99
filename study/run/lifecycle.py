"""One child run from training to its end, the same for a grid's queue trial and a search's
trial: the order of the MLflow and Optuna writes is what keeps a result from being lost.

- A result is recorded in MLflow first (FINISHED, outcome ``completed`` or ``diverged``),
  then the trial hears of it: a crash in between loses nothing, the next look at MLflow
  finds the result.
- Ctrl-C / SIGTERM: the run is closed KILLED, then the trial (a second signal meanwhile is
  held back), then ``KeyboardInterrupt`` goes on up.
- An exception: the run is closed FAILED with the error as ``nfstudy.error``, then the
  trial; the caller decides whether to go on or raise.
- ``optuna.TrialPruned`` (searches): the run is closed KILLED with outcome ``pruned``.

Every write goes through :class:`study.record.tracking.ChildRun`, so a run whose tracking
server goes away mid-run continues in the local spool, whichever kind of run it is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from study.record.tags import OUTCOME, PRUNED
from study.record.tracking import ChildRun
from study.run.liveness import HEARTBEAT_S, LOOK_S


class TrialSide(Protocol):
    """The Optuna side of a run: told how it ended, after MLflow was."""

    def interrupted(self) -> None: ...
    def failed(self, reason: str) -> None: ...
    def pruned(self) -> dict[str, str]:
        """Mark the trial pruned; returns tags for the run (e.g. the epoch)."""
    def recorded_elsewhere(self) -> bool:
        """Whether another run recorded this config FINISHED meanwhile (then this one is
        closed KILLED as a duplicate and :meth:`duplicate` is called)."""
    def duplicate(self) -> None: ...
    def finished(self, result: dict[str, Any]) -> None: ...


@dataclass
class Ended:
    """How a run ended: ``FINISHED`` (with ``result``), ``FAILED`` (``error``), or ``KILLED``
    (pruned, or a duplicate)."""

    status: str
    result: dict[str, Any] | None = None
    reason: str = ""
    error: Exception | None = None
    train_s: float = 0.0
    """Seconds inside ``train()``."""
    tracking_s: float = 0.0
    """Seconds closing the MLflow run (flush, final metrics, status)."""


def run_child(child: ChildRun, train: Callable[[], dict[str, Any]], trial: TrialSide) -> Ended:
    """Run ``train()`` for ``child`` and close both the MLflow run and the trial.

    Raises:
        KeyboardInterrupt: after Ctrl-C or SIGTERM, once the run and the trial are closed.
    """
    start = time.perf_counter()
    try:
        result = train()
    except KeyboardInterrupt:
        with signals_held():
            child.end("KILLED", "interrupted (Ctrl-C, SIGTERM or parent process gone)")
            trial.interrupted()
        raise
    except optuna.TrialPruned:
        ended = Ended("KILLED", reason=PRUNED, train_s=time.perf_counter() - start)
        tags = {OUTCOME: PRUNED, **trial.pruned()}
        return _closed(ended, lambda: child.end("KILLED", tags=tags))
    except Exception as err:  # noqa: BLE001 - record the failure first; the caller re-raises or goes on
        reason = "".join(traceback.format_exception_only(err)).strip()
        ended = _closed(Ended("FAILED", reason=reason, error=err, train_s=time.perf_counter() - start),
                        lambda: child.end("FAILED", reason))
        trial.failed(reason)
        return ended
    train_s = time.perf_counter() - start
    if trial.recorded_elsewhere():
        # Taken for dead and re-run elsewhere, which finished first: keep one result.
        ended = _closed(Ended("KILLED", reason="duplicate", train_s=train_s),
                        lambda: child.end("KILLED", "duplicate: another worker recorded this config first"))
        trial.duplicate()
        return ended
    # MLflow first: the result is safe before the trial hears of it.
    ended = _closed(Ended("FINISHED", result=result, train_s=train_s), lambda: child.finish(result))
    trial.finished(result)
    return ended


def _closed(ended: Ended, close: Callable[[], None]) -> Ended:
    tick = time.perf_counter()
    close()
    ended.tracking_s = time.perf_counter() - tick
    return ended


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore Ctrl-C, SIGTERM and SIGUSR1 for the block (main thread only): bookkeeping finishes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def parent_gone(parent_pid: int | None) -> bool:
    """Whether this process was started by ``parent_pid`` and has since been orphaned."""
    return parent_pid is not None and os.getppid() != parent_pid


class Heartbeat:
    """Calls ``beat()`` every :data:`~study.run.liveness.HEARTBEAT_S` seconds from a thread,
    from the moment the block starts, and ``look()`` (if given) every
    :data:`~study.run.liveness.LOOK_S`; stops this process as on Ctrl-C (SIGTERM) when its
    parent ``parent_pid`` dies."""

    def __init__(self, beat: Callable[[], None], parent_pid: int | None = None,
                 look: Callable[[], None] | None = None):
        self.beat, self.parent_pid, self.look = beat, parent_pid, look
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nfstudy-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # a beat stuck on a dead server must not hold the worker

    def _run(self) -> None:
        next_beat, next_look = 0.0, time.monotonic() + LOOK_S
        while not self._stop.is_set():
            if parent_gone(self.parent_pid):
                os.kill(os.getpid(), signal.SIGTERM)  # stop like Ctrl-C
                return
            now = time.monotonic()
            if now >= next_beat:
                with contextlib.suppress(Exception):  # a storage hiccup must not kill the run
                    self.beat()
                next_beat = now + HEARTBEAT_S
            if self.look is not None and now >= next_look:
                with contextlib.suppress(Exception):  # nor a failed look for others' lost runs
                    self.look()
                next_look = now + LOOK_S
            self._stop.wait(min(1.0, HEARTBEAT_S))
