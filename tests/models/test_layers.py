"""Scaled WS conv, γ gains, SE, stochastic depth, SkipInit (study/models/layers.py)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.models.layers import (
    NONLINEARITY_GAINS,
    GammaAct,
    ScaledStdConv2d,
    SqueezeExcite,
    StochasticDepth,
    create_conv2d,
    create_norm_act,
    skipinit_gain,
)


def _reference_ws(weight, gain):
    fan_in = weight[0].numel()
    mean = weight.mean(dim=(1, 2, 3), keepdim=True)
    std = weight.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return gain.view(-1, 1, 1, 1) * (weight - mean) / (std * math.sqrt(fan_in))


def _conv(seed=0):
    torch.manual_seed(seed)
    conv = ScaledStdConv2d(16, 24, 3, padding=1)
    with torch.no_grad():
        conv.weight.normal_(0.3, 2.0)  # far from standardised on purpose
        conv.gain.uniform_(0.5, 1.5)
        conv.bias.normal_()
    return conv


def test_scaled_ws_matches_reference_formula():
    conv = _conv()
    x = torch.randn(2, 16, 8, 8)
    expected_w = _reference_ws(conv.weight, conv.gain)
    torch.testing.assert_close(conv.standardized_weight(), expected_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        conv(x), F.conv2d(x, expected_w, conv.bias, padding=1), rtol=1e-4, atol=1e-5
    )


def test_scaled_ws_conv_preserves_unit_variance_on_white_noise():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(64, 128, 3)  # no padding: every output sees 576 unit inputs
    with torch.no_grad():
        conv.weight.normal_(0.5, 3.0)
        y = conv(torch.randn(32, 64, 12, 12))
    var = y.var(dim=(0, 2, 3), unbiased=False)
    assert var.mean().item() == pytest.approx(1.0, abs=0.03)
    assert ((var - 1).abs() < 0.1).all()
    assert y.mean(dim=(0, 2, 3)).pow(2).mean().item() < 0.01


def test_scaled_ws_parameters_and_init():
    conv = ScaledStdConv2d(8, 4, 3, groups=2)
    assert isinstance(conv, nn.Conv2d)
    assert dict(conv.named_parameters()).keys() == {"weight", "bias", "gain"}
    assert conv.gain.shape == (4,) and torch.all(conv.gain == 1)
    assert torch.all(conv.bias == 0)
    assert conv.weight.shape == (4, 4, 3, 3)


def test_scaled_ws_eval_cache_follows_weight_changes():
    conv = _conv().eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        first = conv(x)
        assert conv._weight_for_forward() is conv._weight_for_forward()  # folded once
        conv.weight.mul_(-1.5).add_(0.2)  # an in-place update, as EMA or an optimizer does
        conv.gain.mul_(2)
        after = conv(x)
    expected = F.conv2d(x, _reference_ws(conv.weight, conv.gain), conv.bias, padding=1)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first, after)

    other = _conv(seed=1)
    conv.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(conv(x), other(x), rtol=1e-5, atol=1e-6)


def test_scaled_ws_gradients_flow_in_train_and_in_eval_with_grad():
    conv = _conv()
    for mode in (True, False):
        conv.train(mode)
        conv.zero_grad()
        conv(torch.randn(2, 16, 8, 8)).square().sum().backward()
        assert conv.weight.grad.abs().sum() > 0 and conv.gain.grad.abs().sum() > 0


def test_create_conv2d_plain_variant_has_fan_in_init():
    torch.manual_seed(0)
    conv = create_conv2d(256, 256, 3, weight_standardization=False, bias=False)
    assert type(conv) is nn.Conv2d and conv.bias is None and conv.padding == (1, 1)
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(256 * 9), rel=0.02)
    assert isinstance(create_conv2d(4, 4, 1), ScaledStdConv2d)


def _numpy_activations():
    from scipy.special import erf

    return {
        "relu": lambda z: np.maximum(z, 0.0),
        "gelu": lambda z: 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
        "gelu_exact": lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
        "silu": lambda z: z / (1 + np.exp(-z)),
        "identity": lambda z: z,
    }


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_exact", "silu", "identity"])
def test_gamma_is_inverse_std_of_activation_under_unit_gaussian(name):
    z = np.linspace(-12, 12, 480_001)
    density = np.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    act = _numpy_activations()[name](z)
    mean = np.trapezoid(act * density, z)
    second = np.trapezoid(act**2 * density, z)
    gamma = 1 / math.sqrt(second - mean**2)
    table = NONLINEARITY_GAINS[name.removesuffix("_exact")]
    # The official constants were estimated by sampling: ReLU's is 6e-4 above the integral.
    assert table == pytest.approx(gamma, rel=1e-3)


@pytest.mark.parametrize("name", ["relu", "gelu", "silu", "identity"])
def test_gamma_act_is_gamma_times_the_activation(name):
    z = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    expected = torch.from_numpy(_numpy_activations()[name](z.numpy())) * NONLINEARITY_GAINS[name]
    torch.testing.assert_close(GammaAct(name)(z), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(GammaAct(name, gamma=1.0)(z), expected / NONLINEARITY_GAINS[name])


def test_unknown_activation_and_normalization_are_programmer_errors():
    with pytest.raises(ValueError, match="activation.*'swish'.*relu"):
        GammaAct("swish")
    with pytest.raises(ValueError, match="normalization.*'layer'"):
        create_norm_act(4, "relu", normalization="layer")


def test_norm_act_batch_has_batchnorm_and_plain_activation():
    module = create_norm_act(4, "relu", normalization="batch")
    assert isinstance(module[0], nn.BatchNorm2d)
    x = torch.randn(8, 4, 3, 3)
    module.eval()  # fresh running stats: identity normalisation
    torch.testing.assert_close(module(x), F.relu(x) * (1 / math.sqrt(1 + 1e-5)))


def test_squeeze_excite_gate():
    torch.manual_seed(0)
    se = SqueezeExcite(8)
    assert se.fc0.out_features == 4 and isinstance(se.fc0, nn.Linear)
    x = torch.randn(3, 8, 5, 5)
    s = x.mean(dim=(2, 3)) @ se.fc0.weight.T + se.fc0.bias
    s = torch.relu(s) @ se.fc1.weight.T + se.fc1.bias
    expected = x * 2 * torch.sigmoid(s)[:, :, None, None]
    torch.testing.assert_close(se(x), expected)


def test_squeeze_excite_init_is_haikus_truncated_normal():
    """Official ``hk.Linear``: weights ~ N(0, 1/fan_in) truncated at ±2 std, zero biases."""
    torch.manual_seed(0)
    se = SqueezeExcite(1024)  # fc0: 1024 -> 512, fc1: 512 -> 1024
    for fc in (se.fc0, se.fc1):
        std = fc.in_features ** -0.5
        weight = fc.weight.detach()
        assert weight.abs().max() <= 2 * std and torch.equal(fc.bias, torch.zeros_like(fc.bias))
        # A normal truncated at ±2σ keeps 0.8796σ of spread (PyTorch's uniform default: 0.577σ).
        assert weight.std().item() == pytest.approx(0.8796 * std, rel=0.01)
        assert abs(weight.mean().item()) < 0.01 * std


def test_stochastic_depth_drops_whole_samples_without_rescaling():
    torch.manual_seed(0)
    drop = StochasticDepth(0.3)
    x = torch.ones(4000, 3, 2, 2)
    y = drop(x)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1).all(1))
    assert (per_sample[:, 0] == 1).float().mean().item() == pytest.approx(0.7, abs=0.03)
    scaled = StochasticDepth(0.3, scale_by_keep=True)(x).unique()
    torch.testing.assert_close(scaled, torch.tensor([0.0, 1 / 0.7]))
    assert drop.eval()(x) is x
    assert StochasticDepth(0.0)(x) is x


def test_skipinit_gain_is_a_zero_scalar_or_none():
    gain = skipinit_gain(True)
    assert isinstance(gain, nn.Parameter) and gain.shape == () and gain.item() == 0.0
    assert skipinit_gain(False) is None
