"""The study file (``experiments/NAME.yaml``): :class:`StudySpec`, and where studies are
found (:mod:`study.config.search_path`) and read (:mod:`study.config.yaml_loader`)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from study.config.describe import describe
from study.config.preset import list_presets, load_preset  # noqa: F401 - their historical home
from study.config.run_config import check_keys, config_keys
from study.config.search_path import search_path
from study.config.search_space import SearchSpec
from study.config.yaml_loader import read_yaml
from study.errors import ConfigError, did_you_mean
from study.record.tags import METRICS

#: Columns of a study's runs besides the config keys and the metrics: the arm's name.
RUN_COLUMNS = ("arm",)


class FigureSpec(BaseModel):
    """One figure of ``nfstudy report``: ``kind`` and the columns it plots."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["line", "bar"] = "line"
    x: str
    """A config key (``agc.clipping``), ``arm``, or a metric."""
    y: str = "val/top1"
    """A metric the trainer records (``study.record.tags.METRICS``)."""
    hue: str | None = None
    """A config key or ``arm``: one line (or bar colour) per value."""
    logx: bool = False
    title: str | None = None

    @model_validator(mode="after")
    def _known_columns(self) -> FigureSpec:
        problems = [_unknown_column("x", self.x, (*RUN_COLUMNS, *config_keys(), *METRICS)),
                    _unknown_column("y", self.y, METRICS),
                    _unknown_column("hue", self.hue, (*RUN_COLUMNS, *config_keys()))]
        if problems := [p for p in problems if p]:
            raise ValueError("; ".join(problems))
        return self


def _unknown_column(field: str, name: str | None, allowed: tuple[str, ...]) -> str:
    """What is wrong with a column a report reads (empty when nothing)."""
    if name is None or name in allowed:
        return ""
    kind = "metric" if field == "y" or "/" in name else "column"
    names = METRICS if kind == "metric" else allowed
    return f"{field}: unknown {kind} '{name}'{did_you_mean(name, names)}" + (
        f"; recorded: {', '.join(METRICS)}" if kind == "metric" else "; use a config key or 'arm'")


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
    plugins: list[str] = Field(default_factory=list)
    """Modules that register your models and data sets (:mod:`study.plugins`), imported from
    the study file's folder or ``sys.path`` by every process that runs the study."""
    _source: Path | None = PrivateAttr(None)
    _registered: bool = PrivateAttr(False)

    @property
    def source(self) -> Path | None:
        """The study file this spec was read from (absolute), if any."""
        return self._source

    @property
    def report_key(self) -> str:
        """The study's folder name under ``reports/``: its name for the study the search path
        finds under that name, else the name and a digest of the file's path, so two study
        files with one ``name:`` never overwrite each other's report."""
        if self._registered or self._source is None:
            return self.name
        return f"{self.name}-{hashlib.sha256(str(self._source).encode()).hexdigest()[:8]}"

    @property
    def warnings(self) -> list[str]:
        """What is legal but probably not meant, one line each (the CLI prints them)."""
        notes = []
        if "seeds" not in self.model_fields_set and self.search is None:
            notes.append(f"{self.name}: no 'seeds:' list, so every run trains seed 0 only and the report has no "
                         "interval over seeds; add e.g. 'seeds: [0, 1, 2]' ('seeds: [0]' silences this)")
        return notes

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
        keys = (*RUN_COLUMNS, *config_keys())
        problems = [_unknown_column("metric", self.metric, METRICS)]
        if self.search is not None and self.search.metric is not None:
            problems.append(_unknown_column("search.metric", self.search.metric, METRICS))
        problems += [_unknown_column(where, key, keys) for where in ("scientific", "nuisance")
                     for key in getattr(self, where)]
        if problems := [p for p in problems if p]:
            raise ValueError("; ".join(problems))
        return self

    @property
    def baseline_arm(self) -> str | None:
        return self.baseline or next(iter(self.arms), None)


def study_files() -> dict[str, Path]:
    """``{name: file}`` of the studies on the search path (:mod:`study.config.search_path`):
    the first folder that has a name wins.

    Raises:
        ConfigError: two files of one folder carry the same ``name:``, or one is unreadable.
    """
    return _catalogue()[0]


def hidden_studies() -> dict[Path, Path]:
    """``{hidden file: the file that hides it}``: studies of a later search-path folder
    named like one of an earlier folder (e.g. a local ``quickstart.yaml`` hides the built-in)."""
    return _catalogue()[1]


def _catalogue() -> tuple[dict[str, Path], dict[Path, Path]]:
    files: dict[str, Path] = {}
    hidden: dict[Path, Path] = {}
    for folder in search_path():
        here: dict[str, Path] = {}
        for path in sorted(folder.glob("*.yaml")):
            name = str(read_yaml(path).get("name", path.stem))
            if name in here:
                raise ConfigError(f"two study files are named '{name}': {here[name]} and {path}")
            here[name] = path
        for name, path in here.items():
            if name in files:
                hidden[path] = files[name]
            else:
                files[name] = path
    return files, hidden


def _import_plugins(path: Path, plugins: Any) -> None:
    """Import a study file's ``plugins:`` (its folder first on ``sys.path``), before its
    configs name their models and data sets."""
    if plugins is None:
        return
    if not isinstance(plugins, list) or not all(isinstance(name, str) for name in plugins):
        raise ConfigError(f"{path}: plugins: expected a list of module names, e.g. plugins: [my_models]")
    from study.plugins import use_plugins

    use_plugins(plugins, folder=path.parent)


def list_studies() -> list[str]:
    """Names of the studies on the search path."""
    return sorted(study_files())


def load_study(name_or_path: str | os.PathLike) -> StudySpec:
    """Load and validate a study by name (looked up on the search path), or a study file by path.

    Raises:
        ConfigError: unknown study, unreadable or broken YAML, or an invalid study.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"study file '{path}' does not exist")
    else:
        files = study_files()
        if str(name_or_path) not in files:
            raise ConfigError(f"unknown study '{name_or_path}'{did_you_mean(str(name_or_path), files)}; "
                              f"registered: {', '.join(sorted(files))}")
        path = files[str(name_or_path)]
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    _import_plugins(path, data.get("plugins"))
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: {describe(err, StudySpec)}") from None
    spec._source = path.resolve()
    try:
        registered = study_files().get(spec.name)
    except ConfigError:  # a broken registry does not stop a study given by its path
        registered = None
    spec._registered = registered is not None and registered.resolve() == spec._source
    return spec
