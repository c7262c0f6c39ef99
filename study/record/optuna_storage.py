"""Opening an Optuna storage (the run queue, searches) safely from many processes.

- **Journal file** (a path): appends under an ``fcntl`` lock, which the kernel releases when
  its holder dies (Optuna's own lock files stall others for 30 s after a ``kill -9``), and a
  torn last line (a crash or a full disk mid-append) is cut off under that lock before the
  next append, so it never breaks the log for every reader. Not on NFS (``fcntl`` locks are
  unreliable there).
- **Journal file on a shared filesystem** (``journal+nfs:///PATH``, e.g. NFS on a cluster):
  the same journal, but every lock is :class:`NfsLock`, Optuna's ``JournalFileOpenLock``
  (``open(O_CREAT | O_EXCL)``, atomic on NFSv3 and later), whose holder keeps the lock
  file's mtime fresh; a lock left by a dead holder is broken after :data:`NFS_GRACE_S`.
- **SQLite / PostgreSQL** (Optuna RDB storage): URLs go through
  :func:`study.record.stores.database_url` (driver, connect and statement timeouts). Schema
  creation is serialised: an ``fcntl`` lock beside a SQLite file, and on PostgreSQL a retry
  when another process created the same tables at the same moment, so a reader opening a
  store that a search is creating (``nfstudy report``, ``nfstudy ui --optuna``) never fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from study.errors import ConfigError, TrackingError
from study.record import stores
from study.redaction import first_line, redact

optuna.logging.set_verbosity(optuna.logging.WARNING)

_ALLOWED = ("postgresql://USER@HOST:PORT/DB, sqlite:///PATH, the path of a journal file, or "
            "journal+nfs:///PATH (a journal on a shared filesystem)")
#: URL prefix of a journal file on a shared filesystem (NFS): locks that are safe there.
NFS_PREFIX = "journal+nfs://"
#: Seconds after which an NFS lock file that nobody refreshed is taken for abandoned (its
#: holder died); a holder touches it every ``NFS_GRACE_S / 6``.
NFS_GRACE_S = 30


def kind(url: str) -> str:
    """``postgresql``, ``sqlite`` or ``journal`` (a path, or ``journal+nfs:///PATH``).

    Raises:
        ConfigError: any other kind of URL.
    """
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("", "file") or url.startswith(NFS_PREFIX):
        return "journal"
    raise ConfigError(f"--storage '{redact(url)}': unsupported; allowed: {_ALLOWED}")


def on_nfs(url: str) -> bool:
    """Whether ``url`` names a journal on a shared filesystem (``journal+nfs:///PATH``)."""
    return url.startswith(NFS_PREFIX)


def local_file(url: str) -> Path | None:
    """The file of a journal or SQLite storage (``None`` for a database server)."""
    found = kind(url)
    if found == "journal":
        return Path(url.removeprefix(NFS_PREFIX).removeprefix("file://")).expanduser().resolve()
    if found == "sqlite":
        return Path(url.removeprefix("sqlite:///")).expanduser().resolve()
    return None


class _Holdable:
    """``with lock.held():`` for a lock with ``acquire``/``release``."""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            self.release()  # type: ignore[attr-defined]


class FlockLock(_Holdable):
    """An ``fcntl.flock`` lock on ``path``, released by the kernel when the holder dies. Has
    the ``acquire``/``release`` interface of Optuna's journal file locks."""

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



class NfsLock(_Holdable, JournalFileOpenLock):
    """Optuna's NFS-safe lock (an ``O_EXCL`` lock file, broken after :data:`NFS_GRACE_S` of
    silence), whose holder touches the file every few seconds from a thread, so a long
    hold (filling a queue of 1,000 configs) is never taken for a dead one. Same interface
    as :class:`FlockLock`."""

    def __init__(self, path: Path):
        super().__init__(str(path), grace_period=NFS_GRACE_S)
        self._stop = threading.Event()

    def acquire(self) -> bool:
        super().acquire()
        self._stop = threading.Event()
        threading.Thread(target=self._refresh, args=(self._stop,), name="nfstudy-nfs-lock", daemon=True).start()
        return True

    def _refresh(self, stop: threading.Event) -> None:
        while not stop.wait(NFS_GRACE_S / 6):
            with contextlib.suppress(OSError):
                os.utime(self._lock_file)

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):  # broken by another process: nothing left to release
            super().release()



def lock_beside(path: Path, purpose: str, nfs: bool = False) -> FlockLock | NfsLock:
    """The lock file ``<path>.<purpose>.lock`` (created on first use; ``nfs``: an
    :class:`NfsLock`, whose file exists only while it is held)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if nfs:
        return NfsLock(path.with_name(f"{path.name}.{purpose}"))  # Optuna adds ".lock"
    return FlockLock(path.with_name(f"{path.name}.{purpose}.lock"))


class _RepairingJournal(JournalFileBackend):
    """A journal whose appends first cut off a torn last line (under the append lock)."""

    def __init__(self, path: Path, nfs: bool = False):
        self._flock = NfsLock(path) if nfs else FlockLock(path.with_name(path.name + ".lock"))
        super().__init__(str(path), lock_obj=self._flock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with self._flock.held():
            repair_journal(Path(self._file_path))
            # One line per log, as JournalFileBackend writes them.
            payload = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
            with open(self._file_path, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())


def repair_journal(path: Path) -> int:
    """Truncate ``path`` after its last complete line (call under the journal's lock).

    Returns:
        How many bytes were cut off (0 for a sound journal).
    """
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, block, end = 0, 1 << 16, size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


def open_storage(url: str, *, create: bool) -> BaseStorage:
    """Open the Optuna storage at ``url`` (``create=True``: and create its schema).

    Raises:
        ConfigError: an unsupported URL.
        TrackingError: the storage cannot be reached, or (``create=False``) does not exist.
    """
    found = kind(url)
    path = local_file(url)
    if found == "journal":
        assert path is not None
        if not create and not path.is_file():
            raise TrackingError(f"--storage '{url}': no queue journal there; fill it first with `nfstudy enqueue` (or `nfstudy run`)")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(_RepairingJournal(path, nfs=on_nfs(url)))
    try:
        if path is not None:  # SQLite: one process creates the schema, the others wait for it
            with lock_beside(path, "schema").held():
                return _rdb(url, create)
        return _rdb(url, create)
    except TrackingError:
        raise
    except Exception as err:  # SQLAlchemy raises many types for an unusable database
        raise TrackingError(f"--storage '{redact(url)}' is not usable: {first_line(err)}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    """One pooled connection per process (a moment's more for its heartbeat thread or a
    lock), so a fleet of workers fits a server's ``max_connections`` (100 by default)."""
    if kind(url) == "postgresql":
        return {"pool_pre_ping": True, "pool_size": 1, "max_overflow": 4}
    return {"pool_pre_ping": True}


def _rdb(url: str, create: bool) -> RDBStorage:
    for attempt in range(5):
        try:
            return RDBStorage(stores.database_url(url), engine_kwargs=_engine_kwargs(url),
                              skip_table_creation=not create)
        except Exception as err:
            # PostgreSQL: another process created the same tables at this moment (a unique
            # violation, or "already exists"); once it is done, opening again finds them.
            text = str(err)
            if create and attempt < 4 and any(w in text for w in ("UniqueViolation", "IntegrityError",
                                                                  "already exists")):
                time.sleep(0.3 * (attempt + 1))
                continue
            raise
    raise AssertionError("unreachable")
