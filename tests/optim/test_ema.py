"""EMA of the weights with the paper's decay warmup (the NFNets recipe, Brock et al. 2021)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.optim import EMA


def model_with_bn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 2)).double()


def test_update_matches_hand_written_reference():
    model = model_with_bn()
    decay = 0.9
    ema = EMA(model, decay=decay)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        model(torch.randn(4, 1, 6, 6, generator=gen, dtype=torch.float64))  # moves BN stats
        ema.update_(model, step)
        d = min(decay, (1 + step) / (10 + step))  # 0.1, 0.18, 0.25, ... then capped at 0.9
        for n, p in model.named_parameters():
            reference[n] = d * reference[n] + (1 - d) * p.detach()
        for n, p in ema.module.named_parameters():
            torch.testing.assert_close(p, reference[n], rtol=1e-12, atol=1e-12)
        for (n, b), (_, e) in zip(model.named_buffers(), ema.module.named_buffers()):
            assert torch.equal(b, e), n


def test_decay_warmup_values():
    ema = EMA(nn.Linear(2, 2))
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(90) == pytest.approx(91 / 100)
    assert ema.decay_at(10**7) == 0.99999


def test_module_is_an_eval_copy_without_grads():
    model = model_with_bn()
    ema = EMA(model)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(ema.module[0].weight, model[0].weight)  # a copy, not a view


def test_mismatched_model_and_bad_decay():
    ema = EMA(nn.Linear(2, 2))
    with pytest.raises(ValueError):
        ema.update_(nn.Sequential(nn.Linear(2, 2)), 0)
    for decay in (1.0, -0.1):
        with pytest.raises(ConfigError):
            EMA(nn.Linear(2, 2), decay=decay)
