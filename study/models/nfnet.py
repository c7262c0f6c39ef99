"""NFNet-F0…F6 and their BatchNorm twins (Brock et al. 2021 §5, Table 6 "−NF, +BN").

Paper: Brock, De, Smith, Simonyan, *High-Performance Large-Scale Image Recognition Without
Normalization*, ICML 2021. Official code: ``google-deepmind/deepmind-research``,
``nfnets/nfnet.py`` and ``nfnets/base.py`` (``nfnet_params``); timm's ``nfnet.py`` for the
PyTorch layout.

SE-ResNeXt-D style: stem 3×3 s2 →16, →32, →64, 3×3 s2 →128; stages of widths
[256, 512, 1536, 1536] and depths [1, 2, 6, 3]·N; block = γ·GELU·β → 1×1 conv → 3×3 grouped
conv (stride in transitions) → 3×3 grouped conv → 1×1 conv → SE·2 → stochastic depth →
SkipInit → ·α, added to a shortcut (2×2 avg-pool + 1×1 conv on the pre-activated input in
transitions); head 1×1 conv to 3072 → GELU → pool → dropout → linear N(0, 0.01).
The parameter counts match the paper exactly (F0: 71,489,284).

Where we differ from the official code, and why:
- Symmetric padding (PyTorch) instead of JAX ``SAME``: identical shapes, border values of
  the stride-2 convs differ slightly. The avg-pool shortcut uses ``ceil_mode`` and excludes
  padding, as ``SAME`` pooling does on odd sizes.
- β resets after any block with a projection shortcut (equal to the official rule here).
- The BN twins put BatchNorm before every activation (stem, blocks, head), drop α, β, γ,
  SkipInit and conv biases; everything else is the NFNet's.
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
from study.models._registry import InputDefaults, register_model
from study.models.layers import (
    BranchTap,
    SqueezeExcite,
    StochasticDepth,
    create_conv2d,
    create_norm_act,
    init_classifier_,
    residual_forward,
    skipinit_gain,
)


@dataclass(frozen=True)
class NFNetConfig:
    """Every architectural knob of an NFNet (defaults: the F-series, Brock et al. 2021 §5)."""

    depths: tuple[int, ...]
    train_image_size: int
    test_image_size: int
    dropout: float
    randaugment: int | None = None
    """RandAugment magnitude of the training recipe (4 layers; official ``experiment_nfnets.py``)."""
    widths: tuple[int, ...] = (256, 512, 1536, 1536)
    stem_widths: tuple[int, ...] = (16, 32, 64, 128)
    group_width: int = 128
    bottleneck_ratio: float = 0.5
    se_ratio: float = 0.5
    final_conv_mult: float = 2.0
    activation: str = "gelu"
    alpha: float = 0.2
    stochastic_depth: float = 0.25
    """Rate of the last block; block i gets rate·i/num_blocks."""
    classifier_init_std: float = 0.01
    normalization: Literal["nf", "batch"] = "nf"
    weight_standardization: bool = True


# Train/test resolution and dropout per variant (official ``base.nfnet_params``), RandAugment
# magnitude (official ``experiment_nfnets.py``: '405', '410', '410', '415', …).
NFNET_VARIANTS: dict[str, NFNetConfig] = {
    f"nfnet_f{n}": NFNetConfig(
        depths=tuple(d * (n + 1) for d in (1, 2, 6, 3)),
        train_image_size=train, test_image_size=test, dropout=dropout, randaugment=magnitude,
    )
    for n, (train, test, dropout, magnitude) in enumerate([
        (192, 256, 0.2, 5), (224, 320, 0.3, 10), (256, 352, 0.4, 10), (320, 416, 0.4, 15),
        (384, 512, 0.5, 15), (416, 544, 0.5, 15), (448, 576, 0.5, 15),
    ])
}


class NFBlock(nn.Module):
    """NFNet bottleneck block with grouped 3×3 convs and Squeeze-Excite (Brock et al. 2021 §5)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int, config: NFNetConfig,
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
        groups = int(out_channels * config.bottleneck_ratio) // config.group_width
        mid = groups * config.group_width
        self.stage = stage
        self.beta = beta
        self.alpha = config.alpha if nf else 1.0
        self.preact = norm_act(in_channels)
        self.shortcut = None
        if stride > 1 or in_channels != out_channels:
            pool = (
                nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)
                if stride > 1 else nn.Identity()
            )
            self.shortcut = nn.Sequential(OrderedDict([
                ("pool", pool), ("conv", conv(in_channels, out_channels, 1)),
            ]))
        self.branch = nn.Sequential(OrderedDict([
            ("conv0", conv(in_channels, mid, 1)), ("act0", norm_act(mid)),
            ("conv1", conv(mid, mid, 3, stride=stride, groups=groups)), ("act1", norm_act(mid)),
            ("conv1b", conv(mid, mid, 3, groups=groups)), ("act1b", norm_act(mid)),
            ("conv2", conv(mid, out_channels, 1)),
            ("se", SqueezeExcite(out_channels, config.se_ratio)),
        ]))
        self.branch_tap = BranchTap()
        self.stochastic_depth = StochasticDepth(stochastic_depth)
        self.skipinit_gain = skipinit_gain(skipinit and nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_forward(self, x)


class NFNet(nn.Module):
    """NFNet (``normalization="nf"``) or its BatchNorm twin, from an :class:`NFNetConfig`.

    Args:
        config: the architecture.
        num_classes: classifier outputs.
        in_chans: input channels.
        dropout: before the classifier; ``None`` = the variant's (F0 0.2 … F6 0.5).
        stochastic_depth: last block's rate; ``None`` = ``config.stochastic_depth`` (0.25).
        skipinit: SkipInit gains (NF only); ``False`` fixes them at 1. ``None`` = on for NF.
        classifier_init_std: std of the classifier weight's N(0, std²) init (bias 0); ``None`` =
            ``config.classifier_init_std`` (0.01, as the official code).

    Raises:
        ConfigError: ``skipinit=True`` for a BatchNorm net.
    """

    def __init__(
        self, config: NFNetConfig, *, num_classes: int = 1000, in_chans: int = 3,
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
            create_conv2d, weight_standardization=config.weight_standardization, bias=nf
        )
        norm_act = functools.partial(
            create_norm_act, activation=config.activation, normalization=config.normalization
        )

        stem, channels = [], in_chans
        for i, width in enumerate(config.stem_widths):
            if i > 0:  # activation between the stem convs, none after the last
                stem.append((f"act{i - 1}", norm_act(channels)))
            stride = 2 if i in (0, len(config.stem_widths) - 1) else 1
            stem.append((f"conv{i}", conv(channels, width, 3, stride=stride)))
            channels = width
        self.stem = nn.Sequential(OrderedDict(stem))

        blocks = []
        num_blocks = sum(config.depths)
        expected_var = 1.0
        for stage, (width, depth) in enumerate(zip(config.widths, config.depths)):
            for i in range(depth):
                block = NFBlock(
                    channels, width, stride=2 if stage > 0 and i == 0 else 1, config=config,
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

        head_width = int(config.final_conv_mult * channels)
        self.final_conv = conv(channels, head_width, 1)
        self.final_act = norm_act(head_width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_width, num_classes)
        init_classifier_(self.fc, options.classifier_init_std)

    def get_classifier(self) -> nn.Linear:
        """Return the final linear layer (AGC leaves its weight unclipped)."""
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled features that feed the classifier."""
        x = self.blocks(self.stem(x))
        return self.pool(self.final_act(self.final_conv(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


def create_nfnet(
    config: NFNetConfig, *, num_classes: int = 1000, in_chans: int = 3,
    dropout: float | None = None, stochastic_depth: float | None = None,
    skipinit: bool | None = None, classifier_init_std: float | None = None,
) -> NFNet:
    """Build an :class:`NFNet` (the registered builders are this with a config bound)."""
    return NFNet(
        config, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
        stochastic_depth=stochastic_depth, skipinit=skipinit, classifier_init_std=classifier_init_std,
    )


for _name, _config in NFNET_VARIANTS.items():
    _inputs = InputDefaults(_config.train_image_size, _config.test_image_size, _config.randaugment)
    register_model(_name, inputs=_inputs)(functools.partial(create_nfnet, _config))
    register_model(f"bn_{_name}", family=_name, norm="bn", inputs=_inputs)(functools.partial(
        create_nfnet,
        dataclasses.replace(_config, normalization="batch", weight_standardization=False),
    ))
