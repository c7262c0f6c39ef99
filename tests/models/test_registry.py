"""Registry contract, and forward/backward for every registered model."""

import re
from typing import get_args

import pytest
import torch
from torch import nn

from study.config.run_config import ModelConfig, make_config
from study.errors import ConfigError
from study.models import NORMS, build_model, list_models, model_info, register_model, twin_name, twins
from study.models.layers import ScaledStdConv2d

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
    bn = model_info(name).norm == "bn"
    for module_name, module in model.named_modules():
        if type(module).__name__ == "ScaledStdConv2d":
            assert params[f"{module_name}.gain"].shape == (module.out_channels,)
        if hasattr(module, "branch_tap") and not bn:
            assert params[f"{module_name}.skipinit_gain"].shape == ()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bn
    assert not any(n.endswith("gain") for n in params) or not bn


def test_twins_are_data_in_the_registry():
    assert twins("nf_resnet_small") == {"nf": "nf_resnet_small", "bn": "bn_resnet_small",
                                        "nf_plain": "nf_resnet_small_nows"}
    assert twins("bn_nfnet_f3") == {"nf": "nfnet_f3", "bn": "bn_nfnet_f3"}
    for name in list_models():
        info = model_info(name)
        family = twins(name)
        assert family[info.norm] == name and family["nf"] == info.family
        assert all(model_info(twin).family == info.family for twin in family.values())


@pytest.mark.parametrize("name", ALL_MODELS)
def test_recorded_norm_is_what_the_builder_builds(name, meta_model):
    """The registry's norm is not a label: BN layers exactly in ``bn`` models, Scaled WS
    convs exactly in ``nf`` models, plain convs and no BN in ``nf_plain``."""
    model = meta_model(name)
    norm = model_info(name).norm
    assert norm in NORMS
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == (norm == "bn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(m, ScaledStdConv2d) == (norm == "nf") for m in convs)


@pytest.mark.parametrize(("name", "norm", "twin"), [
    ("nf_resnet_small", "bn", "bn_resnet_small"),
    ("bn_resnet_small", "nf_plain", "nf_resnet_small_nows"),
    ("nf_resnet_small_nows", "nf", "nf_resnet_small"),
    ("bn_nfnet_f0", "nf", "nfnet_f0"),
    ("nf_resnet50", "nf", "nf_resnet50"),
])
def test_model_norm_resolves_through_the_registry(name, norm, twin):
    assert twin_name(name, norm) == twin
    assert make_config({"model.name": name, "model.norm": norm}).model.resolved_name == twin


def test_a_missing_twin_is_a_config_error_naming_what_the_family_has():
    with pytest.raises(ConfigError, match="no nf_plain twin; its family has: nf, bn"):
        twin_name("bn_nfnet_f0", "nf_plain")
    with pytest.raises(ConfigError, match="model.norm.*nf_plain.*nf, bn"):
        make_config({"model.name": "nfnet_f0", "model.norm": "nf_plain"})
    with pytest.raises(ConfigError, match="allowed: nf, bn, nf_plain"):
        twin_name("nfnet_f0", "gn")


def test_config_norms_are_the_registry_norms():
    annotation = ModelConfig.model_fields["norm"].annotation
    assert set(get_args(get_args(annotation)[0])) == set(NORMS)


def test_a_family_holds_one_model_of_each_norm():
    with pytest.raises(ValueError, match="already has a bn model, 'bn_resnet_small'"):
        register_model("bn_resnet_small_again", family="nf_resnet_small", norm="bn")(lambda **kw: nn.Identity())
    with pytest.raises(ValueError, match="nf member"):
        register_model("nf_other", family="nf_resnet_small", norm="nf")
    assert "bn_resnet_small_again" not in list_models() and "nf_other" not in list_models()
