"""Scale presets (``experiments/presets/NAME.yaml``): the overrides a study starts from, and
the caps that make ``--preset`` own its scale.

A preset is a mapping of dotted config keys. Its optional ``caps:`` section bounds numeric
keys (``train.steps: 4``): when a preset is chosen with ``--preset``, every run's value is
lowered to the cap whatever the study's ``fixed``, arms or grid say (a value of ``None``,
"no limit", becomes the cap), so ``--preset smoke`` is a smoke run for every study. A
study's own ``base:`` is not capped: what the study file says is what it asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.config.run_config import check_keys, flatten
from study.config.search_path import find_file, search_path
from study.config.yaml_loader import read_yaml
from study.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A preset file: its overrides and its caps, both ``{dotted.key: value}``."""

    name: str
    path: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    caps: dict[str, int | float] = field(default_factory=dict)


def list_presets() -> list[str]:
    """Names of the presets on the search path."""
    return sorted({p.stem for folder in search_path() for p in (folder / "presets").glob("*.yaml")})


def find_preset(name_or_path: str, relative_to: Path | None = None) -> Path:
    """The file of a preset: a name (``smoke``) is looked up as ``presets/NAME.yaml`` on the
    search path; a path (``presets/digits.yaml``) relative to ``relative_to`` first (a
    study file's folder), then on the search path.

    Raises:
        ConfigError: no such preset.
    """
    path = Path(name_or_path)
    found = find_file(path if path.suffix else Path("presets") / f"{name_or_path}.yaml",
                      relative_to if path.suffix else None)
    if found is None:
        raise ConfigError(f"unknown preset '{name_or_path}'; available: {', '.join(list_presets())}")
    return found


def read_preset(name_or_path: str, relative_to: Path | None = None) -> Preset:
    """Read and check a preset (see :func:`find_preset` for where it is looked up).

    Raises:
        ConfigError: no such preset, broken YAML, an unknown key, or a cap that is not a number.
    """
    path = find_preset(name_or_path, relative_to)
    data = read_yaml(path)
    caps = data.pop("caps", None) or {}
    if not isinstance(caps, dict):
        raise ConfigError(f"{path}: caps must map config keys to numbers (got {caps!r})")
    caps = flatten(caps)
    overrides = flatten(data)
    check_keys(list(overrides) + list(caps), str(path))
    odd = [f"{k}={v!r}" for k, v in caps.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if odd:
        raise ConfigError(f"{path}: caps must be numbers (got {', '.join(odd)})")
    return Preset(path.stem, path, overrides, caps)


def load_preset(name_or_path: str, relative_to: Path | None = None) -> dict[str, Any]:
    """A preset's overrides as ``{dotted.key: value}`` (nested mappings are flattened)."""
    return read_preset(name_or_path, relative_to).overrides
