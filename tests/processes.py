"""What runs on this machine, read from /proc: for tests that kill a parent and check that
its children went with it (tests/ is on sys.path under pytest)."""

from __future__ import annotations

from pathlib import Path


def _stats() -> list[tuple[int, list[str]]]:
    """``(pid, fields after the command name)`` of every process: state, ppid, pgid, …"""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found.append((int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()))
        except OSError:  # it ended while we looked
            continue
    return found


def cmdline(pid: int) -> bytes:
    """The command line of ``pid`` (NUL-separated), or ``b""`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    return [child for child, fields in _stats() if int(fields[1]) == pid]


def group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    return [pid for pid, fields in _stats() if int(fields[2]) == pgid and fields[0] != "Z"]
