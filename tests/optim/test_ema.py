"""EMA of the weights and the states with the paper's decay warmup (arXiv 2102.06171 App. A;
official ``nfnets/utils.py`` ``tf1_ema`` over params and states in ``experiment.py``)."""

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


def test_update_matches_hand_written_reference_for_params_and_buffers():
    model = model_with_bn()
    decay = 0.9
    ema = EMA(model, decay=decay)
    reference = {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        model(torch.randn(4, 1, 6, 6, generator=gen, dtype=torch.float64))  # moves BN stats
        ema.update_(step)
        d = min(decay, (1 + step) / (10 + step))  # 0.1, 0.18, 0.25, ... then capped at 0.9
        for n, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point():  # weights, biases, running mean and variance: averaged
                reference[n] = d * reference[n] + (1 - d) * t.detach()
            else:  # num_batches_tracked: copied
                reference[n] = t.clone()
        for n, t in [*ema.module.named_parameters(), *ema.module.named_buffers()]:
            torch.testing.assert_close(t, reference[n], rtol=1e-12, atol=1e-12)
    assert int(ema.module[1].num_batches_tracked) == 6
    assert not torch.equal(ema.module[1].running_var, model[1].running_var)  # averaged, not copied


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


class _NoWalks(nn.Sequential):
    """Refuses to be walked once ``walks_allowed`` is False."""

    walks_allowed = True

    def _check(self):
        if not self.walks_allowed:
            raise AssertionError("EMA walked the module tree during an update")

    def named_parameters(self, *args, **kwargs):
        self._check()
        return super().named_parameters(*args, **kwargs)

    def named_buffers(self, *args, **kwargs):
        self._check()
        return super().named_buffers(*args, **kwargs)

    def named_modules(self, *args, **kwargs):
        self._check()
        return super().named_modules(*args, **kwargs)


def test_an_update_walks_no_module_tree():
    model = _NoWalks(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = EMA(model, decay=0.5)
    model.walks_allowed = False
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update_(100)
    model.walks_allowed = True
    torch.testing.assert_close(ema.module[0].weight, model[0].weight - 0.5)


def test_follows_replaced_parameter_data_and_buffers():
    """AGC moves parameters into a flat buffer (``p.data = view``) and ``model.to`` replaces
    buffers: the EMA follows the model's current tensors, not the ones it saw first."""
    model = model_with_bn()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.data = torch.zeros_like(model[0].weight)
    model[1].running_mean = torch.full((3,), 4.0, dtype=torch.float64)
    before = ema.module[0].weight.clone()
    ema.update_(1000)
    torch.testing.assert_close(ema.module[0].weight, before * 0.5)
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((3,), 2.0, dtype=torch.float64))


def test_bad_decay():
    for decay in (1.0, -0.1):
        with pytest.raises(ConfigError, match="optim.ema_decay"):
            EMA(nn.Linear(2, 2), decay=decay)
