"""Model names → builders. Registering a model enrols it in the model tests."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from study.errors import ConfigError

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INPUTS: dict[str, InputDefaults] = {}


@dataclass(frozen=True)
class InputDefaults:
    """The input recipe a model was designed with (timm's ``default_cfg`` idea): training and
    test resolution and RandAugment magnitude, used by ImageFolder runs that leave them unset."""

    image_size: int
    test_image_size: int
    randaugment: int | None = None


def register_model(name: str, *, inputs: InputDefaults | None = None) -> Callable[[Builder], Builder]:
    """Register a builder under ``name`` (decorator).

    The builder takes keyword-only arguments: ``num_classes``, ``in_chans``, ``dropout``,
    ``stochastic_depth`` (``None`` = the variant's default) and any model-specific options;
    :func:`build_model` accepts exactly those.

    Args:
        name: the name users pass as ``model.name``.
        inputs: the model's input recipe (:func:`input_defaults`), if it has one.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: ``name`` is already registered (a programming error).
    """

    def decorator(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = builder
        if inputs is not None:
            _INPUTS[name] = inputs
        return builder

    return decorator


def input_defaults(name: str) -> InputDefaults | None:
    """The input recipe registered with model ``name`` (``None`` if it has none).

    Example:
        >>> input_defaults("nfnet_f3")
        InputDefaults(image_size=320, test_image_size=416, randaugment=15)
    """
    return _INPUTS.get(name)


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
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
            ``stochastic_depth=0.1``, ``skipinit=False`` (NF models).

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
    if name not in _MODELS:
        raise ConfigError(
            f"model.name: unknown model {name!r}; allowed: {', '.join(list_models())}"
        )
    builder = _MODELS[name]
    allowed = {
        key for key, p in inspect.signature(builder).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and key != "num_classes"
    }
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
    return builder(num_classes=num_classes, **overrides)
