"""The classifier starts as in the official code (``nfnets/nfnet.py``, ``nfnets/nf_resnet.py``:
weight N(0, 0.01²), bias 0) for every NF and BN model, and runs recorded when the small nets
started from a zero classifier keep their config hash."""

import pytest
import torch
from scipy import stats

from study.config.run_config import make_config
from study.config.study_file import load_preset
from study.errors import ConfigError
from study.models import build_model, legacy_classifier_init_std, list_models, model_info

#: Models cheap enough to build on a CPU; the rest are checked through their resolved option.
CPU_BUILDS = [name for name in list_models()
              if model_info(name).family in ("nf_resnet_small", "nf_resnet_cifar", "nf_resnet26")]


@pytest.mark.parametrize("name", list_models())
def test_every_model_defaults_to_the_official_init(name, meta_model):
    assert meta_model(name).default_config["classifier_init_std"] == 0.01


@pytest.mark.parametrize("name", CPU_BUILDS)
def test_classifier_weight_is_normal_with_std_001_and_bias_zero(name):
    torch.manual_seed(0)
    fc = build_model(name, num_classes=1000).get_classifier()
    weight = fc.weight.detach().double().flatten()
    assert torch.count_nonzero(fc.bias) == 0
    # Against the N(0, 0.01²) distribution itself (scipy), not against torch's sampler:
    # the default nn.Linear init (uniform, std 1/sqrt(3·fan_in)), a zero or a 0.02 init all fail.
    assert weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert abs(weight.mean().item()) < 4 * 0.01 / len(weight) ** 0.5
    assert stats.kstest(weight.numpy(), "norm", args=(0.0, 0.01)).pvalue > 1e-3


def test_zero_std_gives_the_zero_classifier_the_small_nets_had():
    model = build_model("nf_resnet_small", num_classes=10, in_chans=1, classifier_init_std=0.0)
    assert torch.count_nonzero(model.get_classifier().weight) == 0
    assert model(torch.randn(2, 1, 16, 16)).abs().max() == 0  # logits start at 0


def test_legacy_init_per_family():
    zero_before = ("nf_resnet_small", "bn_resnet_small", "nf_resnet_small_nows", "nf_resnet_cifar", "bn_resnet_cifar")
    assert [legacy_classifier_init_std(name) for name in zero_before] == [0.0] * len(zero_before)
    assert legacy_classifier_init_std("nf_resnet50") == legacy_classifier_init_std("bn_nfnet_f0") == 0.01


# Config hashes computed before model.classifier_init_std existed (the code of the commit that
# added it, minus the key): runs recorded then must keep them at the init they were trained with.
RECORDED = [
    ({**load_preset("smoke")}, 0.0, "34199caa7ade"),
    ({**load_preset("digits"), "model.norm": "bn"}, 0.0, "bfb0e1eb7da8"),
    ({"model.name": "nf_resnet50"}, 0.01, "980a52e7dd4c"),
    ({"model.name": "nfnet_f0", "model.norm": "bn"}, 0.01, "ba8f934df35a"),
]


@pytest.mark.parametrize(("overrides", "old_std", "recorded_hash"), RECORDED)
def test_recorded_runs_keep_their_hash_at_the_init_they_used(overrides, old_std, recorded_hash):
    assert make_config({**overrides, "model.classifier_init_std": old_std}).config_hash() == recorded_hash
    other = 0.01 if old_std == 0.0 else 0.0
    assert make_config({**overrides, "model.classifier_init_std": other}).config_hash() != recorded_hash
    # The default (0.01) is a new run where the old init differed, the same run where it did not.
    assert (make_config(overrides).config_hash() == recorded_hash) == (old_std == 0.01)


def test_bad_std_is_a_config_error():
    with pytest.raises(ConfigError, match="model.classifier_init_std"):
        make_config({"model.classifier_init_std": -0.01})
    with pytest.raises(ConfigError, match="classifier_init_std"):
        build_model("nf_resnet_small", classifier_init_std=-1.0)
