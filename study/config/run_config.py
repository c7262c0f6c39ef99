"""The run config: :class:`RunConfig`, every knob of one training run, in sections.

Each knob has one home here, with its default, unit and meaning beside it. Unknown keys,
wrong types and impossible values are rejected before anything runs; every problem is
reported, each naming its dotted key and what is allowed (:class:`ConfigError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from study.config.describe import describe
from study.errors import ConfigError, did_you_mean

#: Keys that say *where* a run executes, not *what* it computes. They are left out of the
#: config hash so that the same study resumes on another machine or data path.
HASH_EXCLUDED_KEYS = ("train.device", "data.root", "data.download", "data.num_workers")
#: Keys added after the first release, with the behaviour the code had before they existed.
#: At that value a key is left out of the config hash, so adding a knob never renames the
#: runs already recorded; set to anything else, it is hashed like every other key.
HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "data.mixup_alpha": 0.2,
    "optim.warmup_fraction": 0.05,
    "train.tf32": "convolutions",
    "train.deterministic": False,
}


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
    """MixUp on half of each batch and CutMix on the other half (PAPER.md §6)."""
    mixup_alpha: float = Field(0.2, gt=0.0)
    """α of the Beta(α, α) that draws the MixUp weights and CutMix areas (paper: 0.2)."""
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
    tf32: Literal["convolutions", "all", "off"] = "convolutions"
    """Where fp32 work may use TF32 tensor cores on a GPU (Ampere+): ``convolutions``
    (PyTorch's default), ``all`` (matrix products too) or ``off`` (true fp32)."""
    deterministic: bool = False
    """Deterministic algorithms only (and no cuDNN autotuning): bit-exact repeats and resumes
    on one GPU model and torch build; slower, and an op without one raises."""

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
    """Linear warmup length in epochs; ``None`` = ``warmup_fraction`` of training. Then cosine
    decay to 0."""
    warmup_fraction: float = Field(0.05, ge=0.0, le=1.0)
    """Warmup as a share of all steps when ``warmup_epochs`` is ``None``."""
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
        the machine-local keys in :data:`HASH_EXCLUDED_KEYS` and the later-added keys of
        :data:`HASH_NEUTRAL_DEFAULTS` while they keep their original behaviour."""
        flat = {k: v for k, v in self.flat().items()
                if k not in HASH_EXCLUDED_KEYS and not (k in HASH_NEUTRAL_DEFAULTS and v == HASH_NEUTRAL_DEFAULTS[k])}
        text = json.dumps(flat, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def peak_lr(self) -> float:
        """The optimizer's peak learning rate: ``optim.lr`` per 256 images times the paper's
        batch size B (``data.batch_size``), lr·B/256 (paper §6)."""
        return self.optim.lr * self.data.batch_size / 256

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
        raise ConfigError(f"{where}: {describe(err)}") from None
