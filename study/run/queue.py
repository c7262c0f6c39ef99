"""The run queue: an Optuna study in Optuna storage, one trial per config to train.

README "Many workers and machines": there is no scheduler of our own. A study's queue is the Optuna
study ``nfstudy-queue:<study>``; each config to train is a WAITING trial whose user attrs
carry everything a worker needs (the flat config, its hash, arm, run name, grid point and
the MLflow experiment and parent ids), so a worker on another machine needs no study file.

- **Pop.** A worker claims a WAITING trial with ``set_trial_state_values(RUNNING)``, which
  the storage makes atomic (a row lock on PostgreSQL; on a journal, the first RUNNING
  record in the log wins) and which returns ``False`` to every other claimant. Workers
  never call ``study.ask()``: an empty queue means no work, never a sampled point.
- **Enqueue.** Only configs with no WAITING or RUNNING trial are added, inside a lock, so
  several coordinators (or a coordinator and a worker re-queueing a lost run) never put
  the same config in twice: a transaction-level advisory lock on PostgreSQL, an ``fcntl``
  lock file beside a journal or SQLite file. ``enqueue_trial(skip_if_exists=True)`` is not
  used because it checks and inserts without a lock.
- **Liveness.** A RUNNING trial records its owner (host, boot, pid namespace, pid) and a
  heartbeat every :data:`HEARTBEAT_S` seconds. It is lost when its owner runs on this
  host and the process is gone (found at once), or when its heartbeat has not changed for
  :data:`STALE_AFTER_S` seconds of the observer's own clock (no clocks are compared across
  machines; an observer that just started waits that long).

Storage: ``--storage`` / ``$NFSTUDY_STORAGE``: ``postgresql://…`` (Optuna RDB storage, for
many machines), ``sqlite:///…``, or a file path (Optuna journal). The default is the
journal file ``$NFSTUDY_HOME/queue.journal``: it takes many local writer processes
(appends under a lock), where SQLite's single writer lock makes busy workers fail with
"database is locked". Its lock is an ``fcntl`` lock, which the kernel releases when its
holder dies, so ``kill -9`` never leaves a stale lock behind (Optuna's own lock files wait
30 s for that). Journal files must not live on NFS (``fcntl`` locks are unreliable there).

Limits: exactly once holds for the queue; the MLflow side is checked by the worker before
it trains and again before it records a result (:mod:`study.run.worker`). A worker whose
heartbeat stalls for :data:`STALE_AFTER_S` while it is alive (a frozen machine) is taken
for dead and its config is re-queued; if it then wakes up, it finds the result recorded
and closes its own run as KILLED, unless both finish within the same few milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from study import paths
from study.errors import ConfigError, TrackingError
from study.record.tags import HEARTBEAT_ATTR, OWNER_ATTR

QUEUE_PREFIX = "nfstudy-queue:"
#: Seconds between a running trial's heartbeats (``$NFSTUDY_HEARTBEAT_S`` overrides).
HEARTBEAT_S = float(os.environ.get("NFSTUDY_HEARTBEAT_S", "10"))
#: A heartbeat unchanged this long (observer's clock) marks its trial lost.
STALE_AFTER_S = 6 * HEARTBEAT_S
#: A lost run is re-queued automatically this many times in all; then it waits for the
#: next ``nfstudy run`` (a config that kills its worker every time must not loop forever).
MAX_ATTEMPTS = 3
_ACTIVE = (TrialState.WAITING, TrialState.RUNNING)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Job:
    """One config to train, as it travels in a queue trial's user attrs."""

    config_hash: str
    config: dict[str, Any]
    study: str
    arm: str
    run_name: str
    point: dict[str, Any]
    experiment_id: str
    parent_id: str
    attempt: int = 1

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> Job:
        attrs = trial.user_attrs
        return cls(**{name: attrs[name] for name in cls.__dataclass_fields__ if name in attrs})


@dataclass(frozen=True)
class Claim:
    """A trial this process moved from WAITING to RUNNING: it owns the job now."""

    trial_id: int
    number: int
    job: Job


@dataclass
class _Observed:
    beat: Any
    since: float = field(default_factory=time.monotonic)


def storage_url(explicit: str | None = None) -> str:
    """The queue's storage: ``explicit``, else ``$NFSTUDY_STORAGE``, else the journal file
    ``$NFSTUDY_HOME/queue.journal``."""
    if explicit:
        return explicit
    if os.environ.get("NFSTUDY_STORAGE"):
        return os.environ["NFSTUDY_STORAGE"]
    return str(paths.home() / "queue.journal")


def _kind(url: str) -> str:
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("", "file"):
        return "journal"
    raise ConfigError(f"--storage '{url}': unsupported; allowed: postgresql://USER@HOST:PORT/DB, "
                      "sqlite:///PATH, or the path of a journal file")


def _journal_path(url: str) -> Path:
    return Path(url.removeprefix("file://")).expanduser().resolve()


class FlockLock:
    """An ``fcntl.flock`` lock on ``path``: blocking, and released by the kernel when the
    holder dies (Optuna's lock files are not, and stall others after a ``kill -9``). Has the
    ``acquire``/``release`` interface of Optuna's journal file locks."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock


def open_storage(url: str, *, create: bool) -> BaseStorage:
    """Open (``create=True``: and initialise) the Optuna storage at ``url``.

    Raises:
        ConfigError: an unsupported URL.
        TrackingError: the storage cannot be reached, or (``create=False``) does not exist.
    """
    kind = _kind(url)
    if kind == "journal":
        path = _journal_path(url)
        if not create and not path.is_file():
            raise TrackingError(f"--storage '{url}': no queue journal there; start `nfstudy run` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=FlockLock(path.with_name(path.name + ".lock"))))
    if kind == "sqlite":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            # Workers never create the schema (concurrent creation races): the coordinator does.
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, skip_table_creation=not create)
        except Exception as err:  # SQLAlchemy raises many types for an unusable database
            # Another process creating the same tables at this moment makes PostgreSQL (or
            # SQLite) answer with a unique violation; once it is done, a retry finds them.
            if create and attempt < 2 and ("UniqueViolation" in str(err) or "IntegrityError" in str(err)):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise TrackingError(f"--storage '{_redact(url)}' is not usable: {_first_line(err)}") from None
    raise AssertionError("unreachable")


@cache
def host_id() -> str:
    """This host, boot and pid namespace: where a pid means the same process."""
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
    """This process as the owner of a trial: host (with boot and pid namespace), pid, name."""
    return {"host": host_id(), "pid": os.getpid(), "name": socket.gethostname()}


def owner_gone(owner: dict[str, Any] | None) -> bool:
    """Whether ``owner`` (an :func:`owner_record`) is another process of this host that no
    longer runs; ``False`` for owners on other hosts (only a heartbeat can tell those)."""
    return bool(owner) and owner["host"] == host_id() and owner["pid"] != os.getpid() \
        and not process_alive(owner["pid"])


class RunQueue:
    """A study's queue in Optuna storage.

    Args:
        study: the study name (the queue is the Optuna study ``nfstudy-queue:<study>``).
        storage: storage URL or journal path (see :func:`storage_url`).
        create: create the storage schema and the queue if missing (the coordinator);
            a worker passes ``False`` and gets a :class:`TrackingError` when there is none.

    Example::

        queue = RunQueue("clip-threshold", "postgresql://nfstudy@db-host/nfstudy", create=True)
        queue.enqueue(jobs)                 # coordinator
        claim = queue.pop()                 # worker: None when nothing is WAITING
    """

    def __init__(self, study: str, storage: str | None = None, *, create: bool = False):
        self.study = study
        self.url = storage_url(storage)
        self.name = QUEUE_PREFIX + study
        self.storage = open_storage(self.url, create=create)
        try:
            self.study_id = self.storage.get_study_id_from_name(self.name)
        except KeyError:
            if not create:
                raise TrackingError(
                    f"--study '{study}': no queue in storage '{_redact(self.url)}'; "
                    f"start `nfstudy run {study} --storage URL` first") from None
            with self.lock():
                try:
                    self.study_id = self.storage.get_study_id_from_name(self.name)
                except KeyError:
                    self.study_id = self.storage.create_new_study([StudyDirection.MAXIMIZE], self.name)
        except Exception as err:  # noqa: BLE001 - an RDB without our tables, a dead server
            raise TrackingError(f"--storage '{_redact(self.url)}' is not usable: {_first_line(err)}") from None
        self._observed: dict[int, _Observed] = {}

    # -- reading -------------------------------------------------------------------------

    def trials(self, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
        """The queue's trials (all, or those in ``states``), oldest first."""
        return self.storage.get_all_trials(self.study_id, deepcopy=False,
                                           states=tuple(states) if states is not None else None)

    def active_hashes(self) -> set[str]:
        """Config hashes with a WAITING or RUNNING trial."""
        return {t.user_attrs.get("config_hash") for t in self.trials(_ACTIVE)}

    # -- coordinator -----------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive among every process using this storage, for check-then-enqueue.

        PostgreSQL: ``pg_advisory_xact_lock`` in a transaction held open for the block (the
        server drops it if this process dies). Journal / SQLite: ``flock`` on a file beside
        the storage file (the kernel drops it if this process dies).
        """
        kind = _kind(self.url)
        if kind == "postgresql":
            import sqlalchemy

            key = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big", signed=True)
            engine = self.storage.engine  # type: ignore[attr-defined]
            with engine.connect() as connection, connection.begin():
                connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
                yield
            return
        path = _journal_path(self.url) if kind == "journal" else Path(self.url.removeprefix("sqlite:///"))
        flock = FlockLock(path.with_name(path.name + ".enqueue.lock"))
        flock.acquire()
        try:
            yield
        finally:
            flock.release()

    def enqueue(self, jobs: Iterable[Job], *, cancel_others: bool = False) -> tuple[int, int]:
        """Add a WAITING trial for each job whose config has no WAITING or RUNNING trial.

        Args:
            jobs: what should be trained.
            cancel_others: also fail the WAITING trials of configs not in ``jobs`` (left by
                an earlier plan of the study, e.g. another preset), so workers skip them.

        Returns:
            ``(enqueued, cancelled)``.
        """
        jobs = list(jobs)
        wanted = {job.config_hash for job in jobs}
        added = cancelled = 0
        with self.lock():
            busy: set[str] = set()
            for trial in self.trials(_ACTIVE):
                config_hash = trial.user_attrs.get("config_hash")
                if cancel_others and trial.state == TrialState.WAITING and config_hash not in wanted:
                    self.storage.set_trial_user_attr(trial._trial_id, "error", "cancelled: not in the study's plan")
                    cancelled += self.fail(trial._trial_id)
                else:
                    busy.add(config_hash)
            for job in jobs:
                if job.config_hash in busy:
                    continue
                busy.add(job.config_hash)
                template = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=asdict(job))
                self.storage.create_new_trial(self.study_id, template_trial=template)
                added += 1
        return added, cancelled

    # -- worker ------------------------------------------------------------------------------

    def pop(self) -> Claim | None:
        """Claim the oldest WAITING trial; ``None`` when nothing is WAITING."""
        for trial in self.trials([TrialState.WAITING]):
            try:
                claimed = self.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
            except UpdateFinishedTrialError:  # cancelled or failed meanwhile
                continue
            if claimed:
                self.storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, owner_record())
                return Claim(trial._trial_id, trial.number, Job.from_trial(trial))
        return None

    def beat(self, trial_id: int) -> None:
        """Record that the owner of ``trial_id`` is alive (a no-op once it is finished)."""
        with contextlib.suppress(UpdateFinishedTrialError):
            self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def set_attr(self, trial_id: int, key: str, value: Any) -> None:
        """A user attr on a trial (e.g. its MLflow run id, outcome or error)."""
        with contextlib.suppress(UpdateFinishedTrialError):
            self.storage.set_trial_user_attr(trial_id, key, value)

    def complete(self, trial_id: int, value: float | None) -> bool:
        """Mark a claimed trial COMPLETE (after its MLflow run is FINISHED)."""
        try:
            return self.storage.set_trial_state_values(
                trial_id, TrialState.COMPLETE, None if value is None else [value])
        except UpdateFinishedTrialError:
            return False

    def fail(self, trial_id: int) -> bool:
        """Mark a trial FAIL; ``False`` when it was finished already (someone else did)."""
        try:
            return self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False

    def is_running(self, trial_id: int) -> bool:
        return self.storage.get_trial(trial_id).state == TrialState.RUNNING

    # -- liveness ------------------------------------------------------------------------------

    def lost(self) -> list[FrozenTrial]:
        """RUNNING trials whose owner is gone (see the module docstring)."""
        lost, now, running = [], time.monotonic(), self.trials([TrialState.RUNNING])
        for trial in running:
            owner = trial.system_attrs.get(OWNER_ATTR)
            if owner_gone(owner):
                lost.append(trial)
                continue
            beat = (trial.system_attrs.get(HEARTBEAT_ATTR), owner and owner.get("pid"))
            seen = self._observed.get(trial._trial_id)
            if seen is None or seen.beat != beat:
                self._observed[trial._trial_id] = _Observed(beat)
            elif now - seen.since > STALE_AFTER_S:
                lost.append(trial)
        alive = {t._trial_id for t in running}
        self._observed = {k: v for k, v in self._observed.items() if k in alive}
        return lost


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__


def _redact(url: str) -> str:
    """``url`` without a password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return url
