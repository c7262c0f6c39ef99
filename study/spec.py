"""Typed configuration: :class:`RunConfig` (every knob of one training run) and
:class:`StudySpec` (a study YAML file).

Each knob has one home here, with its default, unit and meaning beside it. Unknown keys,
wrong types and impossible values are rejected before anything runs; every problem is
reported, each naming its dotted key and what is allowed (:class:`ConfigError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from study.errors import ConfigError, did_you_mean

#: Keys that say *where* a run executes, not *what* it computes. They are left out of the
#: config hash so that the same study resumes on another machine or data path.
HASH_EXCLUDED_KEYS = ("train.device", "data.root", "data.download", "data.num_workers")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "nf_resnet_small"
    """Registered model name (``nfstudy list-models`` / ``study.models.list_models()``)."""
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Dropout before the classifier; ``None`` = the variant's default (NFNet-F0: 0.2)."""
    stochastic_depth: float | None = Field(None, ge=0.0, lt=1.0)
    """Final stochastic-depth rate (grows linearly with depth); ``None`` = the variant's default."""
    norm: Literal["nf", "bn", "nf_plain"] | None = None
    """Swap ``name`` for its twin: ``nf`` Normalizer-Free (Scaled WS), ``bn`` the BatchNorm
    twin, ``nf_plain`` NF with plain convs (the "unscaled" control). Lets one study compare
    BN and NF at every preset's scale; ``None`` = as ``name`` says."""

    @property
    def resolved_name(self) -> str:
        """The registered model this section builds (``name`` after ``norm``)."""
        from study.models.twins import twin_name

        return self.name if self.norm is None else twin_name(self.name, self.norm)

    @model_validator(mode="after")
    def _twin_exists(self) -> "ModelConfig":
        if self.norm is not None:
            from study.models.twins import twin_name

            try:
                twin_name(self.name, self.norm)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return self

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from study.models import list_models

        names = list_models()
        if name not in names:
            raise ValueError(f"unknown model '{name}'{did_you_mean(name, names)}; registered: {', '.join(names)}")
        return name


class DataConfig(_Section):
    name: Literal["digits", "cifar10", "cifar100", "imagefolder", "fake"] = "digits"
    """Data set. ``digits`` is embedded (scikit-learn), the others load from ``root``."""
    root: str | None = None
    """Data set directory. Never downloads unless ``download`` is true."""
    download: bool = False
    batch_size: int = Field(128, gt=0)
    """Global batch size B as the paper counts it: the learning rate is ``optim.lr``·B/256."""
    device_batch_size: int | None = Field(None, gt=0)
    """Cap on the batch actually drawn per step (``None`` = ``batch_size``). A preset uses it to
    map the paper's batch sizes onto a small data set while keeping the paper's learning
    rates (PAPER.md §8); reports print the mapping."""
    image_size: int | None = Field(None, gt=0)
    """Training resolution; ``None`` = the data set's (digits: upsampled to 16)."""
    test_image_size: int | None = Field(None, gt=0)
    """Evaluation resolution (ImageFolder: resize to test+32, centre crop); ``None`` = image_size."""
    crop_pad: int = Field(1, ge=0)
    """Random translation in pixels (pad + crop) for training batches."""
    flip: bool = False
    """Random horizontal flips (off for digits: flipped digits are other glyphs)."""
    mixup: bool = False
    """MixUp (α=0.2) on half of each batch and CutMix on the other half (PAPER.md §6)."""
    randaugment: int | None = Field(None, ge=0, le=30)
    """RandAugment magnitude with 4 layers (ImageFolder only); ``None`` = off."""
    num_examples: int | None = Field(None, gt=0)
    """``fake`` only: how many synthetic training images."""
    num_workers: int = Field(4, ge=0)
    """DataLoader workers (ImageFolder only; device-resident data sets need none)."""


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    """Passes over the training split. Ignored when ``steps`` is set."""
    steps: int | None = Field(None, ge=1)
    """Fixed budget of optimizer steps (overrides ``epochs``; evaluation still per epoch)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision of activations; weights stay fp32."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    channels_last: bool = False
    compile: bool = False
    """``torch.compile`` the model (measured per model in ``nfstudy bench``)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    checkpoint_every: int | None = Field(None, ge=1)
    """Save a checkpoint every N epochs so a crashed run resumes from it."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
            raise ValueError(f"unknown device '{device}'; allowed: auto, cpu, cuda, cuda:N, mps")
        return device


class OptimConfig(_Section):
    lr: float = Field(0.1, gt=0.0)
    """Peak learning rate **per 256 images**; the optimizer uses lr·batch_size/256."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(2e-5, ge=0.0)
    """L2 on weights; never on gains, biases, SkipInit gains or norm parameters."""
    warmup_epochs: float | None = Field(None, ge=0.0)
    """Linear warmup length; ``None`` = 5% of training. Then cosine decay to 0."""
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)
    """EMA of the weights (paper: 0.99999); ``None`` = off. Evaluated beside the raw weights."""


class AGCConfig(_Section):
    clipping: float | None = Field(None, gt=0.0)
    """λ of Adaptive Gradient Clipping (PAPER.md §4); ``None`` turns AGC off."""
    mode: Literal["unit", "layer"] = "unit"
    """``unit``: one norm per output unit (row); ``layer``: the whole tensor as one unit."""
    eps: float = Field(1e-3, gt=0.0)
    """Floor on the weight norm, so zero-initialised parameters can still move."""
    exclude: list[str] = Field(default_factory=lambda: ["classifier.weight"])
    """Parameters left unclipped: ``classifier.weight``/``classifier.bias`` name the final
    linear layer by role; other entries are glob patterns over parameter names."""


class SAMConfig(_Section):
    mode: Literal["off", "full", "fraction"] = "off"
    """``full``: ascent on the whole batch; ``fraction``: the paper's cheap variant (PAPER.md §5)."""
    rho: float = Field(0.05, gt=0.0)
    fraction: float = Field(0.2, gt=0.0, le=1.0)
    """Share of the *same* batch used for the ascent step in ``fraction`` mode."""


class RunConfig(_Section):
    """Every knob of one training run. Build from dotted overrides with :func:`make_config`."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    agc: AGCConfig = Field(default_factory=AGCConfig)
    sam: SAMConfig = Field(default_factory=SAMConfig)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.data.name == "imagefolder" and self.data.root is None:
            raise ValueError("data.root is required for data.name=imagefolder")
        return self

    def flat(self) -> dict[str, Any]:
        """The config as ``{dotted.key: value}`` (the MLflow params)."""
        return flatten(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        """Short stable hash: canonical JSON (sorted keys) of the resolved config, without
        the machine-local keys in :data:`HASH_EXCLUDED_KEYS`."""
        flat = {k: v for k, v in self.flat().items() if k not in HASH_EXCLUDED_KEYS}
        text = json.dumps(flat, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def real_batch_size(self) -> int:
        """The batch drawn per step: ``data.batch_size`` capped by ``data.device_batch_size``."""
        cap = self.data.device_batch_size
        return self.data.batch_size if cap is None else min(cap, self.data.batch_size)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"agc": {"clipping": 0.01}}`` → ``{"agc.clipping": 0.01}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def config_keys() -> list[str]:
    """Every dotted key a RunConfig accepts."""
    return list(RunConfig().flat())


def check_keys(keys: list[str], where: str) -> None:
    """Raise one ConfigError naming every unknown dotted key (with a close match)."""
    known = config_keys()
    problems = []
    for key in keys:
        if key not in known:
            problems.append(f"unknown key '{key}'{did_you_mean(key, known)}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def make_config(overrides: dict[str, Any], where: str = "config") -> RunConfig:
    """Build and validate a RunConfig from ``{dotted.key: value}`` overrides.

    Raises:
        ConfigError: naming every unknown key, wrong type or impossible value.
    """
    check_keys(list(overrides), where)
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return RunConfig.model_validate(nested)
    except ValidationError as err:
        raise ConfigError(f"{where}: {_describe(err)}") from None


def _describe(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line for every problem of ``err``; an unknown field of ``model`` (or of a section
    nested in it) gets the closest known name and the allowed ones."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden" and (fields := _fields_at(model, e["loc"][:-1])):
            hint = did_you_mean(str(e["loc"][-1]), fields)
            parts.append(f"unknown field '{key}'{hint}; allowed: {', '.join(fields)}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict) and key else ""
        parts.append(f"{key}: {msg}{shown}" if key else msg)
    return "; ".join(parts)


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the model found by following ``loc`` from ``model`` through nested
    models, lists of them, or a union holding one model; empty when ``loc`` leads elsewhere."""
    kind: Any = model
    for part in loc:
        if isinstance(part, int):  # an item of a list
            kind = next(iter(get_args(kind)), None)
        else:
            model = _model_in(kind)
            field = model.model_fields.get(part) if model is not None else None
            kind = field.annotation if field is not None else None
    model = _model_in(kind)
    return list(model.model_fields) if model is not None else []


def _model_in(kind: Any) -> type[BaseModel] | None:
    """``kind`` if it is a model, the one model of a union, else ``None``."""
    models = [a for a in (kind, *get_args(kind)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


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


#: Metrics the trainer reports after every epoch: the ones a search pruner can watch.
EPOCH_METRICS = ("train/loss", "val/loss", "val/top1", "val/top1_ema")


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
        return [f"{key}: {_describe(err, Distribution)}; expected {{low, high, log, step}}"]
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
