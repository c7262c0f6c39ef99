"""The study file (``experiments/NAME.yaml``): :class:`StudySpec`, and where studies and
presets are found and read (``yaml.safe_load``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from study.config.describe import describe
from study.config.run_config import check_keys, flatten
from study.config.search_space import SearchSpec
from study.errors import ConfigError, did_you_mean


class FigureSpec(BaseModel):
    """One figure of ``nfstudy report``: ``kind`` and the columns it plots."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["line", "bar"] = "line"
    x: str
    y: str = "val/top1"
    hue: str | None = None
    style: str | None = None
    logx: bool = False
    title: str | None = None



_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class StudySpec(BaseModel):
    """A study file (``experiments/NAME.yaml``): arms × grid × seeds of RunConfig overrides."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    paper: str | None = None
    """Key into ``analysis.reference`` for the paper's claims."""
    base: str | None = None
    """Preset this study starts from (``presets/digits.yaml``, or a preset name)."""
    fixed: dict[str, Any] = Field(default_factory=dict)
    arms: dict[str, dict[str, Any]] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0])
    metric: str = "val/top1"
    baseline: str | None = None
    """Arm that paired differences are taken against (default: the first arm)."""
    scientific: list[str] = Field(default_factory=list)
    """Keys the study ablates (for the report); default: the arm and grid keys."""
    nuisance: list[str] = Field(default_factory=list)
    """Keys varied only to average over (default: ``seed``)."""
    figures: list[FigureSpec] = Field(default_factory=list)
    search: SearchSpec | None = None
    """What ``nfstudy search`` searches (Optuna); ``None``: the study is not searchable."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"study name '{name}' must be lower-case letters, digits, '-' or '_'")
        return name

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("seeds must list at least one seed")
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers (got {seeds})")
        return seeds

    @field_validator("grid")
    @classmethod
    def _valid_grid(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid axis '{key}' is empty; give it at least one value")
        return grid

    @model_validator(mode="after")
    def _known_keys(self) -> StudySpec:
        sources = {"fixed": self.fixed, "grid": self.grid}
        sources.update({f"arms.{arm}": over for arm, over in self.arms.items()})
        for where, mapping in sources.items():
            if "seed" in mapping:
                raise ValueError(f"{where}: 'seed' is set by the study's 'seeds:' list, not here")
            check_keys(list(mapping), f"{self.name}: {where}")
        if self.baseline is not None and self.baseline not in self.arms:
            raise ValueError(f"baseline '{self.baseline}' is not one of the arms {list(self.arms)}")
        return self

    @property
    def baseline_arm(self) -> str | None:
        return self.baseline or next(iter(self.arms), None)


def experiments_dir() -> Path:
    """``$NFSTUDY_EXPERIMENTS``, else ``./experiments`` when it exists, else the repository's."""
    if os.environ.get("NFSTUDY_EXPERIMENTS"):
        return Path(os.environ["NFSTUDY_EXPERIMENTS"]).resolve()
    local = Path("experiments")
    if local.is_dir():
        return local.resolve()
    return Path(__file__).resolve().parents[2] / "experiments"


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
        raise ConfigError(f"{path}: {describe(err, StudySpec)}") from None


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
