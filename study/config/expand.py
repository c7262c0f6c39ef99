"""Grid expansion: a study → its runs (arms × grid × seeds), with ``--set`` overrides.

A run's config is merged in this order, later wins: ``base`` preset → ``fixed`` → arm →
grid point → seed → the caps of a ``--preset`` → ``--set`` overrides. Every expanded config
is validated before anything runs, and identified by :meth:`RunConfig.config_hash`.

``--set`` on a grid key replaces that axis by the one value given (the runs are named
after it); ``--sweep key=a,b`` (Hydra's comma list) replaces that axis by those values, or
adds it to the grid when the study has no such axis; ``--set`` or ``--sweep`` on a key that
an arm sets is refused, since it would make the arms one run under several names.
``--seeds 0-4`` replaces the study's seeds and ``--add-seeds N`` appends N new ones; every
arm and grid point gets the same seeds, so the arms stay paired. An on-disk data set's contents enter each run's identity
through ``data.id`` (:mod:`study.data.fingerprint`), filled in here when the study leaves
it unset.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from study.config.preset import Preset, read_preset
from study.config.run_config import RunConfig, make_config
from study.config.study_file import StudySpec
from study.config.yaml_loader import load_yaml
from study.errors import ConfigError


@dataclass(frozen=True)
class PlannedRun:
    """One expanded run of a study: its config plus where in the study it came from."""

    config: RunConfig
    arm: str
    point: dict[str, Any] = field(default_factory=dict)
    capped: dict[str, Any] = field(default_factory=dict)
    """``{key: the value the study asked for}`` of the keys a ``--preset``'s caps lowered."""

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
    """``["agc.clipping=0.02", "sam.mode=off"]`` → dotted overrides; values are YAML 1.2
    scalars (``null``, ``true``, ``0.02``; ``off`` stays a string)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected key=value, e.g. --set agc.clipping=0.02")
        overrides[key.strip()] = _scalar(text, f"--set '{item}'")
    if "seed" in overrides:
        raise ConfigError("--set seed: seeds come from the study's 'seeds:' list (arms stay paired)")
    return overrides


def parse_sweeps(items: list[str] | None) -> dict[str, list[Any]]:
    """``["agc.clipping=0.01,0.02"]`` → ``{"agc.clipping": [0.01, 0.02]}``: Hydra's comma
    lists, each value a YAML scalar.

    Raises:
        ConfigError: not ``key=v1,v2``, a repeated key or value, or ``seed`` (use ``--seeds``).
    """
    sweeps: dict[str, list[Any]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ConfigError(f"--sweep '{item}': expected KEY=V1,V2,..., e.g. --sweep agc.clipping=0.01,0.02")
        if key == "seed":
            raise ConfigError("--sweep seed: give seeds with --seeds 0-4 (or --add-seeds N): arms stay paired")
        if key in sweeps:
            raise ConfigError(f"--sweep {key}: given twice; list every value once: --sweep {key}=V1,V2")
        values = [_scalar(part.strip(), f"--sweep '{item}'") for part in text.split(",")]
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"--sweep '{item}': a value is listed twice")
        sweeps[key] = values
    return sweeps


def parse_seeds(text: str | None) -> list[int] | None:
    """``"0-4"`` → ``[0, 1, 2, 3, 4]``; ``"0,2,5"`` → ``[0, 2, 5]``; ranges and lists mix
    (``"0-2,7"``). ``None`` → ``None``.

    Raises:
        ConfigError: anything but non-negative integers and ascending ranges.
    """
    if text is None:
        return None
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()) or (dash and int(high) < int(low)):
            raise ConfigError(f"--seeds {text}: expected seeds like 0-4 or 0,1,2 (non-negative integers)")
        seeds += range(int(low), int(high) + 1) if dash else [int(low)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text}: a seed is listed twice")
    return seeds


def with_axes(spec: StudySpec, sweeps: dict[str, list[Any]] | None = None, seeds: list[int] | None = None,
              add_seeds: int = 0) -> StudySpec:
    """``spec`` with ``--sweep`` axes (added, or replacing the study's), ``--seeds`` and
    ``--add-seeds`` applied: the spec the command line describes.

    Raises:
        ConfigError: a swept key that is not a config key or that an arm sets.
    """
    if not sweeps and seeds is None and not add_seeds:
        return spec
    if add_seeds < 0:
        raise ConfigError(f"--add-seeds {add_seeds}: must be a positive number of seeds")
    sweeps = sweeps or {}
    from study.config.run_config import check_keys

    check_keys(list(sweeps), "--sweep")
    _refuse_arm_keys(spec, sweeps, "--sweep")
    chosen = list(seeds if seeds is not None else spec.seeds)
    chosen += range(max(chosen) + 1, max(chosen) + 1 + add_seeds)
    return spec.model_copy(update={"grid": {**spec.grid, **sweeps}, "seeds": chosen})


def select(runs: list[PlannedRun], only: list[str] | None) -> list[PlannedRun]:
    """The runs ``--only`` names (each entry an arm, a config hash or a run's # in
    ``nfstudy show``); all of them when ``only`` is empty.

    Raises:
        ConfigError: an entry that names no run.
    """
    if not only:
        return runs
    chosen: set[int] = set()
    for entry in only:
        hits = {i for i, run in enumerate(runs) if entry in (run.arm, run.config_hash, str(i))}
        if not hits:
            arms = sorted({run.arm for run in runs if run.arm})
            raise ConfigError(f"--only {entry}: no run has that arm, config hash or # (0…{len(runs) - 1})"
                              + (f"; arms: {', '.join(arms)}" if arms else ""))
        chosen |= hits
    return [run for i, run in enumerate(runs) if i in chosen]


def _scalar(text: str, where: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: value '{text}' is not valid YAML") from None


def study_base(spec: StudySpec, preset: str | None = None) -> Preset | None:
    """The preset a study's runs start from: ``preset`` (``--preset``, looked up from the
    current directory and the search path), else the study's ``base`` (looked up from the
    study file's folder, then the search path). Only a ``--preset`` brings its caps."""
    if preset is not None:
        return read_preset(preset, Path.cwd())
    if spec.base is None:
        return None
    base = read_preset(spec.base, spec.source.parent if spec.source is not None else None)
    return Preset(base.name, base.path, base.overrides)


def apply_caps(merged: dict[str, Any], caps: dict[str, int | float]) -> dict[str, Any]:
    """Lower each capped key of ``merged`` to its cap (a missing or ``None`` value, "no
    limit", becomes the cap); returns ``{key: the value before}`` of the keys it changed."""
    if not caps:
        return {}
    defaults = RunConfig().flat()
    changed = {}
    for key, cap in caps.items():
        value = merged.get(key, defaults.get(key))
        if value is None or (isinstance(value, (int, float)) and value > cap):
            changed[key] = value
            merged[key] = cap
    return changed


def check_overrides(spec: StudySpec, overrides: dict[str, Any]) -> dict[str, list[Any]]:
    """The study's grid with each ``--set`` grid key's axis replaced by the value set.

    Raises:
        ConfigError: a ``--set`` key that an arm sets.
    """
    _refuse_arm_keys(spec, overrides, "--set")
    return {key: [overrides[key]] if key in overrides else values for key, values in spec.grid.items()}


def _refuse_arm_keys(spec: StudySpec, keys, option: str) -> None:
    for key in keys:
        setters = [f"{arm}: {values[key]!r}" for arm, values in spec.arms.items() if key in values]
        if setters:
            raise ConfigError(
                f"{option} {key}: the arms of {spec.name} set it ({', '.join(setters)}), so {option} would make "
                "them one run under several names; drop it, or change the arms in a copy of the study file and "
                "run that file")


def plan(
    spec: StudySpec, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> list[PlannedRun]:
    """Expand a study into its runs (arms × grid × seeds), validating every config.

    Runs whose configs resolve to the same hash are kept once (the first).

    Raises:
        ConfigError: naming the run and key of the first invalid config, or a ``--set``
            on a key the arms set.
    """
    overrides = overrides or {}
    base = study_base(spec, preset)
    grid = check_overrides(spec, overrides)
    arms = spec.arms or {"": {}}
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    fingerprints: dict[tuple, str | None] = {}
    runs, seen = [], set()
    for arm, arm_overrides in arms.items():
        for point in points:
            for seed in spec.seeds:
                merged = {**(base.overrides if base else {}), **spec.fixed, **arm_overrides, **point, "seed": seed}
                capped = apply_caps(merged, base.caps if base else {})
                merged.update(overrides)
                capped = {key: value for key, value in capped.items() if key not in overrides}
                where = f"{spec.name} [{arm or 'run'} {point or ''} seed={seed}]".replace(" {}", "")
                config = _with_data_id(make_config(merged, where=where), fingerprints)
                run = PlannedRun(config, arm, point, capped)
                if run.config_hash not in seen:
                    seen.add(run.config_hash)
                    runs.append(run)
    return runs


def _with_data_id(config: RunConfig, fingerprints: dict[tuple, str | None]) -> RunConfig:
    """``config`` with ``data.id`` set to its on-disk data set's fingerprint, unless set."""
    data = config.data
    if data.id is not None or not data.on_disk:
        return config
    key = (data.name, data.root, data.download)
    if key not in fingerprints:
        from study.data.fingerprint import data_fingerprint  # torch is imported only when needed

        fingerprints[key] = data_fingerprint(data.name, data.root, download=data.download)
    if fingerprints[key] is not None:
        data.id = fingerprints[key]
    return config


def fixed_overrides(spec: StudySpec, preset: str | None = None,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every run of a study shares, as dotted overrides: base preset → ``fixed`` → the
    caps of a ``--preset`` → ``--set``, and ``data.id`` (a search's fixed config)."""
    base = study_base(spec, preset)
    merged = {**(base.overrides if base else {}), **spec.fixed}
    apply_caps(merged, base.caps if base else {})
    merged.update(overrides or {})
    config = _with_data_id(make_config(merged, where=f"{spec.name}: fixed config"), {})
    return {**merged, "data.id": config.data.id} if config.data.id is not None else merged


def expand(
    spec: StudySpec, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> list[RunConfig]:
    """The RunConfigs of a study (see :func:`plan` for their arm, grid point and seed)."""
    return [run.config for run in plan(spec, preset, overrides)]
