"""Plugins: your own models and data sets, loaded in every process that trains a study.

A plugin is an importable module that registers models (:func:`study.models.register_model`)
and data sets (:func:`study.data.register_dataset`) when imported. nfstudy imports:

- the entry points of the groups ``nfstudy.models`` and ``nfstudy.data`` of every installed
  package (``[project.entry-points."nfstudy.models"]`` in its ``pyproject.toml``);
- the modules of a study file's ``plugins:`` list (its folder is put on ``sys.path`` first)
  and of ``--import MODULE``;
- the module of a ``data.name: python:pkg.module:factory``.

The last two travel to child processes (local workers, torchrun ranks) in the environment:
:data:`PLUGINS_ENV` (comma-separated modules) and :data:`PATH_ENV` (folders to import them
from). A worker on another machine imports them through its own ``--import`` or entry points.
Each plugin's source enters the code fingerprint (:mod:`study.config.code_fingerprint`), so
editing it marks the runs it trained stale.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

from study.errors import ConfigError

#: Modules imported by ``plugins:``, ``--import`` or a ``python:`` data set, for child processes.
PLUGINS_ENV = "NFSTUDY_PLUGINS"
#: Folders those modules are imported from (``os.pathsep``-separated), for child processes.
PATH_ENV = "NFSTUDY_PLUGIN_PATH"
#: Entry-point groups whose modules every process imports.
GROUPS = ("nfstudy.models", "nfstudy.data")

_loaded: dict[str, ModuleType] = {}
_state = {"entry_points": False, "loading": False}


def use_plugins(modules: list[str], folder: str | os.PathLike | None = None) -> None:
    """Import ``modules`` now (from ``folder`` first, if given) and export them to the child
    processes this one starts.

    Raises:
        ConfigError: a module that cannot be imported (one line naming it).
    """
    if folder is not None:
        _add_path(str(Path(folder).resolve()))
    for name in modules:
        import_plugin(name)


def import_plugin(name: str) -> ModuleType:
    """Import plugin module ``name`` (once), record its source for the fingerprint and export
    it to child processes.

    Raises:
        ConfigError: the module is not importable, or raises while importing.
    """
    if not isinstance(name, str) or not name.strip() or name.startswith("."):
        raise ConfigError(f"plugins: {name!r} is not a module name (e.g. my_models or mypkg.models)")
    if name in _loaded:
        return _loaded[name]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"plugin {name!r}: cannot import it ({err}); put it on PYTHONPATH, install its "
                          "package, or list it in the study file's folder") from None
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - a plugin's own bug, named in one line
        raise ConfigError(f"plugin {name!r} failed while importing: {type(err).__name__}: {err}") from None
    _loaded[name] = module
    exported = [m for m in os.environ.get(PLUGINS_ENV, "").split(",") if m]
    if name not in exported:
        os.environ[PLUGINS_ENV] = ",".join([*exported, name])
    return module


def load_plugins() -> None:
    """Import every plugin this process should have: entry points, then :data:`PLUGINS_ENV`.
    Cheap after the first call; the registries call it before every lookup."""
    if _state["loading"]:
        return
    _state["loading"] = True
    try:
        for folder in os.environ.get(PATH_ENV, "").split(os.pathsep):
            if folder and folder not in sys.path:
                sys.path.insert(0, folder)
        if not _state["entry_points"]:
            _state["entry_points"] = True
            for group in GROUPS:
                for point in metadata.entry_points(group=group):
                    if point.module not in _loaded:
                        point.load()
                        _loaded[point.module] = sys.modules[point.module]
        for name in os.environ.get(PLUGINS_ENV, "").split(","):
            if name and name not in _loaded:
                import_plugin(name)
    finally:
        _state["loading"] = False


def plugin_sources() -> list[Path]:
    """The ``*.py`` files of the loaded plugins (a package: every file under its folder)."""
    files: set[Path] = set()
    for module in _loaded.values():
        path = getattr(module, "__file__", None)
        if path is None:
            continue
        path = Path(path).resolve()
        if path.name == "__init__.py":
            files.update(p for p in path.parent.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py":
            files.add(path)
    return sorted(files)


def loaded_plugins() -> list[str]:
    """The plugin modules this process imported, by name."""
    return sorted(_loaded)


def _add_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)
    listed = [f for f in os.environ.get(PATH_ENV, "").split(os.pathsep) if f]
    if folder not in listed:
        os.environ[PATH_ENV] = os.pathsep.join([*listed, folder])
