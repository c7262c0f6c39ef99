"""Who runs a trial (of the run queue or of a search), and whether it still does.

A RUNNING trial records its owner (host, boot and pid namespace, pid, and how long its
heartbeat may stay silent) and a heartbeat every :data:`HEARTBEAT_S` seconds. It is lost
when its owner is a process of this host that is gone (found at once), or when its last
heartbeat is older than the owner's own bound (``stale_after_s``, six heartbeats), so every
observer applies the same bound whatever its own settings. The heartbeat's age is measured
by one clock: the database's on SQLite and PostgreSQL (Optuna's ``trial_heartbeats`` table,
written with ``now()``), and this host's for a journal file (which lives on one host). So
any process finds a stale trial at its first look.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

from study.record.tags import HEARTBEAT_ATTR, OWNER_ATTR

#: Seconds between a running trial's heartbeats (``$NFSTUDY_HEARTBEAT_S`` overrides).
HEARTBEAT_S = float(os.environ.get("NFSTUDY_HEARTBEAT_S", "10"))
#: Seconds between two looks for lost trials by a worker, idle or busy (a look reads the
#: RUNNING trials only: a few rows per worker).
LOOK_S = 5.0
#: Silence after which a trial is lost, for trials whose owner did not say (claimed by a
#: process that died before it could record itself); owners record ``6 * HEARTBEAT_S``.
DEFAULT_STALE_AFTER_S = 60.0


@cache
def host_id() -> str:
    """This host, boot and pid namespace: where a pid means the same process
    (``$NFSTUDY_HOST_ID`` replaces it, e.g. to play another machine in a test)."""
    if os.environ.get("NFSTUDY_HOST_ID"):
        return os.environ["NFSTUDY_HOST_ID"]
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def owner_record() -> dict[str, Any]:
    """This process as the owner of a trial (with its Slurm job, for ``nfstudy status``)."""
    record = {"host": host_id(), "pid": os.getpid(), "name": socket.gethostname(), "stale_after_s": 6 * HEARTBEAT_S}
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        record["job"] = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    elif os.environ.get("SLURM_JOB_ID"):
        record["job"] = os.environ["SLURM_JOB_ID"]
    return record


def owner_gone(owner: dict[str, Any] | None) -> bool:
    """Whether ``owner`` (an :func:`owner_record`) is another process of this host that no
    longer runs; ``False`` for owners on other hosts (only a heartbeat can tell those)."""
    return bool(owner) and owner["host"] == host_id() and owner["pid"] != os.getpid() \
        and not process_alive(owner["pid"])


def beat(storage: BaseStorage, trial_id: int) -> None:
    """Record that the owner of ``trial_id`` is alive (a no-op once the trial is finished)."""
    if isinstance(storage, RDBStorage):
        storage.record_heartbeat(trial_id)  # the database's clock
        return
    with contextlib.suppress(UpdateFinishedTrialError):
        storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())


def heartbeat_ages(storage: BaseStorage, trials: list[FrozenTrial]) -> dict[int, float]:
    """Seconds since the last heartbeat of each of ``trials`` that has one."""
    if not isinstance(storage, RDBStorage):
        now = time.time()
        return {t._trial_id: now - t.system_attrs[HEARTBEAT_ATTR] for t in trials
                if isinstance(t.system_attrs.get(HEARTBEAT_ATTR), (int, float))}
    if not trials:
        return {}
    import sqlalchemy

    query = sqlalchemy.text("SELECT trial_id, heartbeat FROM trial_heartbeats WHERE trial_id IN :ids") \
        .bindparams(sqlalchemy.bindparam("ids", expanding=True)) \
        .columns(trial_id=sqlalchemy.Integer, heartbeat=sqlalchemy.DateTime)
    with storage.engine.connect() as connection:
        now = connection.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
        rows = connection.execute(query, {"ids": [t._trial_id for t in trials]}).all()
    now = now.replace(tzinfo=None)  # as Optuna compares them: both in the session's time zone
    return {trial_id: (now - at).total_seconds() for trial_id, at in rows}


@dataclass
class _Seen:
    since: float = field(default_factory=time.monotonic)


class Liveness:
    """Finds the lost trials among RUNNING ones; remembers, for trials with no heartbeat
    yet (their owner died right after the claim), since when it has seen them."""

    def __init__(self) -> None:
        self._no_beat: dict[int, _Seen] = {}

    def lost(self, storage: BaseStorage, running: list[FrozenTrial]) -> list[FrozenTrial]:
        """The trials of ``running`` whose owner is gone or whose heartbeat is stale."""
        ages = heartbeat_ages(storage, [t for t in running if not owner_gone(t.system_attrs.get(OWNER_ATTR))])
        lost, now = [], time.monotonic()
        for trial in running:
            owner = trial.system_attrs.get(OWNER_ATTR) or {}
            bound = float(owner.get("stale_after_s", DEFAULT_STALE_AFTER_S))
            if owner_gone(owner):
                lost.append(trial)
            elif trial._trial_id in ages:
                if ages[trial._trial_id] > bound:
                    lost.append(trial)
            elif now - self._no_beat.setdefault(trial._trial_id, _Seen()).since > bound:
                lost.append(trial)
        alive = {t._trial_id for t in running}
        self._no_beat = {k: v for k, v in self._no_beat.items() if k in alive}
        return lost
