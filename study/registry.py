"""Registered studies: finds ``experiments/*.yaml``, expands a study to its runs.

A run's config is merged in this order, later wins: ``base`` preset → ``fixed`` → arm →
grid point → seed → ``--set`` overrides. Every expanded config is validated before
anything runs, and identified by :meth:`RunConfig.config_hash`.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from study.errors import ConfigError, did_you_mean
from study.spec import RunConfig, StudySpec, _describe, flatten, make_config


def experiments_dir() -> Path:
    """``$NFSTUDY_EXPERIMENTS``, else ``./experiments`` when it exists, else the repository's."""
    if os.environ.get("NFSTUDY_EXPERIMENTS"):
        return Path(os.environ["NFSTUDY_EXPERIMENTS"]).resolve()
    local = Path("experiments")
    if local.is_dir():
        return local.resolve()
    return Path(__file__).resolve().parent.parent / "experiments"


def read_yaml(path: Path) -> dict[str, Any]:
    """``yaml.safe_load`` a file that must hold a mapping; errors name the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: broken YAML: {problem}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def _study_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(experiments_dir().glob("*.yaml")):
        data = read_yaml(path)
        name = data.get("name", path.stem)
        if name in files:
            raise ConfigError(f"two study files are named '{name}': {files[name]} and {path}")
        files[name] = path
    return files


def list_studies() -> list[str]:
    """Names of the registered studies."""
    return sorted(_study_files())


def load_study(name_or_path: str | os.PathLike) -> StudySpec:
    """Load and validate a registered study by name, or a study file by path.

    Raises:
        ConfigError: unknown study, broken YAML, or an invalid study.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"study file '{path}' does not exist")
    else:
        files = _study_files()
        if str(name_or_path) not in files:
            raise ConfigError(f"unknown study '{name_or_path}'{did_you_mean(str(name_or_path), files)}; "
                              f"registered: {', '.join(sorted(files))}")
        path = files[str(name_or_path)]
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {_describe(err, StudySpec)}") from None


def list_presets() -> list[str]:
    return sorted(p.stem for p in (experiments_dir() / "presets").glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset's overrides as ``{dotted.key: value}`` (nested mappings are flattened)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = experiments_dir() / "presets" / f"{name_or_path}.yaml"
    elif not path.is_absolute():
        path = experiments_dir() / path
    if not path.is_file():
        raise ConfigError(f"unknown preset '{name_or_path}'; available: {', '.join(list_presets())}")
    return flatten(read_yaml(path))


@dataclass(frozen=True)
class PlannedRun:
    """One expanded run of a study: its config plus where in the study it came from."""

    config: RunConfig
    arm: str
    point: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def config_hash(self) -> str:
        return self.config.config_hash()

    @property
    def name(self) -> str:
        parts = [self.arm] if self.arm else []
        parts += [f"{k.split('.')[-1]}={v}" for k, v in self.point.items()]
        parts.append(f"seed={self.seed}")
        return "/".join(parts)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["agc.clipping=0.02", "agc.clipping=null"]`` → dotted overrides; values are YAML scalars."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected key=value, e.g. --set agc.clipping=0.02")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set '{item}': value '{text}' is not valid YAML") from None
    if "seed" in overrides:
        raise ConfigError("--set seed: seeds come from the study's 'seeds:' list (arms stay paired)")
    return overrides


def plan(
    spec: StudySpec, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> list[PlannedRun]:
    """Expand a study into its runs (arms × grid × seeds), validating every config.

    Runs whose configs resolve to the same hash are kept once (the first).

    Raises:
        ConfigError: naming the run and key of the first invalid config.
    """
    base = load_preset(preset or spec.base) if (preset or spec.base) else {}
    arms = spec.arms or {"": {}}
    axes = list(spec.grid)
    points = [dict(zip(axes, values)) for values in itertools.product(*spec.grid.values())]
    runs, seen = [], set()
    for arm, arm_overrides in arms.items():
        for point in points:
            for seed in spec.seeds:
                merged = {**base, **spec.fixed, **arm_overrides, **point, "seed": seed}
                merged.update(overrides or {})
                where = f"{spec.name} [{arm or 'run'} {point or ''} seed={seed}]".replace(" {}", "")
                run = PlannedRun(make_config(merged, where=where), arm, point)
                if run.config_hash not in seen:
                    seen.add(run.config_hash)
                    runs.append(run)
    return runs


def expand(
    spec: StudySpec, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> list[RunConfig]:
    """The RunConfigs of a study (see :func:`plan` for their arm, grid point and seed)."""
    return [run.config for run in plan(spec, preset, overrides)]
