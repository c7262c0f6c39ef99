"""Child process groups that die with their parent: torchrun and its ranks, ``nfstudy ui``'s
servers and the workers they fork.

Each child starts as the leader of a new session (so a terminal's Ctrl-C reaches only
nfstudy, which stops it in order), and a small watcher process, started beside it, waits
for either the group to end or this process to die: on a ``kill -9`` of nfstudy (or an
out-of-memory kill) it sends the whole group SIGTERM, then SIGKILL after
:data:`GRACE_S`. A parent-death signal (``PR_SET_PDEATHSIG``) would reach the leader
only, not the processes it forked, and is unsafe to set from a threaded parent; a child
that starts processes in sessions of their own (torchrun's ranks) sets it in each of them
itself (:func:`die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any

#: Seconds a group gets between SIGTERM and SIGKILL.
GRACE_S = 10.0
_WATCHER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)   # a terminal's Ctrl-C is for nfstudy, which stops the group
signal.signal(signal.SIGTERM, signal.SIG_IGN)
parent, group, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def alive():
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
while alive() and os.getppid() == parent:
    time.sleep(0.5)
for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
    if not alive():
        break
    os.killpg(group, sig)
    deadline = time.monotonic() + wait
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
"""


def start_group(command: list[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(command, **popen)`` as the leader of a new process group that is
    stopped (SIGTERM, then SIGKILL) if this process dies first.

    Returns:
        The leader's ``Popen``; stop the group with :func:`stop_group`.
    """
    proc = subprocess.Popen(command, start_new_session=True, **popen)
    subprocess.Popen([sys.executable, "-S", "-c", _WATCHER, str(os.getpid()), str(proc.pid), str(GRACE_S)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """SIGTERM the group led by ``proc``, SIGKILL after ``grace_s``, and reap the leader."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        if proc.poll() is not None and not _group_alive(proc.pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Have the kernel send this process ``signum`` when its parent dies (Linux's
    ``PR_SET_PDEATHSIG``; a no-op elsewhere). Call it in the child itself, first thing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signum), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request: no signal will come
        os.kill(os.getpid(), signum)
