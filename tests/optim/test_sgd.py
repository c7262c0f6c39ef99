"""Parameter groups, the learning-rate schedule and the clip -> decay -> momentum order."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.optim import AGC, build_optimizer, lr_at, param_groups


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.gain = nn.Parameter(torch.ones(3))
        self.skipinit_gain = nn.Parameter(torch.zeros(()))
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 4)

    def get_classifier(self):
        return self.fc


def group_names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: sorted(names[id(p)] for p in g["params"]) for g in groups}


def test_no_decay_on_gains_biases_and_batchnorm():
    model = Block()
    groups = param_groups(model, weight_decay=2e-5)
    assert group_names(model, groups) == {
        "decay": ["conv.weight", "fc.weight"],
        "no_decay": ["bn.bias", "bn.weight", "conv.bias", "fc.bias", "gain", "skipinit_gain"],
    }
    assert {g["name"]: g["weight_decay"] for g in groups} == {"decay": 2e-5, "no_decay": 0.0}


@pytest.mark.parametrize("name", ["nf_resnet_small", "bn_resnet_small"])
def test_groups_on_real_models(name):
    from study.models import build_model

    model = build_model(name, num_classes=10, in_chans=1)
    named = group_names(model, param_groups(model, 1e-4))
    bn_params = {f"{m}.{p}" for m, mod in model.named_modules()
                 if isinstance(mod, nn.BatchNorm2d) for p in ("weight", "bias")}
    for n in named["no_decay"]:
        assert n.endswith(("bias", "gain")) or n in bn_params, n
    for n in named["decay"]:
        assert n.endswith("weight") and n not in bn_params, n
    assert len(named["decay"]) + len(named["no_decay"]) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out_and_bad_decay_raises():
    model = Block()
    model.conv.weight.requires_grad_(False)
    assert "conv.weight" not in group_names(model, param_groups(model, 0.1))["decay"]
    with pytest.raises(ConfigError):
        param_groups(model, -1e-5)


def test_lr_schedule_values():
    peak, total, warm = 1.6, 110, 10
    assert lr_at(0, total, warm, peak) == pytest.approx(0.16)
    assert lr_at(4, total, warm, peak) == pytest.approx(0.8)
    assert lr_at(9, total, warm, peak) == pytest.approx(peak)
    assert lr_at(10, total, warm, peak) == pytest.approx(peak)  # cosine starts at the peak
    assert lr_at(60, total, warm, peak) == pytest.approx(peak / 2)
    assert lr_at(85, total, warm, peak) == pytest.approx(peak * (1 + math.cos(math.pi * 0.75)) / 2)
    assert lr_at(110, total, warm, peak) == 0.0
    assert lr_at(500, total, warm, peak) == 0.0
    after = [lr_at(s, total, warm, peak) for s in range(warm, total)]
    assert all(a > b for a, b in zip(after, after[1:]))
    assert lr_at(0, 5, 0, 0.1) == pytest.approx(0.1)  # no warmup


@pytest.mark.parametrize("args", [(-1, 10, 2, 0.1), (0, 0, 0, 0.1), (0, 10, 11, 0.1),
                                  (0, 10, -1, 0.1)])
def test_lr_schedule_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        lr_at(*args)


def test_build_optimizer_settings_and_errors():
    opt = build_optimizer(Block(), lr=0.4)
    assert isinstance(opt, torch.optim.SGD)
    for g in opt.param_groups:
        assert (g["lr"], g["momentum"], g["nesterov"], g["foreach"]) == (0.4, 0.9, True, True)
    with pytest.raises(ConfigError):
        build_optimizer(Block(), lr=0.1, momentum=0.0)  # nesterov needs momentum
    with pytest.raises(ConfigError):
        build_optimizer(Block(), lr=-0.1)
    with pytest.raises(ConfigError):
        build_optimizer(Block(), lr=0.1, momentum=1.0)


def reference_clip(w, g, clipping, eps=1e-3):
    """Row-wise AGC for a 2-D or 1-D tensor, written out (Brock et al. 2021, §4)."""
    rows = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    grows = g.reshape(rows.shape).clone()
    for i in range(rows.shape[0]):
        max_norm = clipping * max(rows[i].norm().item(), eps)
        g_norm = grows[i].norm().item()
        if g_norm > max_norm:
            grows[i] *= max_norm / max(g_norm, 1e-6)
    return grows.reshape(g.shape)


def test_clip_then_decay_then_nesterov_momentum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    lr, mu, wd, clipping = 0.3, 0.9, 0.05, 0.02
    opt = build_optimizer(model, lr=lr, momentum=mu, weight_decay=wd)
    agc = AGC(model.parameters(), clipping=clipping)
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    buf = {}
    for step in range(3):
        grads = {n: torch.randn(p.shape, dtype=p.dtype) for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        agc.clip_()
        opt.step()
        for n in ref:  # official SGD_AGC: clip the gradient, then add weight decay, then momentum
            d = reference_clip(ref[n], grads[n], clipping)
            d = d + (wd if n.endswith("weight") else 0.0) * ref[n]
            buf[n] = d.clone() if step == 0 else mu * buf[n] + d
            ref[n] = ref[n] - lr * (d + mu * buf[n])
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), ref[n], rtol=1e-12, atol=1e-12)
