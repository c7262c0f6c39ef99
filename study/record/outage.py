"""Riding out a database or tracking server that goes away for a while.

A storage or tracking call that fails because its server is unreachable, restarting or
overloaded is retried with exponential backoff and jitter, for up to :func:`outage_s`
seconds in all (``$NFSTUDY_OUTAGE_S``, default 300); then :class:`~study.errors.TrackingError`
says, in one line, what could not be reached and for how long. Any other error (a bug, a
constraint, a missing table) raises at once: retrying cannot fix it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

from study.errors import TrackingError
from study.redaction import first_line

T = TypeVar("T")

#: Default seconds an outage may last before a call gives up.
OUTAGE_S = 300.0
#: First and longest pause between two attempts (seconds); each pause doubles, ±50% jitter.
FIRST_PAUSE_S, LONGEST_PAUSE_S = 0.5, 15.0
#: Words of the driver and HTTP messages that mean "not reachable now" (the exception types
#: differ by driver and are often wrapped: Optuna's StorageInternalError, MlflowException).
_TRANSIENT_WORDS = (
    "could not connect", "connection refused", "connection reset", "server closed the connection",
    "terminating connection", "connection is closed", "connection timeout", "timed out", "timeout expired",
    "the database system is starting up", "the database system is shutting down", "cannot connect now",
    "the database system is in recovery mode", "ssl syscall error", "consuming input failed",
    "max retries exceeded", "failed to establish a new connection", "remotedisconnected",
    "503", "502", "504", "temporarily_unavailable", "too many connections", "database is locked",
)


def outage_s() -> float:
    """Seconds a call keeps retrying through an outage (``$NFSTUDY_OUTAGE_S``, default 300)."""
    try:
        return max(0.0, float(os.environ.get("NFSTUDY_OUTAGE_S", OUTAGE_S)))
    except ValueError:
        return OUTAGE_S


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` (or an error it wraps) says the server is unreachable for now."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        name = type(err).__name__
        if name in ("OperationalError", "InterfaceError") and "no such table" not in str(err):
            return True  # SQLAlchemy's and the drivers' names for a lost or refused connection
        text = str(err).lower()
        if any(word in text for word in _TRANSIENT_WORDS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def retry(call: Callable[[], T], what: str, *, deadline_s: float | None = None,
          give_up: Callable[[Exception], bool] | None = None) -> T:
    """``call()``, retried while it fails with a transient error, for at most ``deadline_s``
    seconds (default :func:`outage_s`).

    Args:
        call: the storage or tracking call (idempotent, or safe to repeat).
        what: names the server in the message, e.g. ``"--storage 'postgresql://u@db/q'"``.
        give_up: re-raise a transient error at once when this says so (e.g. the tracking
            server stopped answering altogether: the caller spools instead of waiting).

    Raises:
        TrackingError: the outage outlasted the bound (one line: what, how long, the last error).
        Exception: a non-transient error of ``call``, at once.
    """
    bound = outage_s() if deadline_s is None else deadline_s
    start, pause = time.monotonic(), FIRST_PAUSE_S
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - classified below; others re-raised as they are
            if not is_transient(err) or (give_up is not None and give_up(err)):
                raise
            waited = time.monotonic() - start
            if waited >= bound:
                raise TrackingError(f"{what} unreachable for {waited:.0f} s (limit $NFSTUDY_OUTAGE_S="
                                    f"{bound:.0f}): {first_line(err)}") from err
            time.sleep(min(pause * random.uniform(0.5, 1.5), max(0.0, bound - waited) + 0.01))
            pause = min(2 * pause, LONGEST_PAUSE_S)
