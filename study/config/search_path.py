"""Where studies and presets are found: a search path, first match wins (like ``$PATH``).

1. ``$NFSTUDY_EXPERIMENTS`` (one or more folders, separated by ``os.pathsep``);
2. ``./experiments`` in the current directory, when it exists;
3. the studies and presets that come with nfstudy (the repository's ``experiments/``).

A local study named like a built-in one hides it (``nfstudy list`` says so); the other
built-in studies and presets stay available.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The studies and presets that come with nfstudy.
BUILTIN = Path(__file__).resolve().parents[2] / "experiments"


def search_path() -> list[Path]:
    """The folders searched for studies (``*.yaml``) and presets (``presets/*.yaml``), in
    order, each once, absolute."""
    folders = [Path(p) for p in os.environ.get("NFSTUDY_EXPERIMENTS", "").split(os.pathsep) if p.strip()]
    folders += [Path("experiments"), BUILTIN]
    found: list[Path] = []
    for folder in folders:
        folder = folder.expanduser().resolve()
        if folder.is_dir() and folder not in found:
            found.append(folder)
    return found


def find_file(relative: str | Path, first: Path | None = None) -> Path | None:
    """``relative`` (e.g. ``presets/digits.yaml``) looked up in ``first`` (a study file's
    folder, or the current directory), then in every folder of :func:`search_path`."""
    relative = Path(relative).expanduser()
    if relative.is_absolute():
        return relative if relative.is_file() else None
    for folder in ([first] if first is not None else []) + search_path():
        if (folder / relative).is_file():
            return (folder / relative).resolve()
    return None
