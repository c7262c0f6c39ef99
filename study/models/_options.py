"""The options every network takes, with per-variant defaults: resolved once, shared by the
NF-ResNet and NFNet classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from study.errors import ConfigError


@dataclass(frozen=True)
class NetOptions:
    nf: bool
    skipinit: bool
    dropout: float
    stochastic_depth: float
    classifier_init_std: float
    default_config: dict[str, Any]


def resolve_options(config, *, num_classes: int, in_chans: int, dropout: float | None,
                    stochastic_depth: float | None, skipinit: bool | None,
                    classifier_init_std: float | None = None) -> NetOptions:
    """``None`` options take the variant's defaults from ``config``; SkipInit defaults to on
    for NF nets and is refused for BatchNorm twins.

    Raises:
        ConfigError: ``skipinit=True`` for a BatchNorm net.
    """
    nf = config.normalization == "nf"
    if skipinit and not nf:
        raise ConfigError("skipinit: got True; BatchNorm twins have no SkipInit gains")
    dropout = config.dropout if dropout is None else dropout
    stochastic_depth = config.stochastic_depth if stochastic_depth is None else stochastic_depth
    std = config.classifier_init_std if classifier_init_std is None else classifier_init_std
    default_config = dict(
        train_image_size=config.train_image_size, test_image_size=config.test_image_size,
        dropout=dropout, stochastic_depth=stochastic_depth, num_classes=num_classes, in_chans=in_chans,
        classifier_init_std=std,
    )
    return NetOptions(nf, nf if skipinit is None else skipinit, dropout, stochastic_depth, std, default_config)
