"""BatchNorm twins of the NF-ResNets: the baselines of Brock et al. 2021 Fig. 2a and [I] Fig. 1
(Brock, De, Smith, ICLR 2021, arXiv 2101.08692).

Each twin has its NF partner's topology (same blocks, widths, strides, shortcuts, stem and
head; built by the same code in ``study.models.nf_resnet``) with BatchNorm before every
activation, plain convs without bias (N(0, 1/fan_in) init) and no α, β, γ or SkipInit: a
standard pre-activation ResNet (He et al. 2016, "Identity Mappings"), with a final BN-ReLU
before pooling.

Where we differ from common BN ResNets: the last BN of each branch is not zero-initialised
(that would be SkipInit by another name, which the twin is meant to lack). The classifier
starts at N(0, 0.01) like its NF partner's, where the official BN ResNet
(``nfnets/resnet.py``) defaults to a zero one: the twins differ only in normalisation.
"""

from __future__ import annotations

import functools

from study.models._registry import register_model
from study.models.nf_resnet import RESNET_VARIANTS, bn_twin, create_resnet

BN_TWINS: dict[str, str] = {
    "bn_resnet26": "nf_resnet26",
    "bn_resnet50": "nf_resnet50",
    "bn_resnet101": "nf_resnet101",
    "bn_resnet_small": "nf_resnet_small",
    "bn_resnet_cifar": "nf_resnet_cifar",
}
"""BatchNorm twin name → NF partner name."""

for _name, _partner in BN_TWINS.items():
    register_model(_name, family=_partner, norm="bn")(
        functools.partial(create_resnet, bn_twin(RESNET_VARIANTS[_partner])))
