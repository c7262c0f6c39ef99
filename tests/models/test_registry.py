"""Registry contract, and forward/backward for every registered model."""

import re

import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.models import build_model, list_models, register_model

# Large NFNets: their meta forward takes seconds; F0 keeps the code path in the fast suite.
_SLOW = re.compile(r"nfnet_f[1-6]$")
ALL_MODELS = [
    pytest.param(name, marks=pytest.mark.slow) if _SLOW.search(name) else name
    for name in list_models()
]


def test_registry_holds_the_zoo():
    names = set(list_models())
    expected = {f"nfnet_f{n}" for n in range(7)} | {f"bn_nfnet_f{n}" for n in range(7)}
    expected |= {"nf_resnet26", "nf_resnet50", "nf_resnet101", "bn_resnet26", "bn_resnet50",
                 "bn_resnet101", "nf_resnet_small", "nf_resnet_small_nows", "bn_resnet_small",
                 "nf_resnet_cifar", "bn_resnet_cifar"}
    assert expected <= names
    assert list_models() == sorted(names)


def test_unknown_model_is_a_config_error_listing_allowed_names():
    with pytest.raises(ConfigError) as info:
        build_model("nfnet_f9")
    assert "nfnet_f9" in str(info.value) and "nfnet_f0" in str(info.value)
    assert "nf_resnet_small" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"drop_rate": 0.1}, "unknown option.*drop_rate.*allowed.*dropout"),
        ({"dropout": 1.0}, "dropout.*1.0"),
        ({"stochastic_depth": -0.1}, "stochastic_depth"),
        ({"in_chans": 0}, "in_chans"),
    ],
)
def test_bad_overrides_are_config_errors(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model("nf_resnet_small", num_classes=10, **overrides)


def test_bad_num_classes_and_skipinit_on_bn_are_config_errors():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("nf_resnet_small", num_classes=0)
    with pytest.raises(ConfigError, match="skipinit"):
        build_model("bn_resnet_small", skipinit=True)


def test_registering_a_taken_name_fails_and_keeps_the_original():
    before = build_model("nf_resnet_small", num_classes=3)
    with pytest.raises(ValueError, match="nf_resnet_small"):
        register_model("nf_resnet_small")(lambda **kwargs: nn.Identity())
    assert type(build_model("nf_resnet_small", num_classes=3)) is type(before)


def test_overrides_reach_the_model():
    model = build_model("nf_resnet_small", num_classes=7, in_chans=1, dropout=0.3,
                        stochastic_depth=0.2)
    assert model.default_config["dropout"] == 0.3 and model.dropout.p == 0.3
    assert model.blocks[-1].stochastic_depth.rate == pytest.approx(0.2 * 5 / 6)
    assert model.stem.conv.in_channels == 1
    assert model.get_classifier().out_features == 7


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name):
    with torch.device("meta"):
        probe = build_model(name)
    small = probe.default_config["test_image_size"] <= 32
    device = "cpu" if small else "meta"  # the ImageNet models: shapes and autograd only
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(name, num_classes=10, in_chans=1)
        x = torch.randn(2, 1, 16 if small else 64, 16 if small else 64)
    out = model(x)
    assert out.shape == (2, 10)
    out.logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear) and classifier.out_features == 10
    assert any(classifier is m for m in model.modules())
    if small:
        assert torch.isfinite(out).all()
        assert classifier.bias.grad.abs().sum() > 0
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_naming_conventions(name):
    """The optimizer keeps names ending in bias/gain and BN parameters out of weight decay."""
    with torch.device("meta"):
        model = build_model(name)
    params = dict(model.named_parameters())
    bn = name.startswith("bn_")
    for module_name, module in model.named_modules():
        if type(module).__name__ == "ScaledStdConv2d":
            assert params[f"{module_name}.gain"].shape == (module.out_channels,)
        if hasattr(module, "branch_tap") and not bn:
            assert params[f"{module_name}.skipinit_gain"].shape == ()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bn
    assert not any(n.endswith("gain") for n in params) or not bn
