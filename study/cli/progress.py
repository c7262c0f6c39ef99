"""The progress display of ``nfstudy run``: a bar over the study's runs with an ETA, one over
the current run's epochs (one local worker only), and a line per finished or failed run;
of ``nfstudy search``: a bar over the trials being added, and a line per trial.

Not at a terminal (a log file, CI, ``nohup``) there are no bars: every line is plain and
starts with the time, and each finished run says how many are done and the ETA.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """Receives the coordinator's callbacks (:func:`study.run.coordinator.execute`) and draws them.

    Args:
        console: where to draw.
        study: the study's name (first word of the summary line).
        total: runs in the plan.
        workers: local workers; the epoch bar shows only when training happens in this process.
    """

    def __init__(self, console: Console, study: str, total: int, workers: int):
        self.study, self.total, self.workers = study, total, workers
        self.plain = not console.is_terminal and not console.is_jupyter
        self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                                  transient=False, disable=self.plain)
        self._runs = self._progress.add_task("runs", total=total)
        self._epochs = self._progress.add_task("epochs", total=None, visible=workers == 1)
        self._run_name = ""
        self._start, self._first_done = time.monotonic(), None
        self.finished = 0
        self._seen: set[str] = set()

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def _print(self, line: str) -> None:
        self._progress.console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}" if self.plain else line)

    def on_prepared(self, prepared) -> None:
        """The line ``--dry-run`` predicted (done, stale, copies, to run), and recoveries."""
        found = prepared.survey
        line = found.summary() if found is not None else (
            f"{len(prepared.done_before)} done, {self.total - len(prepared.done_before)} to run")
        recovered = f" ({prepared.recovered} lost runs recovered)" if prepared.recovered else ""
        self._print(f"{self.study}: {line}, {self.workers} worker(s){recovered}")

    def on_progress(self, finished: int, total: int) -> None:
        if self._first_done is None:
            self._first_done = finished  # done before this command: not in its rate
        self.finished, self.total = finished, total
        self._progress.update(self._runs, completed=finished, total=total)

    def eta(self) -> str:
        """``h:mm:ss`` left at this command's rate so far, or ``?`` before its first run ends."""
        trained = self.finished - (self._first_done or 0)
        if trained <= 0:
            return "?"
        left = (time.monotonic() - self._start) / trained * (self.total - self.finished)
        return time.strftime("%H:%M:%S", time.gmtime(left))

    def on_event(self, event: str, job, result: dict[str, Any] | None) -> None:
        if event == "start":
            self._run_name = job.run_name
            self._progress.reset(self._epochs, total=None, description=f"  {job.run_name}")
            if self.plain:
                self._print(f"  {job.run_name} [{job.config_hash}]: started")
        elif event == "finished":
            self._seen.add(job.config_hash)  # with several workers this can come before on_progress
            self.finished = max(self.finished, (self._first_done or 0) + len(self._seen))
            top1 = result.get("val/top1")
            score = f" val/top1 {top1:.3f}" if isinstance(top1, float) else ""
            count = f" ({self.finished}/{self.total} done, ETA {self.eta()})" if self.plain else ""
            self._print(f"  {job.run_name} [{job.config_hash}]: {result['outcome']}{score}{count}")
        elif event == "failed":
            self._print(f"  {job.run_name} [{job.config_hash}]: FAILED")

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        total = metrics.get("epochs")
        self._progress.update(self._epochs, completed=epoch + 1, total=total,
                              description=f"  {self._run_name} | val/top1 {metrics['val/top1']:.3f}")
        if self.plain:
            self._print(f"  {self._run_name}: epoch {epoch + 1}/{total or '?'} val/top1 {metrics['val/top1']:.3f}")


class TrialProgress:
    """A bar over the trials ``nfstudy search`` adds (ETA included), a line per trial; plain
    timestamped lines when not at a terminal."""

    def __init__(self, console: Console, trials: int):
        self.plain = not console.is_terminal and not console.is_jupyter
        self._progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True,
                                  disable=self.plain)
        self._task = self._progress.add_task("trials", total=trials)

    def __enter__(self) -> TrialProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def done(self, line: str) -> None:
        """One trial ended: its line, and the bar one step on."""
        self._progress.console.print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}" if self.plain else line)
        self._progress.advance(self._task)
