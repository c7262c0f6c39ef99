"""Runs a study's pending configs and records each in MLflow.

A config hash that is FINISHED in the study's experiment is never trained again. A run
that raises is recorded FAILED first, then the grid goes on (the next ``nfstudy run``
retries it); a diverged run is a FINISHED result with outcome ``diverged``; Ctrl-C marks
the current run KILLED and stops.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Callable

from study.registry import PlannedRun
from study.spec import StudySpec
from study.tracking import Tracking


@dataclass
class Summary:
    done_before: int = 0
    completed: int = 0
    diverged: int = 0
    failed: list[str] = field(default_factory=list)


def pending_runs(tracking: Tracking, experiment_id: str, runs: list[PlannedRun]) -> list[PlannedRun]:
    done = tracking.finished_hashes(experiment_id)
    return [run for run in runs if run.config_hash not in done]


def execute(
    spec: StudySpec,
    runs: list[PlannedRun],
    tracking: Tracking,
    on_run_start: Callable[[PlannedRun], None] | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    on_run_end: Callable[[PlannedRun, dict | None], None] | None = None,
) -> Summary:
    """Train every run of ``runs`` not yet FINISHED, one after another."""
    from study.trainer import train

    experiment_id, parent_id = tracking.ensure_study(spec.name, spec.description)
    todo = pending_runs(tracking, experiment_id, runs)
    summary = Summary(done_before=len(runs) - len(todo))
    for run in todo:
        if on_run_start:
            on_run_start(run)
        child = tracking.start_child(
            experiment_id, parent_id, spec.name, run.arm, run.name, run.config_hash, run.config.flat()
        )
        try:
            result = train(run.config, tracker=child, on_epoch=on_epoch)
        except KeyboardInterrupt:
            child.end("KILLED", "interrupted (Ctrl-C)")
            raise
        except Exception as err:  # noqa: BLE001 - record the failure, then go on with the grid
            child.end("FAILED", "".join(traceback.format_exception_only(err)).strip())
            summary.failed.append(f"{run.name}: {type(err).__name__}: {err}")
            result = None
        else:
            child.finish(result)
            if result["outcome"] == "diverged":
                summary.diverged += 1
            else:
                summary.completed += 1
        if on_run_end:
            on_run_end(run, result)
    return summary
