"""NFNet-F0…F6 and their BN twins (study/models/nfnet.py), against arXiv 2102.06171."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.models.layers import ScaledStdConv2d, SqueezeExcite
from study.models.nfnet import NFNet, NFNetConfig

# Official nfnets/nfnet.py: variant → (exact parameters with SkipInit gains, train px, test px, dropout)
PAPER = {
    0: (71_489_284, 192, 256, 0.2),
    1: (132_634_256, 224, 320, 0.3),
    2: (193_779_228, 256, 352, 0.4),
    3: (254_924_200, 320, 416, 0.4),
    4: (316_069_172, 384, 512, 0.5),
    5: (377_214_144, 416, 544, 0.5),
    6: (438_359_116, 448, 576, 0.5),
}


@pytest.mark.parametrize("n", range(7))
def test_parameter_count_and_defaults_match_the_paper(n, meta_model):
    params, train_px, test_px, dropout = PAPER[n]
    model = meta_model(f"nfnet_f{n}")
    assert sum(p.numel() for p in model.parameters()) == params
    config = model.default_config
    assert (config["train_image_size"], config["test_image_size"]) == (train_px, test_px)
    assert config["dropout"] == dropout and config["stochastic_depth"] == 0.25


@pytest.mark.parametrize("n", [0, 3])
def test_topology(n, meta_model):
    model = meta_model(f"nfnet_f{n}")
    stages = [block.stage for block in model.blocks]
    assert [stages.count(s) for s in range(4)] == [d * (n + 1) for d in (1, 2, 6, 3)]
    stem = [m for m in model.stem if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in stem] == [(16, 2), (32, 1), (64, 1), (128, 2)]
    for block in model.blocks:
        out = (256, 512, 1536, 1536)[block.stage]
        convs = block.branch
        assert convs.conv0.out_channels == out // 2 == convs.conv1.out_channels
        assert convs.conv1.in_channels // convs.conv1.groups == 128  # group width
        assert convs.conv1b.groups == convs.conv1.groups and convs.conv2.out_channels == out
        assert isinstance(convs.se, SqueezeExcite) and convs.se.fc0.out_features == out // 2
        first = block is next(b for b in model.blocks if b.stage == block.stage)
        assert convs.conv1.stride[0] == (2 if first and block.stage > 0 else 1)
        assert (block.shortcut is not None) == first
        if first and block.stage > 0:
            assert isinstance(block.shortcut.pool, nn.AvgPool2d)
    assert model.final_conv.out_channels == 3072
    assert model.get_classifier().in_features == 3072
    assert all(type(m) is ScaledStdConv2d for m in model.modules() if isinstance(m, nn.Conv2d))


def test_beta_and_stochastic_depth_schedule_of_f0(meta_model):
    model = meta_model("nfnet_f0")
    # Expected Var(h) before each block: +α² per block, back to 1 + α² after a transition.
    expected_var = [1, 1.04, 1.04, 1.08, 1.04, 1.08, 1.12, 1.16, 1.20, 1.24, 1.04, 1.08]
    assert [b.beta for b in model.blocks] == pytest.approx([1 / math.sqrt(v) for v in expected_var])
    assert [b.alpha for b in model.blocks] == [0.2] * 12
    rates = [b.stochastic_depth.rate for b in model.blocks]
    assert rates == pytest.approx([0.25 * i / 12 for i in range(12)])


def test_bn_twin_has_no_nf_machinery(meta_model):
    model = meta_model("bn_nfnet_f0")
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("gain") for n in names)
    assert not any(isinstance(m, ScaledStdConv2d) for m in model.modules())
    assert {b.alpha for b in model.blocks} == {1.0} and {b.beta for b in model.blocks} == {1.0}
    assert isinstance(model.final_act[0], nn.BatchNorm2d)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def _tiny(normalization="nf"):
    return NFNetConfig(
        depths=(1, 2, 1, 1), train_image_size=32, test_image_size=32, dropout=0.0,
        widths=(32, 64, 128, 128), stem_widths=(8, 16, 16, 32), group_width=16,
        normalization=normalization, weight_standardization=normalization == "nf",
    )


# -- an independent forward pass, written from the official nfnets/nfnet.py and base.py ---------
GELU_GAMMA = 1.7015043497085571  # official base.nonlinearities["gelu"]
ALPHA = 0.2


def _gelu(x):  # jax.nn.gelu's default, the tanh approximation, written out
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _conv(p, name, x, stride=1, groups=1):
    w = p[f"{name}.weight"]
    if f"{name}.gain" in p:  # Scaled WS: gain · (W − mean) / (std · sqrt(fan_in)), over the fan-in
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        std = w.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = p[f"{name}.gain"].view(-1, 1, 1, 1) * (w - mean) / (std * math.sqrt(w[0].numel()))
    return F.conv2d(x, w, p.get(f"{name}.bias"), stride=stride, padding=w.shape[-1] // 2, groups=groups)


def _act(p, name, x):
    """γ·GELU in the NF net; in its BN twin, BatchNorm (eval: running statistics), then GELU."""
    if f"{name}.0.running_mean" not in p:
        return GELU_GAMMA * _gelu(x)
    shape = (1, -1, 1, 1)
    bn = {k: p[f"{name}.0.{k}"].view(shape) for k in ("running_mean", "running_var", "weight", "bias")}
    return _gelu((x - bn["running_mean"]) / torch.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"])


def _reference_forward(p, x, config):
    nf = config.normalization == "nf"
    for i in range(len(config.stem_widths)):
        x = _act(p, f"stem.act{i - 1}", x) if i else x
        x = _conv(p, f"stem.conv{i}", x, stride=2 if i in (0, len(config.stem_widths) - 1) else 1)
    index, expected_std = 0, 1.0
    for stage, depth in enumerate(config.depths):
        for block_index in range(depth):
            name, stride = f"blocks.{index}", 2 if stage > 0 and block_index == 0 else 1
            beta = 1.0 / expected_std if nf else 1.0
            out = _act(p, f"{name}.preact", x) * beta
            shortcut = F.avg_pool2d(out, 2) if stride > 1 else out
            shortcut = _conv(p, f"{name}.shortcut.conv", shortcut) if f"{name}.shortcut.conv.weight" in p else x
            groups = p[f"{name}.branch.conv0.weight"].shape[0] // config.group_width
            out = _conv(p, f"{name}.branch.conv0", out)
            out = _conv(p, f"{name}.branch.conv1", _act(p, f"{name}.branch.act0", out), stride, groups)
            out = _conv(p, f"{name}.branch.conv1b", _act(p, f"{name}.branch.act1", out), 1, groups)
            out = _conv(p, f"{name}.branch.conv2", _act(p, f"{name}.branch.act1b", out))
            se = F.linear(out.mean(dim=(2, 3)), p[f"{name}.branch.se.fc0.weight"], p[f"{name}.branch.se.fc0.bias"])
            se = F.linear(F.relu(se), p[f"{name}.branch.se.fc1.weight"], p[f"{name}.branch.se.fc1.bias"])
            out = 2 * torch.sigmoid(se)[:, :, None, None] * out
            x = out * p[f"{name}.skipinit_gain"] * ALPHA + shortcut if nf else out + shortcut
            if block_index == 0:  # official: reset after each stage's first block, one α² of growth
                expected_std = 1.0
            expected_std = math.sqrt(expected_std**2 + ALPHA**2)
            index += 1
    x = _act(p, "final_act", _conv(p, "final_conv", x)).mean(dim=(2, 3))
    return F.linear(x, p["fc.weight"], p["fc.bias"])


@pytest.mark.parametrize("normalization", ["nf", "batch"])
def test_forward_equals_the_official_computation_written_out(normalization):
    """Every weight, gain, bias, SkipInit gain and BN statistic random and non-trivial, float64,
    eval mode: the model's logits equal an independent re-statement of the official forward
    pass (stem, β and α schedule, avg-pool shortcut, grouped convs, SE·2, SkipInit, head).
    A transition block whose shortcut sees the raw input, a β off by one block, a missing γ or
    SE factor each move the logits by far more than the tolerance."""
    torch.manual_seed(0)
    model = NFNet(_tiny(normalization), num_classes=5).double().eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if name.endswith(("gain", "running_var"))
                             else torch.randn_like(tensor) * (0.1 if name.endswith("bias") else 1.0))
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = _reference_forward(dict(model.state_dict()), x, model.config)
        torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-9)
        assert expected.abs().max() > 1e-3  # the logits are not trivially zero


def test_classifier_init_and_skipinit_at_zero():
    torch.manual_seed(0)
    model = NFNet(_tiny(), num_classes=1000)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(model.fc.bias == 0)
    assert all(b.skipinit_gain.item() == 0.0 for b in model.blocks)
    h = torch.randn(2, 64, 8, 8)
    inner = model.blocks[2]  # second block of stage 1: identity shortcut
    assert inner.shortcut is None
    torch.testing.assert_close(inner(h), h)  # SkipInit at 0: the block is the identity
    with torch.no_grad():
        inner.skipinit_gain.fill_(1.0)
    assert not torch.allclose(inner(h), h)
