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
HASH_EXCLUDED_KEYS = ("train.device", "data.root", "data.download", "data.num_workers", "train.system_metrics",
                      "train.log_model", "train.log_dataset")


def _legacy_classifier_init_std(config: "RunConfig") -> float:
    from study.models import legacy_classifier_init_std, list_models

    if config.model.name not in list_models():  # timm/<name>: no runs before the key existed
        return 0.01
    return legacy_classifier_init_std(config.model.name)


#: Keys added after the first release, with the behaviour the code had before they existed
#: (a function of the config where that behaviour differed between models). At that value a
#: key is left out of the config hash, so adding a knob never renames the runs already
#: recorded; set to anything else, it is hashed like every other key.
HASH_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "data.id": None,
    "data.mixup_alpha": 0.2,
    "optim.warmup_fraction": 0.05,
    "model.classifier_init_std": _legacy_classifier_init_std,
    "data.val_size": None,
    "data.mixup_pairing": "mirror",
    "data.randaugment_policy": "torchvision",
    "data.augment_before_mix": True,
    "data.train_crop": "torchvision",
    "data.interpolation": "bilinear",
    "data.eval_resize": "shorter_side",
    "train.tf32": "convolutions",
    "train.deterministic": False,
}
#: Keys only ImageFolder reads, with their defaults: set otherwise on another data set they
#: would change nothing, so the config is refused.
IMAGEFOLDER_ONLY = {"data.randaugment": None, "data.randaugment_policy": "torchvision",
                    "data.augment_before_mix": True, "data.train_crop": "torchvision",
                    "data.interpolation": "bilinear", "data.eval_resize": "shorter_side"}


#: Data sets read from ``data.root``.
ON_DISK_DATA = ("cifar10", "cifar100", "imagefolder")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "nf_resnet_small"
    """Registered model name (``study.models.list_models()``, plugins' included), or
    ``timm/<name>`` for any timm model (``pip install 'nfstudy[timm]'``; random weights)."""
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Dropout before the classifier; ``None`` = the variant's default (NFNet-F0: 0.2)."""
    stochastic_depth: float | None = Field(None, ge=0.0, lt=1.0)
    """Final stochastic-depth rate (grows linearly with depth); ``None`` = the variant's default."""
    classifier_init_std: float = Field(0.01, ge=0.0)
    """Std of the classifier weight's N(0, std²) init, bias 0 (official: 0.01); 0 starts it at
    zero, as the small nets did before this key (docs/scale.md: a zero classifier that AGC
    clips sits on the ε floor)."""
    norm: Literal["nf", "bn", "nf_plain"] | None = None
    """Swap ``name`` for its twin: ``nf`` Normalizer-Free (Scaled WS), ``bn`` the BatchNorm
    twin, ``nf_plain`` NF with plain convs (the "unscaled" control). Lets one study compare
    BN and NF at every preset's scale; ``None`` = as ``name`` says."""

    @property
    def resolved_name(self) -> str:
        """The registered model this section builds (``name`` after ``norm``)."""
        from study.models import twin_name

        return self.name if self.norm is None else twin_name(self.name, self.norm)

    @model_validator(mode="after")
    def _twin_exists(self) -> "ModelConfig":
        if self.norm is not None:
            from study.models import twin_name

            try:
                twin_name(self.name, self.norm)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return self

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from study.models import known_model, list_models

        try:
            if known_model(name):
                return name
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("model.name: ")) from None
        names = list_models()
        raise ValueError(f"unknown model '{name}'{did_you_mean(name, names)}; registered: {', '.join(names)}, or "
                         "timm/<name> (timm's models), or your own through a plugin (README, \"Your own model "
                         "and data\")")


class DataConfig(_Section):
    name: str = "digits"
    """Data set: ``digits`` (embedded, scikit-learn), ``fake`` (generated), ``cifar10``,
    ``cifar100``, ``imagefolder`` (from ``root``), or your own: ``python:pkg.module:factory``
    or a name a plugin registered (:mod:`study.data.python`)."""
    root: str | None = None
    """Data set directory. Never downloads unless ``download`` is true. Machine-local: not in
    the config hash (``id`` stands for the contents)."""
    id: str | None = None
    """What the data set *is*, in the run's identity (config hash). ``None``: for the on-disk
    data sets (cifar10, cifar100, imagefolder) the study's expansion fills in a fingerprint
    of the files under ``root`` (:mod:`study.data.fingerprint`); set it (``imagenet-2012``)
    to name a version yourself and skip the scan."""
    download: bool = False
    batch_size: int = Field(128, gt=0)
    """Global batch size B as the paper counts it: the learning rate is ``optim.lr``·B/256."""
    device_batch_size: int | None = Field(None, gt=0)
    """Cap on the batch actually drawn per step (``None`` = ``batch_size``). A preset uses it to
    map the paper's batch sizes onto a small data set while keeping the paper's learning
    rates (docs/scale.md); reports print the mapping."""
    image_size: int | None = Field(None, gt=0)
    """Training resolution; ``None`` = the data set's (digits: upsampled to 16; ImageFolder:
    the model's, e.g. NFNet-F0 192, else 224)."""
    test_image_size: int | None = Field(None, gt=0)
    """Evaluation resolution (ImageFolder: resize to test+32, centre crop); ``None`` = the
    model's when ``image_size`` is unset too (NFNet-F0 256), else ``image_size``."""
    crop_pad: int = Field(1, ge=0)
    """Random translation in pixels (pad + crop) for training batches."""
    flip: bool = False
    """Random horizontal flips (off for digits: flipped digits are other glyphs)."""
    mixup: bool = False
    """MixUp on half of each batch and CutMix on the other half (paper §4.1, App. A)."""
    mixup_alpha: float = Field(0.2, gt=0.0)
    """α of the Beta(α, α) that draws the MixUp weights (paper: 0.2)."""
    mixup_pairing: Literal["mirror", "disjoint"] = "mirror"
    """Which images MixUp/CutMix pairs: ``disjoint`` reads 2B images per step and mixes
    disjoint halves (official; an epoch is then two passes over the images); ``mirror``
    reads B and mixes each half with itself reversed."""
    val_size: int | None = Field(None, gt=0)
    """Images carved from the training set as the tuning split (``val/*``), fixed and seeded;
    ``None`` = 10,000 for ImageFolder (official) or 5,000 for CIFAR, a tenth of a smaller set.
    digits and fake have fixed splits."""
    randaugment: int | Literal["auto"] | None = None
    """RandAugment magnitude (0..30) with 4 layers (ImageFolder only); ``auto`` = the
    model's (NFNet-F0 5, F1/F2 10, F3+ 15, none for other models); ``None`` = off."""
    randaugment_policy: Literal["torchvision", "official"] = "torchvision"
    """``official``: the NFNet code's 16 ops, argument m/10 of the range, Cutout, SolarizeAdd;
    ``torchvision``: ``v2.RandAugment`` (m/30, 14 ops)."""
    augment_before_mix: bool = True
    """RandAugment on each image before MixUp/CutMix (``false``: on the mixed images, the
    official NFNet order)."""
    train_crop: Literal["torchvision", "official"] = "torchvision"
    """Random crop sampler: ``official`` (TensorFlow's distorted bounding box, ≥ 10% of the
    image) or ``torchvision`` (``RandomResizedCrop``)."""
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    """Resizing of the training crop and the evaluation image (official: bicubic)."""
    eval_resize: Literal["shorter_side", "squash"] = "shorter_side"
    """Evaluation: resize the shorter side (``shorter_side``, aspect kept) or both sides
    (``squash``, official NFNets) to test + 32 px, then centre-crop."""
    num_examples: int | None = Field(None, gt=0)
    """``fake`` only: how many synthetic training images."""

    @field_validator("name")
    @classmethod
    def _known_data(cls, name: str) -> str:
        from study.data.python import check_data_name

        try:
            check_data_name(name)
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("data.name: ")) from None
        return name

    @field_validator("randaugment", mode="before")
    @classmethod
    def _magnitude(cls, value: Any) -> Any:
        if value is None or value == "auto" or (type(value) is int and 0 <= value <= 30):
            return value
        raise ValueError("allowed: a magnitude 0..30, auto or null")
    num_workers: int = Field(4, ge=0)
    """DataLoader workers (ImageFolder only; device-resident data sets need none)."""

    @property
    def on_disk(self) -> bool:
        """Whether the data set is read from ``root`` (digits is embedded, fake generated; your
        own data set is when it has a ``root``)."""
        return self.name in ON_DISK_DATA or (self.root is not None and self.name not in ("digits", "fake"))


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
    log_dataset: bool = False
    """Log the data set as the run's input (MLflow's "Datasets used": name, ``data.id``,
    ``data.root``, size and shape). Not in the config hash."""
    log_model: bool = False
    """Log the trained weights on the child run, artifact ``model/state_dict.pt`` (load with
    ``torch.load(path, weights_only=True)``). Not in the config hash."""
    system_metrics: bool = False
    """Record CPU, memory, disk, network and (with ``nvidia-ml-py``) GPU use on the run, as
    MLflow's ``system/*`` metrics (needs ``psutil``). Not in the config hash: it records, it
    computes nothing."""
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
    """λ of Adaptive Gradient Clipping (Brock et al. 2021, §4); ``None`` turns AGC off."""
    mode: Literal["unit", "layer"] = "unit"
    """``unit``: one norm per output unit (row); ``layer``: the whole tensor as one unit."""
    eps: float = Field(1e-3, gt=0.0)
    """Floor on the weight norm, so zero-initialised parameters can still move."""
    exclude: list[str] = Field(default_factory=lambda: ["classifier.weight"])
    """Parameters left unclipped: ``classifier.weight``/``classifier.bias`` name the final
    linear layer by role; other entries are glob patterns over parameter names."""


class SAMConfig(_Section):
    mode: Literal["off", "full", "fraction"] = "off"
    """``full``: ascent on the whole batch; ``fraction``: the paper's cheap variant (paper §5)."""
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
        flat = self.flat()
        if self.data.name != "imagefolder" and (keys := [k for k, v in IMAGEFOLDER_ONLY.items() if flat[k] != v]):
            raise ValueError(f"{', '.join(keys)}: only data.name=imagefolder reads them (this run: "
                             f"data.name={self.data.name}); leave them at their defaults")
        if self.data.name in ("digits", "fake") and self.data.val_size is not None:
            raise ValueError(f"data.val_size: {self.data.name} has a fixed validation split; leave it null")
        return self

    def flat(self) -> dict[str, Any]:
        """The config as ``{dotted.key: value}`` (the MLflow params)."""
        return flatten(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        """Short stable hash: canonical JSON (sorted keys) of the resolved config, without
        the machine-local keys in :data:`HASH_EXCLUDED_KEYS` and the later-added keys of
        :data:`HASH_NEUTRAL_DEFAULTS` while they keep their original behaviour."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def identity(self) -> dict[str, Any]:
        """The flat config a run's identity is made of: :meth:`flat` without the machine-local
        keys and the later-added keys that still keep their original behaviour."""
        return {k: v for k, v in self.flat().items() if k not in HASH_EXCLUDED_KEYS and not self._neutral(k, v)}

    def _neutral(self, key: str, value: Any) -> bool:
        if key not in HASH_NEUTRAL_DEFAULTS:
            return False
        before = HASH_NEUTRAL_DEFAULTS[key]
        return value == (before(self) if callable(before) else before)

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


def run_params(flat: dict[str, Any]) -> dict[str, Any]:
    """What a child run records as MLflow params: its flattened config, plus what the config
    resolves to that a reader of the runs table could not tell: ``model.resolved_name`` (the
    model a ``model.norm`` twin builds), ``optim.peak_lr`` (lr·B/256 for the paper batch B)
    and ``data.real_batch_size`` (the batch actually drawn per step, under a cap)."""
    try:
        config = make_config({k: v for k, v in flat.items() if k not in RESOLVED_PARAMS})
    except ConfigError:  # not a RunConfig (recorded as given)
        return dict(flat)
    return {**flat, "model.resolved_name": config.model.resolved_name, "optim.peak_lr": config.peak_lr,
            "data.real_batch_size": config.real_batch_size}


#: The params :func:`run_params` adds: derived from the config, never part of it.
RESOLVED_PARAMS = ("model.resolved_name", "optim.peak_lr", "data.real_batch_size")


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
