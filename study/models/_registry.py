"""Model names → builders, and which models are twins of each other.

Registering a model enrols it in the model tests. A plugin (:mod:`study.plugins`) registers
its own models with the same decorator; ``timm/<name>`` names any timm model
(:mod:`study.models.timm`) without registering it. Every model belongs to a *family*, named
after its Normalizer-Free member, and has one *norm* within it: ``nf`` (Scaled Weight
Standardisation), ``bn`` (the BatchNorm twin) or ``nf_plain`` (NF with plain convs, the
"unscaled" control of Brock, De, Smith, ICLR 2021, arXiv 2101.08692). ``model.norm`` and every
"is this a BatchNorm model?" read this table, never the name's spelling.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from torch import nn

from study.errors import ConfigError

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
Norm = Literal["nf", "bn", "nf_plain"]
NORMS: tuple[str, ...] = get_args(Norm)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model besides how to build it."""

    name: str
    family: str
    """The name of the family's NF model; twins share it."""
    norm: Norm


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


_INPUTS: dict[str, InputDefaults] = {}


@dataclass(frozen=True)
class InputDefaults:
    """The input recipe a model was designed with (timm's ``default_cfg`` idea): training and
    test resolution and RandAugment magnitude, used by ImageFolder runs that leave them unset."""

    image_size: int
    test_image_size: int
    randaugment: int | None = None


def register_model(name: str, *, family: str | None = None, norm: Norm = "nf",
                   inputs: InputDefaults | None = None) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` (decorator).

    The builder takes keyword-only arguments: ``num_classes``, ``in_chans``, ``dropout``,
    ``stochastic_depth``, ``classifier_init_std`` (``None`` = the variant's default) and any
    model-specific options;
    :func:`build_model` accepts exactly those.

    Args:
        name: the name users pass as ``model.name``.
        family: the NF model this one is a twin of; ``None`` = ``name`` (an NF model heads
            its own family).
        norm: this model's kind within its family: ``nf``, ``bn`` or ``nf_plain``.
        inputs: the model's input recipe (:func:`input_defaults`), if it has one.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: ``name`` is already registered, ``norm`` is unknown, or the family
            already has a model of that norm (programming errors).
    """
    family = name if family is None else family
    if norm not in NORMS:
        raise ValueError(f"model {name!r}: norm must be one of {NORMS}; got {norm!r}")
    if family != name and norm == "nf":
        raise ValueError(f"model {name!r}: the nf member of family {family!r} is {family!r} itself")

    def decorator(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        taken = [info.name for info in _INFO.values() if info.family == family and info.norm == norm]
        if taken:
            raise ValueError(f"model {name!r}: family {family!r} already has a {norm} model, {taken[0]!r}")
        _MODELS[name] = builder
        _INFO[name] = ModelInfo(name, family, norm)
        if inputs is not None:
            _INPUTS[name] = inputs
        return builder

    return decorator


def model_info(name: str) -> ModelInfo:
    """The registry's record of ``name``: its family and its norm.

    Raises:
        ConfigError: ``name`` is not registered.
    """
    if name not in list_models():
        raise ConfigError(f"model.name: unknown model {name!r}; allowed: {', '.join(list_models())}")
    return _INFO[name]


def known_model(name: str) -> bool:
    """Whether ``name`` builds here: registered (plugins loaded first), or ``timm/<name>``.

    Raises:
        ConfigError: a ``timm/`` name while timm is not installed, or one timm lacks.
    """
    from study.models.timm import check_timm_name, is_timm_name

    if is_timm_name(name):
        check_timm_name(name)
        return True
    return name in list_models()


def twins(name: str) -> dict[str, str]:
    """``{norm: model name}`` of every registered member of ``name``'s family (itself included).

    Example:
        >>> twins("bn_resnet_small")
        {'nf': 'nf_resnet_small', 'bn': 'bn_resnet_small', 'nf_plain': 'nf_resnet_small_nows'}
    """
    family = model_info(name).family
    members = {info.norm: info.name for info in _INFO.values() if info.family == family}
    return {norm: members[norm] for norm in NORMS if norm in members}


def twin_name(name: str, norm: str) -> str:
    """The registered name of ``name``'s twin of kind ``norm`` (``nf``, ``bn``, ``nf_plain``).

    Raises:
        ConfigError: an unknown ``norm``, or the family has no model of that kind.
    """
    if norm not in NORMS:
        raise ConfigError(f"model.norm: unknown value {norm!r}; allowed: {', '.join(NORMS)}")
    members = twins(name)
    if norm not in members:
        raise ConfigError(f"model.norm={norm}: model '{name}' has no {norm} twin; "
                          f"its family has: {', '.join(members)}")
    return members[norm]


def input_defaults(name: str) -> InputDefaults | None:
    """The input recipe registered with model ``name`` (``None`` if it has none).

    Example:
        >>> input_defaults("nfnet_f3")
        InputDefaults(image_size=320, test_image_size=416, randaugment=15)
    """
    return _INPUTS.get(name)


def list_models() -> list[str]:
    """Return the registered model names (plugins' included), sorted."""
    from study.plugins import load_plugins

    load_plugins()
    return sorted(_MODELS)


def _check_rate(name: str, key: str, value: Any) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ConfigError(f"model {name!r}: {key} must be in [0, 1) or None; got {value!r}")


def build_model(name: str, num_classes: int = 1000, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: outputs of the classifier.
        **overrides: the builder's options, e.g. ``in_chans=1``, ``dropout=0.0``,
            ``stochastic_depth=0.1``, ``classifier_init_std=0.0``, ``skipinit=False`` (NF models).

    Returns:
        The model, with ``get_classifier()`` and a ``default_config`` dict.

    Raises:
        ConfigError: unknown name, unknown override, or an impossible value.

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     model = build_model("nfnet_f0")
        >>> model.default_config["test_image_size"]
        256
    """
    from study.models.timm import build_timm, is_timm_name

    if is_timm_name(name):
        builder = functools.partial(build_timm, name)
    elif name not in list_models():
        raise ConfigError(
            f"model.name: unknown model {name!r}; allowed: {', '.join(list_models())}"
        )
    else:
        builder = _MODELS[name]
    allowed = {
        key for key, p in inspect.signature(builder).parameters.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) and key != "num_classes"
    }
    init_std = _drop_untaken(name, overrides, allowed)
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(
            f"model {name!r}: num_classes must be a positive int; got {num_classes!r}"
        )
    in_chans = overrides.get("in_chans", 3)
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"model {name!r}: in_chans must be a positive int; got {in_chans!r}")
    for key in ("dropout", "stochastic_depth"):
        _check_rate(name, key, overrides.get(key))
    std = overrides.get("classifier_init_std")
    if std is not None and not (isinstance(std, (int, float)) and std >= 0.0):
        raise ConfigError(f"model {name!r}: classifier_init_std must be >= 0 or None; got {std!r}")
    model = builder(num_classes=num_classes, **overrides)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if init_std is not None and isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=init_std)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return model


#: Options every run passes; a plugin's builder may leave them out of its signature.
OPTIONAL = ("dropout", "stochastic_depth", "classifier_init_std")


def _drop_untaken(name: str, overrides: dict[str, Any], allowed: set[str]) -> float | None:
    """Take the :data:`OPTIONAL` options that ``name``'s builder does not accept out of
    ``overrides``; returns ``classifier_init_std`` if it was one of them (applied to the
    model's ``get_classifier()`` after building).

    Raises:
        ConfigError: a ``dropout`` or ``stochastic_depth`` set for a builder that ignores it.
    """
    init_std = None
    for key in OPTIONAL:
        if key in overrides and key not in allowed:
            value = overrides.pop(key)
            if key == "classifier_init_std":
                init_std = value
            elif value is not None:
                raise ConfigError(f"model.{key}={value}: model {name!r} takes no {key} option (its builder has "
                                  f"no such argument); leave model.{key} unset")
    return init_std
