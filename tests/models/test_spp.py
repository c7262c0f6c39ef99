"""Signal propagation at initialisation (study/models/spp.py), [I] Fig. 1 (arXiv 2101.08692)."""

import dataclasses

import pytest
import torch

from study.models import build_model, signal_propagation
from study.models.nf_resnet import RESNET_VARIANTS, PreActResNet, bn_twin

ALPHA2 = 0.2**2
# The registered small net with deeper stages, so growth within a stage is visible. Finite
# width makes each block's increment noisy (0.57–1.26 α² over seeds 0–5); the stage means
# sit at 0.71–1.04 α² (borders of the 8×8 maps in the last stage lower it).
DEEP = dataclasses.replace(RESNET_VARIANTS["nf_resnet_small"], depths=(4, 4, 4))


def _spp(config, **kwargs):
    torch.manual_seed(0)
    model = PreActResNet(config, num_classes=10, **kwargs)
    return signal_propagation(model, torch.randn(32, 3, 32, 32))


def test_columns_and_rows():
    model = build_model("nf_resnet_small", skipinit=False)
    frame = signal_propagation(model, torch.randn(8, 3, 16, 16))
    assert list(frame.columns) == ["block", "stage", "avg_channel_squared_mean",
                                   "avg_channel_variance", "residual_variance"]
    assert frame["block"].tolist() == list(range(6))
    assert frame["stage"].tolist() == [0, 0, 1, 1, 2, 2]


def test_reference_statistics_of_one_block():
    torch.manual_seed(0)
    model = build_model("nf_resnet_small", skipinit=False)
    x = torch.randn(8, 3, 16, 16)
    frame = signal_propagation(model, x)
    with torch.no_grad():
        h = model.blocks[0](model.stem(x))
    channel_means = h.mean(dim=(0, 2, 3))
    assert frame["avg_channel_squared_mean"][0] == pytest.approx(
        channel_means.pow(2).mean().item(), rel=1e-4
    )
    assert frame["avg_channel_variance"][0] == pytest.approx(
        h.var(dim=(0, 2, 3), unbiased=False).mean().item(), rel=1e-4
    )


def test_nf_resnet_variance_grows_by_alpha_squared_and_resets():
    frame = _spp(DEEP, skipinit=False)
    assert frame["avg_channel_squared_mean"].max() < 0.02  # Scaled WS: no mean shift
    for stage, rows in frame.groupby("stage"):
        var = rows["avg_channel_variance"].to_numpy()
        increments = var[1:] - var[:-1]
        assert (increments > 0.3 * ALPHA2).all(), (stage, var)
        assert 0.6 * ALPHA2 < increments.mean() < 1.3 * ALPHA2, (stage, var)
        if stage > 0:  # after a transition: back to about 1 + α²
            assert var[0] == pytest.approx(1 + ALPHA2, abs=0.15)
            assert var[0] < frame[frame["stage"] == stage - 1]["avg_channel_variance"].iloc[-1]


def test_bn_twin_variance_grows_linearly_within_a_stage():
    frame = _spp(bn_twin(DEEP))
    for _, rows in frame.groupby("stage"):
        var = rows["avg_channel_variance"].to_numpy()
        increments = var[1:] - var[:-1]
        assert (increments > 0.5 * increments.mean()).all()
        assert (increments < 2 * increments.mean()).all()
        assert increments.mean() > 5 * ALPHA2  # unlike NF's α² per block
    starts = frame.groupby("stage")["avg_channel_variance"].first().to_numpy()
    ends = frame.groupby("stage")["avg_channel_variance"].last().to_numpy()
    assert (starts[1:] < ends[:-1]).all()  # reset at transitions


def test_without_weight_standardisation_the_mean_shift_grows():
    plain = _spp(dataclasses.replace(DEEP, weight_standardization=False), skipinit=False)
    scaled = _spp(DEEP, skipinit=False)
    sq_mean = plain["avg_channel_squared_mean"].to_numpy()
    assert sq_mean[-1] > 10 * sq_mean[0] and sq_mean[-1] > 0.3
    assert sq_mean[-1] > 30 * scaled["avg_channel_squared_mean"].iloc[-1]


def test_spp_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = build_model("bn_resnet_small", dropout=0.5, stochastic_depth=0.5).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 16, 16)
    first = signal_propagation(model, x)
    assert first.equals(signal_propagation(model, x))  # stochastic depth and dropout off
    assert not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
