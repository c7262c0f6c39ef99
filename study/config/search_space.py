"""The search space of a study (its ``search:`` section, for ``nfstudy search``): ranges,
choices, the sampler and the pruner."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from study.config.describe import describe
from study.config.run_config import check_keys
from study.errors import ConfigError
from study.record.tags import EPOCH_METRICS  # noqa: F401 - the metrics a pruner can watch


class Distribution(BaseModel):
    """A numeric search range: ``{low, high, log, step}``. Integers when ``low``, ``high``
    (and ``step``) are all integers in the YAML, floats otherwise."""

    model_config = ConfigDict(extra="forbid")
    low: int | float
    high: int | float
    log: bool = False
    """Sample uniformly in log space (λ, learning rates); needs ``low > 0``."""
    step: int | float | None = None
    """Discretisation (``low``, ``low+step``…); required for the grid sampler."""

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))


class SamplerSpec(BaseModel):
    """``search.sampler``: a name, or ``{name, n_startup_trials, seed}``."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["tpe", "random", "grid"] = "tpe"
    n_startup_trials: int = Field(10, ge=0)
    """TPE only: random trials before TPE models the space (Optuna's default, 10)."""
    seed: int = Field(0, ge=0)
    """Base seed; each invocation adds the number of trials already in the study, so a
    re-run draws new points instead of repeating the first ones."""

    @model_validator(mode="after")
    def _options_fit(self) -> "SamplerSpec":
        if "n_startup_trials" in self.model_fields_set and self.name != "tpe":
            raise ValueError(f"sampler '{self.name}' takes no n_startup_trials (only tpe does)")
        return self


_PRUNER_OPTIONS = {
    "median": {"n_startup_trials", "n_warmup_steps"},
    "hyperband": {"min_resource", "reduction_factor"},
    "threshold": {"lower", "upper", "n_warmup_steps"},
    "none": set(),
}


class PrunerSpec(BaseModel):
    """``search.pruner``: a name, or ``{name, …options}``. Steps are epochs."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["median", "hyperband", "threshold", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0)
    """median: trials that finish unpruned before any pruning."""
    n_warmup_steps: int = Field(0, ge=0)
    """median, threshold: epochs of a trial before it may be pruned."""
    min_resource: int = Field(1, ge=1)
    """hyperband: epochs every trial gets."""
    reduction_factor: int = Field(3, ge=2)
    """hyperband: 1/reduction_factor of the trials go on at each rung."""
    lower: float | None = None
    """threshold: prune when the metric falls below this."""
    upper: float | None = None
    """threshold: prune when the metric rises above this."""

    @model_validator(mode="after")
    def _options_fit(self) -> "PrunerSpec":
        stray = sorted(self.model_fields_set - _PRUNER_OPTIONS[self.name] - {"name"})
        if stray:
            allowed = ", ".join(sorted(_PRUNER_OPTIONS[self.name])) or "no options"
            raise ValueError(f"pruner '{self.name}' takes {allowed} (got {', '.join(stray)})")
        if self.name == "threshold" and self.lower is None and self.upper is None:
            raise ValueError("pruner 'threshold' needs lower or upper")
        return self


class SearchSpec(BaseModel):
    """A study's ``search:`` section (``nfstudy search``): what to search and how.

    Dotted RunConfig keys map to a range ``{low, high, log, step}`` or a list of choices;
    the other keys are ``direction``, ``metric``, ``sampler`` and ``pruner``::

        search:
          agc.clipping: {low: 0.001, high: 1.0, log: true}
          data.batch_size: [1024, 4096]
          sampler: tpe            # or {name: tpe, n_startup_trials: 5}
          pruner: {name: median, n_warmup_steps: 3}
    """

    model_config = ConfigDict(extra="forbid")
    space: dict[str, Distribution | list[Any]]
    """The searched keys (written as dotted keys directly under ``search:``)."""
    direction: Literal["maximize", "minimize"] | None = None
    """``None``: maximize accuracy-like metrics (``top1``…), minimize the others (losses)."""
    metric: str | None = None
    """What trials are scored on; ``None``: the study's ``metric``."""
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)

    @model_validator(mode="before")
    @classmethod
    def _gather_space(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        space = dict(data.pop("space", None) or {})
        space.update({key: data.pop(key) for key in [k for k in data if "." in k]})
        problems = [p for key, value in space.items() for p in _space_problems(key, value)]
        try:
            check_keys([k for k in space if k != "seed"], "search")
        except ConfigError as err:
            problems.append(str(err).removeprefix("search: "))
        if not space:
            problems.append("no keys to search; add one, e.g. agc.clipping: {low: 0.001, high: 1.0, log: true}")
        if problems:
            raise ValueError("; ".join(problems))
        for option in ("sampler", "pruner"):
            if isinstance(data.get(option), str):
                data[option] = {"name": data[option]}
        return {**data, "space": space}

    @model_validator(mode="after")
    def _grid_is_finite(self) -> "SearchSpec":
        if self.sampler.name == "grid":
            ranges = [k for k, v in self.space.items() if isinstance(v, Distribution) and v.step is None]
            if ranges:
                raise ValueError(f"sampler 'grid' needs a step or a list of choices for {', '.join(ranges)}")
        return self


def _space_problems(key: str, value: Any) -> list[str]:
    """What is wrong with one ``search:`` entry (empty when nothing)."""
    if key == "seed":
        return ["seed: a search trains the study's first seed; the seed is not searched"]
    if isinstance(value, list):
        if not value:
            return [f"{key}: empty list of choices; give at least one value"]
        odd = [v for v in value if v is not None and not isinstance(v, (bool, int, float, str))]
        return [f"{key}: choices must be numbers, strings, booleans or null (got {odd[0]!r})"] if odd else []
    if not isinstance(value, dict):
        return [f"{key}: expected {{low, high, log, step}} or a list of choices (got {value!r})"]
    try:
        dist = Distribution.model_validate(value)
    except ValidationError as err:
        return [f"{key}: {describe(err, Distribution)}; expected {{low, high, log, step}}"]
    problems = []
    if dist.low > dist.high:
        problems.append(f"{key}: low ({dist.low}) is above high ({dist.high})")
    if dist.log and dist.low <= 0:
        problems.append(f"{key}: log: true needs low > 0 (got low {dist.low})")
    if dist.log and dist.step is not None:
        problems.append(f"{key}: log and step cannot be combined")
    if dist.step is not None and dist.step <= 0:
        problems.append(f"{key}: step must be positive (got {dist.step})")
    return problems
