"""NF-ResNets: normalizer-free pre-activation ResNets, and small variants for digits/CIFAR.

Paper: Brock, De, Smith, *Characterizing signal propagation to close the performance gap in
unnormalized ResNets* (ICLR 2021, [I]) and Brock et al. 2021 (NFNets, arXiv 2102.06171) §3.
Official code: ``google-deepmind/deepmind-research``, ``nfnets/nf_resnet.py``.

A block computes h + α · SkipInit · f(γ·act(h) · β), β = 1/sqrt(expected Var h), Var growing
by α² per block and reset to 1 + α² after a transition (a block whose shortcut is a conv).
With ``normalization="batch"`` the same code builds the BatchNorm twin (``study.models.resnet``):
BN before each activation, plain convs, no α, β, γ or SkipInit.

Where we differ from the official code, and why:
- β resets after any block with a projection shortcut, not after "the first block of each
  stage": the same for the ImageNet nets, and right for the small nets whose first block keeps
  the stem's width (its identity shortcut does not reset the variance).
- Small variants (docs/scale.md): basic blocks (two 3×3 convs), a 3×3 stride-1 stem and no
  max-pool, for 16×16 digits and 32×32 CIFAR.
- Dropout 0.25 before the classifier of the ImageNet NF-ResNets follows [I]'s training setup;
  the official file leaves it to the caller.
- Padding is symmetric (PyTorch) rather than JAX ``SAME``; shapes agree.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from study.models._options import resolve_options
from study.models._registry import model_info, register_model
from study.models.layers import (
    BranchTap,
    StochasticDepth,
    create_conv2d,
    create_norm_act,
    init_classifier_,
    residual_forward,
    skipinit_gain,
)


@dataclass(frozen=True)
class ResNetConfig:
    """Every architectural knob of a pre-activation (NF-)ResNet."""

    block: Literal["basic", "bottleneck"]
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    stem: Literal["imagenet", "small"]
    """``imagenet``: 7×7 stride-2 conv (no bias) + 3×3 stride-2 max-pool; ``small``: 3×3 conv."""
    stem_width: int
    normalization: Literal["nf", "batch"] = "nf"
    weight_standardization: bool = True
    """``False`` with ``normalization="nf"`` is [I]'s "unscaled" control (plain convs)."""
    activation: str = "relu"
    alpha: float = 0.2
    bottleneck_ratio: float = 0.25
    dropout: float = 0.0
    stochastic_depth: float = 0.0
    """Rate of the last block; block i gets rate·i/num_blocks."""
    classifier_init_std: float = 0.01
    """Std of the classifier's normal init (official ``fc_init``: N(0, 0.01)); 0 initialises it
    to zero."""
    train_image_size: int = 224
    test_image_size: int = 224


_IMAGENET = dict(
    block="bottleneck", widths=(256, 512, 1024, 2048), stem="imagenet", stem_width=64,
    dropout=0.25, stochastic_depth=0.1,
)
_SMALL = dict(
    block="basic", depths=(2, 2, 2), widths=(32, 64, 128), stem="small", stem_width=32,
    train_image_size=16, test_image_size=16,
)

RESNET_VARIANTS: dict[str, ResNetConfig] = {
    "nf_resnet26": ResNetConfig(depths=(2, 2, 2, 2), **_IMAGENET),
    "nf_resnet50": ResNetConfig(depths=(3, 4, 6, 3), **_IMAGENET),
    "nf_resnet101": ResNetConfig(depths=(3, 4, 23, 3), **_IMAGENET),
    "nf_resnet_small": ResNetConfig(**_SMALL),
    "nf_resnet_cifar": ResNetConfig(**{
        **_SMALL, "widths": (64, 128, 256), "stem_width": 64,
        "train_image_size": 32, "test_image_size": 32,
    }),
}
"""The NF variants; ``study.models.resnet`` registers a BatchNorm twin of each."""

PLAIN_TWINS: dict[str, str] = {"nf_resnet_small_nows": "nf_resnet_small"}
"""NF twin without weight standardisation (the "unscaled" control of [I]) → its NF partner."""

ZERO_CLASSIFIER_FAMILIES = ("nf_resnet_small", "nf_resnet_cifar")
"""Families whose classifier started at zero before ``classifier_init_std`` was an option; every
other model already had N(0, 0.01). Runs recorded then keep their config hash at that value."""


def legacy_classifier_init_std(name: str) -> float:
    """The classifier init std model ``name`` had before it was an option (0 or 0.01)."""
    return 0.0 if model_info(name).family in ZERO_CLASSIFIER_FAMILIES else 0.01


class PreActBlock(nn.Module):
    """Pre-activation residual block: basic (3×3, 3×3) or bottleneck (1×1, 3×3, 1×1).

    The shortcut is the identity, or a strided 1×1 conv on the pre-activated, β-scaled input
    when the stride or the width changes ([I]; official ``NFResBlock``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, config: ResNetConfig,
        beta: float, stochastic_depth: float, skipinit: bool, stage: int,
    ) -> None:
        super().__init__()
        nf = config.normalization == "nf"
        conv = functools.partial(
            create_conv2d, weight_standardization=config.weight_standardization, bias=nf
        )
        norm_act = functools.partial(
            create_norm_act, activation=config.activation, normalization=config.normalization
        )
        self.stage = stage
        self.beta = beta
        self.alpha = config.alpha if nf else 1.0
        self.preact = norm_act(in_channels)
        self.shortcut = (
            conv(in_channels, out_channels, 1, stride=stride)
            if stride > 1 or in_channels != out_channels else None
        )
        if config.block == "bottleneck":
            mid = int(out_channels * config.bottleneck_ratio)
            layers = [
                ("conv0", conv(in_channels, mid, 1)), ("act0", norm_act(mid)),
                ("conv1", conv(mid, mid, 3, stride=stride)), ("act1", norm_act(mid)),
                ("conv2", conv(mid, out_channels, 1)),
            ]
        else:
            layers = [
                ("conv0", conv(in_channels, out_channels, 3, stride=stride)),
                ("act0", norm_act(out_channels)),
                ("conv1", conv(out_channels, out_channels, 3)),
            ]
        self.branch = nn.Sequential(OrderedDict(layers))
        self.branch_tap = BranchTap()
        self.stochastic_depth = StochasticDepth(stochastic_depth)
        self.skipinit_gain = skipinit_gain(skipinit and nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_forward(self, x)


class PreActResNet(nn.Module):
    """NF-ResNet (``normalization="nf"``) or its BatchNorm twin, from a :class:`ResNetConfig`.

    Args:
        config: the architecture.
        num_classes: classifier outputs.
        in_chans: input channels.
        dropout: before the classifier; ``None`` = ``config.dropout``.
        stochastic_depth: last block's rate; ``None`` = ``config.stochastic_depth``.
        skipinit: SkipInit gains on the branches (NF only); ``False`` fixes them at 1 for
            signal-propagation plots. ``None`` = on for NF nets.
        classifier_init_std: std of the classifier weight's N(0, std²) init (bias 0); 0 gives a
            zero weight. ``None`` = ``config.classifier_init_std`` (0.01, as the official code).

    Raises:
        ConfigError: ``skipinit=True`` for a BatchNorm net.
    """

    def __init__(
        self, config: ResNetConfig, *, num_classes: int = 1000, in_chans: int = 3,
        dropout: float | None = None, stochastic_depth: float | None = None,
        skipinit: bool | None = None, classifier_init_std: float | None = None,
    ) -> None:
        super().__init__()
        options = resolve_options(config, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                                  stochastic_depth=stochastic_depth, skipinit=skipinit,
                                  classifier_init_std=classifier_init_std)
        nf, skipinit = options.nf, options.skipinit
        dropout, stochastic_depth = options.dropout, options.stochastic_depth
        self.config = config
        self.default_config = options.default_config
        conv = functools.partial(
            create_conv2d, weight_standardization=config.weight_standardization
        )
        if config.stem == "imagenet":
            self.stem = nn.Sequential(OrderedDict([
                ("conv", conv(in_chans, config.stem_width, 7, stride=2, bias=False)),
                ("pool", nn.MaxPool2d(3, stride=2, padding=1)),
            ]))
        else:
            self.stem = nn.Sequential(OrderedDict([
                ("conv", conv(in_chans, config.stem_width, 3, bias=nf)),
            ]))

        blocks = []
        num_blocks = sum(config.depths)
        channels, expected_var = config.stem_width, 1.0
        for stage, (width, depth) in enumerate(zip(config.widths, config.depths)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                block = PreActBlock(
                    channels, width, stride=stride, config=config,
                    beta=1.0 / math.sqrt(expected_var) if nf else 1.0,
                    stochastic_depth=stochastic_depth * len(blocks) / num_blocks,
                    skipinit=skipinit, stage=stage,
                )
                blocks.append(block)
                channels = width
                # Brock et al. 2021 §3: Var(h_{i+1}) = Var(h_i) + α², reset after a transition.
                if block.shortcut is not None:
                    expected_var = 1.0
                expected_var += config.alpha**2
        self.blocks = nn.Sequential(*blocks)
        self.final_act = create_norm_act(
            channels, config.activation, normalization=config.normalization
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        init_classifier_(self.fc, options.classifier_init_std)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer (AGC leaves its weight unclipped)."""
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled features that feed the classifier."""
        x = self.blocks(self.stem(x))
        return self.pool(self.final_act(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def create_resnet(
    config: ResNetConfig, *, num_classes: int = 1000, in_chans: int = 3,
    dropout: float | None = None, stochastic_depth: float | None = None,
    skipinit: bool | None = None, classifier_init_std: float | None = None,
) -> PreActResNet:
    """Build a :class:`PreActResNet` (the registered builders are this with a config bound)."""
    return PreActResNet(
        config, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
        stochastic_depth=stochastic_depth, skipinit=skipinit, classifier_init_std=classifier_init_std,
    )


def bn_twin(config: ResNetConfig) -> ResNetConfig:
    """Return the BatchNorm twin of an NF config: BN + plain convs, same topology."""
    return dataclasses.replace(config, normalization="batch", weight_standardization=False)


for _name, _config in RESNET_VARIANTS.items():
    register_model(_name)(functools.partial(create_resnet, _config))
for _name, _partner in PLAIN_TWINS.items():
    register_model(_name, family=_partner, norm="nf_plain")(functools.partial(
        create_resnet, dataclasses.replace(RESNET_VARIANTS[_partner], weight_standardization=False)))
