"""The run queue: one Optuna study per study (``nfstudy-queue:<study>``), one trial per
config to train; the README's "Many workers and machines" says how it is used.

A WAITING trial's user attrs carry everything a worker needs (:class:`Job`), so a worker on
another machine needs no study file. Workers claim a trial with
``set_trial_state_values(RUNNING)`` (atomic in every Optuna storage; it returns ``False``
to the losers) and never call ``study.ask()``. Enqueueing checks and inserts under one lock
(a PostgreSQL advisory lock, or an ``fcntl`` lock beside a file), so a config is never in
the queue twice. Each coordinator's plan (its configs) is recorded on the queue, so its
workers train that plan, and two plans of one study (other ``--preset``/``--set``) share
the queue without disturbing each other. Liveness: :mod:`study.run.liveness`. Every call
rides out a storage outage (:mod:`study.record.outage`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, TypeVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from study import paths
from study.errors import TrackingError
from study.record import optuna_storage, outage
from study.record.tags import ENDED_ATTR, OWNER_ATTR
from study.redaction import first_line, redact
from study.run import liveness

T = TypeVar("T")

QUEUE_PREFIX = "nfstudy-queue:"
#: A lost run is re-queued automatically this many times in all; then it waits for the
#: next ``nfstudy run`` (a config that kills its worker every time must not loop forever).
MAX_ATTEMPTS = 3
#: Seconds a coordinator waits for another one's lock (PostgreSQL) before giving up.
LOCK_WAIT_S = 600
_ACTIVE = (TrialState.WAITING, TrialState.RUNNING)
#: Job fields that say where a run is recorded: a WAITING trial whose fields differ from
#: a new plan's (the tracking store changed) is replaced.
_WHERE = ("experiment_id", "parent_id", "study", "arm", "run_name")


class EndKind(str, Enum):
    """Why a queue trial is FAIL (its user attr ``ended``; ``error`` says it in words).
    Only :attr:`FAILED` is a failure of the config: the others were put back in the queue."""

    FAILED = "failed"
    """The run raised: recorded FAILED, retried by the next ``nfstudy run``."""
    INTERRUPTED = "interrupted"
    """Ctrl-C or SIGTERM: the run was closed KILLED and the config queued again."""
    LOST = "lost"
    """Its worker died: another process closed the run KILLED and queued the config again."""
    SUPERSEDED = "superseded"
    """Queued again by a newer plan that records elsewhere (another tracking store)."""


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


def storage_url(explicit: str | None = None) -> str:
    """The queue's storage: ``explicit``, else ``$NFSTUDY_STORAGE``, else the journal file
    ``$NFSTUDY_HOME/queue.journal`` (many local writers; SQLite's one writer lock would
    make busy workers fail with "database is locked")."""
    if explicit:
        return explicit
    if os.environ.get("NFSTUDY_STORAGE"):
        return os.environ["NFSTUDY_STORAGE"]
    return str(paths.home() / "queue.journal")


def plan_id(config_hashes: Iterable[str]) -> str:
    """A plan's name on the queue: a digest of its config hashes."""
    return hashlib.sha256(",".join(sorted(set(config_hashes))).encode()).hexdigest()[:12]


class RunQueue:
    """A study's queue in Optuna storage.

    Args:
        study: the study name (the queue is the Optuna study ``nfstudy-queue:<study>``).
        storage: storage URL or journal path (see :func:`storage_url`).
        create: create the storage schema and the queue if missing (the coordinator);
            a worker passes ``False`` and gets a :class:`TrackingError` when there is none.

    Example::

        queue = RunQueue("clip-threshold", "postgresql://nfstudy@db-host:5432/nfstudy", create=True)
        queue.enqueue(jobs, plan=plan_id(j.config_hash for j in jobs))   # coordinator
        claim = queue.pop()                 # worker: None when nothing is WAITING
    """

    def __init__(self, study: str, storage: str | None = None, *, create: bool = False):
        self.study = study
        self.url = storage_url(storage)
        self.name = QUEUE_PREFIX + study
        self._what = f"--storage '{redact(self.url)}'"
        self.storage = self._retry(lambda: optuna_storage.open_storage(self.url, create=create))
        self._liveness = liveness.Liveness()
        try:
            self.study_id = self._retry(lambda: self.storage.get_study_id_from_name(self.name))
        except KeyError:
            if not create:
                raise TrackingError(f"--study '{study}': no queue in storage '{redact(self.url)}'; "
                                    f"fill it first: `nfstudy enqueue {study} --storage URL` (or `nfstudy run`)") from None
            self.study_id = self._retry(self._create)
        except TrackingError:
            raise
        except Exception as err:  # noqa: BLE001 - an RDB without our tables
            raise TrackingError(f"{self._what} is not usable: {first_line(err)}") from None
        self.uid = self._retry(lambda: self.storage.get_study_user_attrs(self.study_id)).get("uid", "")

    def _create(self) -> int:
        with self.lock():
            try:
                return self.storage.get_study_id_from_name(self.name)
            except KeyError:
                study_id = self.storage.create_new_study([StudyDirection.MAXIMIZE], self.name)
                # Tells this queue's runs in MLflow from those of a namesake queue elsewhere.
                self.storage.set_study_user_attr(study_id, "uid", uuid.uuid4().hex[:12])
                return study_id

    def _retry(self, call: Callable[[], T]) -> T:
        return outage.retry(call, self._what)

    def tag(self, trial_id: int) -> str:
        """The ``nfstudy.queue_trial`` tag of a run owned by ``trial_id`` (names this queue
        and its storage, so queues of one study in two storages never touch each other's runs)."""
        return f"{self.name}@{self.uid}#{trial_id}"

    def owns(self, tag: str | None) -> bool:
        """Whether a run's ``nfstudy.queue_trial`` tag names a trial of this queue."""
        return bool(tag) and tag.startswith(f"{self.name}@{self.uid}#")

    # -- reading -------------------------------------------------------------------------

    def trials(self, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
        """The queue's trials (all, or those in ``states``), oldest first."""
        wanted = tuple(states) if states is not None else None
        return self._retry(lambda: self.storage.get_all_trials(self.study_id, deepcopy=False, states=wanted))

    def finished_ids(self) -> set[int]:
        """Ids of the COMPLETE and FAIL trials (without their attrs: cheap to poll)."""
        if not isinstance(self.storage, RDBStorage):
            return {t._trial_id for t in self.trials([TrialState.COMPLETE, TrialState.FAIL])}
        import sqlalchemy

        query = sqlalchemy.text("SELECT trial_id FROM trials WHERE study_id = :study "
                                "AND state IN ('COMPLETE', 'FAIL')")

        def read() -> set[int]:
            with self.storage.engine.connect() as connection:  # type: ignore[attr-defined]
                return {row[0] for row in connection.execute(query, {"study": self.study_id})}

        return self._retry(read)

    def trial(self, trial_id: int) -> FrozenTrial:
        return self._retry(lambda: self.storage.get_trial(trial_id))

    def plan_hashes(self, plan: str) -> set[str]:
        """The config hashes of ``plan`` (as :meth:`enqueue` recorded them)."""
        attrs = self._retry(lambda: self.storage.get_study_user_attrs(self.study_id))
        return set(attrs.get(f"plan:{plan}", []))

    # -- coordinator -----------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive among every process using this storage for this study.

        PostgreSQL: ``pg_advisory_xact_lock`` in a transaction held open for the block (the
        server drops it if this process dies), waiting at most :data:`LOCK_WAIT_S`. Journal /
        SQLite: ``flock`` on a file beside the storage file (the kernel drops it likewise).

        Raises:
            TrackingError: another process held the lock for :data:`LOCK_WAIT_S`.
        """
        path = optuna_storage.local_file(self.url)
        if path is not None:
            with optuna_storage.lock_beside(path, "enqueue", nfs=optuna_storage.on_nfs(self.url)).held():
                yield
            return
        import sqlalchemy

        key = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big", signed=True)
        engine = self.storage.engine  # type: ignore[attr-defined]
        with engine.connect() as connection, connection.begin():
            connection.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = {LOCK_WAIT_S * 1000}"))
            connection.execute(sqlalchemy.text(f"SET LOCAL statement_timeout = {LOCK_WAIT_S * 1000 + 5000}"))
            try:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            except sqlalchemy.exc.OperationalError as err:
                if "lock timeout" not in str(err):
                    raise
                raise TrackingError(f"{self._what}: another `nfstudy run` of '{self.study}' held the queue "
                                    f"lock for {LOCK_WAIT_S} s; try again when it has started") from None
            yield

    def enqueue(self, jobs: Iterable[Job], *, plan: str | None = None) -> int:
        """Add a WAITING trial for each job whose config has no WAITING or RUNNING trial;
        replace a WAITING trial that says to record elsewhere (another tracking store).

        Args:
            jobs: what should be trained.
            plan: record the jobs' config hashes as this plan (:func:`plan_id`).

        Returns:
            How many trials were added.
        """
        jobs = list(jobs)

        def locked() -> int:
            with self.lock():
                if plan is not None:
                    self.storage.set_study_user_attr(self.study_id, f"plan:{plan}",
                                                     sorted({job.config_hash for job in jobs}))
                return self._enqueue_locked(jobs)

        return self._retry(locked)

    def _enqueue_locked(self, jobs: list[Job], replacing: int | None = None) -> int:
        wanted = {job.config_hash: job for job in jobs}
        busy: set[str] = set()
        for trial in self.storage.get_all_trials(self.study_id, deepcopy=False, states=_ACTIVE):
            config_hash = trial.user_attrs.get("config_hash")
            job = wanted.get(config_hash)
            if trial._trial_id == replacing:
                continue
            if trial.state == TrialState.WAITING and job is not None \
                    and any(trial.user_attrs.get(k) != getattr(job, k) for k in _WHERE):
                self._finish_with(trial._trial_id, EndKind.SUPERSEDED, "queued again to be recorded elsewhere")
                continue
            busy.add(config_hash)
        added = 0
        for job in jobs:
            if job.config_hash in busy:
                continue
            busy.add(job.config_hash)
            template = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=asdict(job))
            self.storage.create_new_trial(self.study_id, template_trial=template)
            added += 1
        return added

    def _finish_with(self, trial_id: int, kind: EndKind, error: str) -> bool:
        """Record why (while the trial can still take attrs), then FAIL it."""
        try:
            self.storage.set_trial_user_attr(trial_id, ENDED_ATTR, kind.value)
            self.storage.set_trial_user_attr(trial_id, "error", error)
            return self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False

    # -- worker ------------------------------------------------------------------------------

    def pop(self, hashes: set[str] | None = None) -> Claim | None:
        """Claim the oldest WAITING trial (of a config in ``hashes``, when given); ``None``
        when there is none. Its heartbeat is recorded before the claim and its owner right
        after, so it is never RUNNING without a heartbeat."""
        for trial in self.trials([TrialState.WAITING]):
            if hashes is not None and trial.user_attrs.get("config_hash") not in hashes:
                continue
            claimed = self._retry(lambda: self._claim(trial._trial_id))
            if claimed:
                return Claim(trial._trial_id, trial.number, Job.from_trial(trial))
        return None

    def _claim(self, trial_id: int) -> bool:
        try:
            liveness.beat(self.storage, trial_id)
            if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return False
        except UpdateFinishedTrialError:  # cancelled or failed meanwhile
            return False
        self.storage.set_trial_system_attr(trial_id, OWNER_ATTR, liveness.owner_record())
        return True

    def beat(self, trial_id: int) -> None:
        """Record that the owner of ``trial_id`` is alive (one try: the next beat retries)."""
        liveness.beat(self.storage, trial_id)

    def set_attr(self, trial_id: int, key: str, value: Any) -> None:
        """A user attr on a trial (e.g. its MLflow run id, outcome or error)."""
        def call() -> None:
            with contextlib.suppress(UpdateFinishedTrialError):
                self.storage.set_trial_user_attr(trial_id, key, value)

        self._retry(call)

    def complete(self, trial_id: int, value: float | None, outcome: str | None = None) -> bool:
        """Mark a claimed trial COMPLETE (after its MLflow run is FINISHED)."""
        def call() -> bool:
            try:
                if outcome is not None:
                    self.storage.set_trial_user_attr(trial_id, "outcome", outcome)
                return self.storage.set_trial_state_values(
                    trial_id, TrialState.COMPLETE, None if value is None else [value])
            except UpdateFinishedTrialError:
                return False

        return self._retry(call)

    def fail(self, trial_id: int, kind: EndKind, error: str) -> bool:
        """Mark a trial FAIL, saying why; ``False`` when it was finished already."""
        return self._retry(lambda: self._finish_with(trial_id, kind, error))

    def requeue(self, trial_id: int, kind: EndKind, error: str, successor: Job | None) -> bool:
        """Put ``successor`` in the queue, then fail trial ``trial_id`` (one step, under the
        lock): a process killed in between leaves the config WAITING, never lost.

        Returns:
            ``False`` when the trial was finished already (someone else recovered it).
        """
        def locked() -> bool:
            with self.lock():
                if self.storage.get_trial(trial_id).state != TrialState.RUNNING:
                    return False
                if successor is not None:
                    self._enqueue_locked([successor], replacing=trial_id)
                return self._finish_with(trial_id, kind, error)

        return self._retry(locked)

    # -- liveness ------------------------------------------------------------------------------

    def lost(self) -> list[FrozenTrial]:
        """RUNNING trials whose owner is gone (:mod:`study.run.liveness`)."""
        return self._retry(lambda: self._liveness.lost(self.storage, self.trials([TrialState.RUNNING])))
