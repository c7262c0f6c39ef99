"""The local spool: what a run could not send to an unreachable tracking server.

When a tracking server goes away during a run, the run goes on and its params, metrics,
tags and final status are appended to ``$NFSTUDY_HOME/spool/<spool id>.jsonl`` (one JSON
record per line; each line one ``write`` on an ``O_APPEND`` file, then ``fsync``; a torn
last line from a crash is ignored). The writing process holds an exclusive ``flock`` on
its file, so :func:`sync` never uploads a run that is still being written.

:func:`sync` (``nfstudy sync``, and the start of every ``nfstudy run``) uploads each spooled
run and moves its file to ``spool/uploaded/``. It is idempotent: a run it creates is
tagged ``nfstudy.spool_id``, and a FINISHED config hash is never recorded twice (a spooled
result whose config is already FINISHED in the experiment is dropped as a duplicate).

Records, in order: ``run`` (the header: study, experiment name and id, parent id and the tags
that select it, MLflow run id when the run was created before the server went away, run
name, tags, params), then any of
``params``, ``metrics`` (``[[key, value, timestamp_ms, step], …]``), ``tags``, and ``end``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from study import paths
from study.record.tags import COMPLETED, ERROR, HASH, OUTCOME, PARENT_ID, ROLE, SPOOL_ID


def spool_dir() -> Path:
    """``$NFSTUDY_HOME/spool`` (not created here)."""
    return paths.confined("spool")


class SpoolWriter:
    """Appends the records of one run to its spool file; holds the file's lock while open.

    Args:
        header: the ``run`` record (see the module docstring); ``spool_id`` is added.
    """

    def __init__(self, header: dict[str, Any]):
        self.spool_id = uuid.uuid4().hex
        root = spool_dir()
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{self.spool_id}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.append({**header, "kind": "run", "spool_id": self.spool_id})

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, durably."""
        os.write(self._fd, (json.dumps(record, allow_nan=True) + "\n").encode())
        os.fsync(self._fd)

    def metrics(self, metrics: list[Metric]) -> None:
        self.append({"kind": "metrics", "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics]})

    def tags(self, tags: dict[str, str]) -> None:
        self.append({"kind": "tags", "tags": tags})

    def end(self, status: str) -> None:
        """Record the run's final status and release the file."""
        self.append({"kind": "end", "status": status, "end_time": int(time.time() * 1000)})
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1


@dataclass
class SpooledRun:
    """A spool file read back: the header and the merged records."""

    path: Path
    header: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[list] = field(default_factory=list)
    status: str | None = None
    end_time: int | None = None

    @property
    def config_hash(self) -> str | None:
        return self.tags.get(HASH)


def read(path: Path) -> SpooledRun | None:
    """Parse a spool file (``None`` when it has no complete header)."""
    run: SpooledRun | None = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line: the process died while writing it
        kind = record.get("kind")
        if kind == "run":
            run = SpooledRun(path, record, tags=dict(record.get("tags", {})))
        elif run is None:
            continue
        elif kind == "metrics":
            run.metrics.extend(record["metrics"])
        elif kind == "params":
            run.header.setdefault("params", {}).update(record["params"])
        elif kind == "tags":
            run.tags.update(record["tags"])
        elif kind == "end":
            run.status, run.end_time = record["status"], record.get("end_time")
    return run


def _locked(path: Path) -> bool:
    """Whether a live process is still writing ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def pending() -> list[SpooledRun]:
    """The spooled runs not uploaded yet and no longer being written, oldest first."""
    root = spool_dir()
    if not root.is_dir():
        return []
    files = sorted(root.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    runs = [read(p) for p in files if not _locked(p)]
    return [r for r in runs if r is not None]


def finished(experiment_id: str) -> dict[str, str]:
    """``{config hash: outcome}`` of the spooled FINISHED runs of an experiment, including
    those still being written (a run finished locally counts as done)."""
    root = spool_dir()
    done: dict[str, str] = {}
    for path in sorted(root.glob("*.jsonl")) if root.is_dir() else []:
        run = read(path)
        if run and run.status == "FINISHED" and run.header.get("experiment_id") == experiment_id and run.config_hash:
            done[run.config_hash] = run.tags.get(OUTCOME, COMPLETED)
    return done


@dataclass
class SyncSummary:
    """What :func:`sync` did."""

    uploaded: int = 0
    duplicates: int = 0
    runs: list[str] = field(default_factory=list)
    """``run name → MLflow run id`` lines, one per uploaded run."""


def sync(tracking, on_run: Callable[[str], None] | None = None) -> SyncSummary:
    """Upload every pending spooled run to ``tracking``, then move its file to ``uploaded/``.

    Args:
        tracking: a :class:`study.record.tracking.Tracking` whose server is reachable.
        on_run: called with one line per run handled.

    Returns:
        A :class:`SyncSummary`.

    Raises:
        TrackingError: the tracking store cannot be used (nothing is moved then).
    """
    summary = SyncSummary()
    root = spool_dir()
    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / ".sync.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers of one home sync one at a time: no run uploaded twice
        for run in pending():
            _upload(tracking, run, summary, on_run)
    finally:
        os.close(lock)
    return summary


def _upload(tracking, run: SpooledRun, summary: SyncSummary, on_run: Callable[[str], None] | None) -> None:
    """Upload one spooled run (or drop it as a duplicate), then move its file."""
    header = run.header
    # By name, not id: ids mean nothing on another tracking store. A search's runs live in
    # experiment "search:<study>" under the parent of their Optuna study.
    experiment_id, parent_id = tracking.ensure_study(header.get("experiment", header["study"]),
                                                     header.get("description", ""),
                                                     parent=header.get("parent_tags") or None)
    client = tracking.client
    status = run.status or "KILLED"  # the writer died before it could say
    done = tracking.finished_hashes(experiment_id) if run.config_hash else {}
    run_id = _existing_run(client, experiment_id, header)
    if run_id is not None and client.get_run(run_id).info.status != "RUNNING":
        line = f"{header['run_name']} [{run.config_hash}]: uploaded before (run {run_id})"
    elif status == "FINISHED" and run.config_hash in done and done[run.config_hash] != run_id:
        if run_id is not None:  # created before the server went away: close it
            client.set_tag(run_id, ERROR, "duplicate: this config was recorded FINISHED by another run")
            client.set_terminated(run_id, "KILLED")
        summary.duplicates += 1
        line = f"{header['run_name']} [{run.config_hash}]: already FINISHED in '{header['study']}', not uploaded again"
    else:
        if run_id is None:
            tags = {**run.tags, PARENT_ID: parent_id, SPOOL_ID: header["spool_id"]}
            tags.setdefault(ROLE, "child")
            run_id = client.create_run(experiment_id, start_time=header.get("start_time"),
                                       run_name=header["run_name"], tags=tags).info.run_id
        else:
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run.tags.items()
                                           if k != PARENT_ID])
        existing = client.get_run(run_id).data.params
        params = [Param(k, v) for k, v in header.get("params", {}).items() if k not in existing]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i:i + 100])
        metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in run.metrics]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if run.status is None:
            client.set_tag(run_id, ERROR, "the process died while the tracking server was unreachable")
        client.set_terminated(run_id, status, end_time=run.end_time)
        summary.uploaded += 1
        line = f"{header['run_name']} [{run.config_hash}]: uploaded as {status} run {run_id}"
    summary.runs.append(line)
    if on_run:
        on_run(line)
    _mark_uploaded(run.path)


def _existing_run(client, experiment_id: str, header: dict[str, Any]) -> str | None:
    """The MLflow run this spool file continues: the one created before the server went
    away, or one an interrupted earlier sync created from it."""
    if header.get("run_id"):
        try:
            return client.get_run(header["run_id"]).info.run_id
        except Exception:  # noqa: BLE001 - not on this server (another store): create it anew
            pass
    found = client.search_runs([experiment_id], filter_string=f"tags.`{SPOOL_ID}` = '{header['spool_id']}'",
                               max_results=1)
    return found[0].info.run_id if found else None


def _mark_uploaded(path: Path) -> None:
    done = path.parent / "uploaded"
    done.mkdir(exist_ok=True)
    os.replace(path, done / path.name)
