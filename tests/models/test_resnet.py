"""BatchNorm twins (study/models/resnet.py, nfnet.py): same topology as the NF partner."""

import pytest
import torch
from torch import nn

from study.models import build_model
from study.models.layers import BranchTap
from study.models.resnet import BN_TWINS

PAIRS = sorted(BN_TWINS.items()) + [(f"bn_nfnet_f{n}", f"nfnet_f{n}") for n in (0, 1)]


def _structure(model):
    blocks = [m for m in model.modules() if isinstance(getattr(m, "branch_tap", None), BranchTap)]
    convs = [
        (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.groups)
        for m in model.modules() if isinstance(m, nn.Conv2d)
    ]
    return [(type(b).__name__, b.stage) for b in blocks], convs


@pytest.mark.parametrize(("bn_name", "nf_name"), PAIRS)
def test_bn_twin_has_its_partners_blocks_and_convs(bn_name, nf_name, meta_model):
    bn, nf = meta_model(bn_name), meta_model(nf_name)
    assert _structure(bn) == _structure(nf)
    assert bn.default_config == nf.default_config
    assert not any(isinstance(m, nn.BatchNorm2d) for m in nf.modules())
    norms = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    acts_nf = sum(type(m).__name__ == "GammaAct" and m.gamma != 1.0 for m in nf.modules())
    assert len(norms) == acts_nf  # one BN in front of every activation the NF net scales by γ
    assert all(b.skipinit_gain is None and b.alpha == 1.0 for b in bn.blocks)


def test_bn_twin_trains_in_batch_mode():
    torch.manual_seed(0)
    model = build_model("bn_resnet_small", num_classes=10, in_chans=1)
    x = torch.randn(8, 1, 16, 16)
    model(x)
    running = model.blocks[0].preact[0].running_mean
    assert running.abs().sum() > 0  # batch statistics were used and tracked
