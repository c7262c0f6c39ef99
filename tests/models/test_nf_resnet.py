"""NF-ResNets and the small variants (study/models/nf_resnet.py), paper §3, docs/scale.md."""

import math

import pytest
import torch
from torch import nn

from study.models import build_model
from study.models.layers import GammaAct, ScaledStdConv2d


@pytest.mark.parametrize(
    ("name", "depths"),
    [("nf_resnet26", [2, 2, 2, 2]), ("nf_resnet50", [3, 4, 6, 3]), ("nf_resnet101", [3, 4, 23, 3])],
)
def test_imagenet_topology(name, depths, meta_model):
    model = meta_model(name)
    stages = [b.stage for b in model.blocks]
    assert [stages.count(s) for s in range(4)] == depths
    assert model.stem.conv.kernel_size == (7, 7) and model.stem.conv.stride == (2, 2)
    assert isinstance(model.stem.pool, nn.MaxPool2d)
    for block in model.blocks:
        width = (256, 512, 1024, 2048)[block.stage]
        assert block.branch.conv2.out_channels == width
        assert block.branch.conv0.out_channels == width // 4  # bottleneck
        if block.shortcut is not None:  # strided 1×1 conv on the pre-activated input
            assert block.shortcut.kernel_size == (1, 1)
            assert block.shortcut.stride == block.branch.conv1.stride
    preact = model.blocks[0].preact
    assert isinstance(preact, GammaAct) and preact.activation == "relu"
    assert model.default_config["stochastic_depth"] == 0.1
    assert model.get_classifier().in_features == 2048


def test_nf_resnet50_beta_and_stochastic_depth(meta_model):
    model = meta_model("nf_resnet50")
    # Expected Var(h) before each block: +α² per block, 1 + α² after each transition.
    expected_var = [1.00, 1.04, 1.08,
                    1.12, 1.04, 1.08, 1.12,
                    1.16, 1.04, 1.08, 1.12, 1.16, 1.20,
                    1.24, 1.04, 1.08]
    assert [b.beta for b in model.blocks] == pytest.approx([1 / math.sqrt(v) for v in expected_var])
    assert [b.stochastic_depth.rate for b in model.blocks] == pytest.approx(
        [0.1 * i / 16 for i in range(16)]
    )


def test_small_variant_topology():
    torch.manual_seed(0)
    model = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    assert [b.branch.conv1.out_channels for b in model.blocks] == [32, 32, 64, 64, 128, 128]
    assert model.stem.conv.kernel_size == (3, 3) and len(model.stem) == 1  # no max-pool
    assert all(b.alpha == 0.2 for b in model.blocks)
    # The first block keeps the stem width: no transition, β grows from the stem's variance.
    beta = [b.beta for b in model.blocks]
    assert model.blocks[0].shortcut is None and model.blocks[2].shortcut is not None
    expected_var = [1.0, 1.04, 1.08, 1.04, 1.08, 1.04]
    assert beta == pytest.approx([1 / math.sqrt(v) for v in expected_var])


def test_unscaled_control_differs_only_in_the_convs():
    ws = build_model("nf_resnet_small")
    plain = build_model("nf_resnet_small_nows")
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)
    ws_convs = [m for m in ws.modules() if isinstance(m, nn.Conv2d)]
    assert [type(m) for m in ws_convs] == [ScaledStdConv2d] * len(convs)
    assert [m.weight.shape for m in convs] == [m.weight.shape for m in ws_convs]
    assert [b.beta for b in plain.blocks] == [b.beta for b in ws.blocks]
    assert all(b.skipinit_gain is not None for b in plain.blocks)


def test_cifar_variant_is_wider():
    model = build_model("nf_resnet_cifar", num_classes=10)
    assert [b.branch.conv1.out_channels for b in model.blocks] == [64, 64, 128, 128, 256, 256]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
