"""A study's expanded plan, kept between ``nfstudy list``/``show`` calls.

Expanding a study validates every config, which imports torch (the model registry): seconds.
``list`` and ``show`` keep each plan they expand under ``$NFSTUDY_HOME/cache/plans/`` and use
it again while nothing it depends on changed: the study file, every preset file on the search
path, nfstudy's own source files, the command line, the current directory and
``$NFSTUDY_EXPERIMENTS`` (their paths, sizes and modification times are the key) and the
top folder of each on-disk data set. Studies with plugins or a ``python:`` data set are
expanded every time (their code decides what they plan). ``run`` always expands afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from study import paths

#: Bump when the cached entry's layout changes.
VERSION = 1
PACKAGE = Path(__file__).resolve().parents[1]
BUILTIN_DATA = ("digits", "cifar10", "cifar100", "imagefolder", "fake")


@dataclass
class CachedRun:
    """What ``list`` and ``show`` print of a planned run (:class:`study.config.expand.PlannedRun`)."""

    arm: str
    point: dict[str, Any]
    seed: int
    config_hash: str
    capped: dict[str, Any]
    name: str


@dataclass
class CachedPlan:
    """What ``list`` and ``show`` print of a study and its plan."""

    name: str
    description: str
    paper: str | None
    grid: list[str]
    warnings: list[str]
    runs: list[CachedRun]
    roots: dict[str, list[int] | None]
    """``{data.root: [mtime_ns, size]}`` of the on-disk data sets, checked again on use."""
    notes: list[str]
    """What a ``--preset``'s caps changed, one line each."""


def fresh_plan(spec, runs: list, notes: Callable[[list, Any], list[str]], preset: str | None) -> CachedPlan:
    """``(spec, runs)`` as ``list`` and ``show`` print them."""
    return CachedPlan(spec.name, spec.description, spec.paper, list(spec.grid), spec.warnings,
                      [CachedRun(r.arm, r.point, r.seed, r.config_hash, r.capped, r.name) for r in runs],
                      {r.config.data.root: _stat(r.config.data.root) for r in runs if r.config.data.on_disk},
                      notes(runs, preset))


def cached_plan(typed: str, compute: Callable[[], tuple[Any, list]], notes: Callable[[list], list[str]],
                options: list[Any]) -> CachedPlan:
    """The plan of study ``typed`` (a name or a path) under the command line ``options``
    (the first is the ``--preset``): from the cache when still valid, else ``compute()``
    (``(spec, runs)``), then cached; ``notes(runs)`` are the preset's cap lines."""
    path = _study_path(typed)
    entry = paths.home() / "cache" / "plans" / f"{_key(path, options)}.json" if path is not None else None
    if entry is not None and entry.is_file():
        try:
            cached = _read(entry)
        except (OSError, ValueError, TypeError, KeyError):
            cached = None
        if cached is not None and all(_stat(root) == stat for root, stat in cached.roots.items()):
            return cached
    spec, runs = compute()
    plan = fresh_plan(spec, runs, lambda planned, _: notes(planned), None)
    user_code = spec.plugins or any(r.config.data.name not in BUILTIN_DATA for r in runs)
    if entry is not None and not user_code:
        _write(entry, plan)
    return plan


def code_fingerprint() -> str:
    """:func:`study.config.code_fingerprint.code_fingerprint`, kept under
    ``$NFSTUDY_HOME/cache/code/`` by the paths, sizes and modification times of nfstudy's
    source files (normalising them takes a second); computed afresh when plugins are loaded."""
    from study.config import code_fingerprint as fingerprint
    from study.plugins import load_plugins, plugin_sources

    load_plugins()
    if plugin_sources():
        return fingerprint.code_fingerprint()
    files = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    key = hashlib.sha256("\n".join(f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in files).encode())
    entry = paths.home() / "cache" / "code" / key.hexdigest()[:24]
    try:
        return entry.read_text().strip()
    except OSError:
        pass
    code = fingerprint.code_fingerprint()
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(code)
    except OSError:
        pass
    return code


_files: dict[str, Path] = {}  # the search path's studies, read once per process (`list` asks for each)


def _study_path(typed: str) -> Path | None:
    from study.config.study_file import study_files

    path = Path(typed)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path.resolve() if path.is_file() else None
    try:
        _files.update(_files or study_files())
    except Exception:  # noqa: BLE001 - the slow path reports it
        return None
    return _files.get(typed)


def _key(study: Path, options: list[Any]) -> str:
    from study.config.search_path import search_path

    folders = [study.parent, Path.cwd(), *search_path()]
    files = [study, *(p for folder in folders for p in sorted((folder / "presets").glob("*.yaml"))),
             *sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)]
    material = [VERSION, str(Path.cwd()), os.environ.get("NFSTUDY_EXPERIMENTS", ""), json.dumps(options, default=str)]
    material += [f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in files]
    return hashlib.sha256("\n".join(map(str, material)).encode()).hexdigest()[:24]


def _stat(root: str | None) -> list[int] | None:
    try:
        info = Path(root).expanduser().stat() if root else None
    except OSError:
        return None
    return [info.st_mtime_ns, info.st_size] if info else None


def _read(entry: Path) -> CachedPlan:
    data = json.loads(entry.read_text())
    return CachedPlan(**{**data, "runs": [CachedRun(**run) for run in data["runs"]]})


def _write(entry: Path, plan: CachedPlan) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = entry.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(plan), default=str))
        temporary.replace(entry)  # a reader never sees half a file
    except OSError:
        pass  # a read-only home: every call expands the plan, as before
