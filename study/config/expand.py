"""Grid expansion: a study → its runs (arms × grid × seeds), with ``--set`` overrides.

A run's config is merged in this order, later wins: ``base`` preset → ``fixed`` → arm →
grid point → seed → ``--set`` overrides. Every expanded config is validated before
anything runs, and identified by :meth:`RunConfig.config_hash`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import yaml

from study.config.run_config import RunConfig, make_config
from study.config.study_file import StudySpec, load_preset
from study.errors import ConfigError


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
