"""Nesterov SGD, its parameter groups and the learning-rate schedule.

The paper trains with Nesterov momentum 0.9, weight decay 2e-5 on weights only (not on gains,
biases or SkipInit gains), a linear warmup and a cosine decay to zero.

Order of operations (official ``SGD_AGC``): clip, then weight decay, then momentum. The trainer calls
AGC on ``.grad`` before ``optimizer.step()``; ``torch.optim.SGD`` adds ``weight_decay * W`` to
that clipped gradient inside ``step()`` and only then updates the momentum buffer, so the order
holds. Under AMP the trainer must ``scaler.unscale_(optimizer)`` before clipping, so that AGC
compares true gradient norms with weight norms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from study.errors import ConfigError

NO_DECAY_SUFFIXES = ("bias", "gain")  # biases, Scaled WS gains, SkipInit gains (``skipinit_gain``)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Splits the trainable parameters of ``model`` into a decayed and an undecayed group.

    Parameters whose name ends in ``bias`` or ``gain`` (which covers ``skipinit_gain``) and
    every parameter of a normalisation layer (BatchNorm, GroupNorm, LayerNorm) get no weight
    decay; the rest get ``weight_decay``. Selection is by name and module type, never by shape.

    Args:
        model: the network.
        weight_decay: the L2 coefficient for the decayed group; >= 0.

    Returns:
        ``torch.optim`` parameter groups, each with ``params``, ``weight_decay`` and ``name``
        (``"decay"`` or ``"no_decay"``); an empty group is left out.

    Raises:
        ConfigError: ``weight_decay`` negative.
    """
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(f"optim.weight_decay: got {weight_decay!r}; allowed: a number >= 0")
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS)
                   for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = name.endswith(NO_DECAY_SUFFIXES) or id(p) in norm_params
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """The learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine.

    Warmup: ``peak_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first step
    already moves; ``peak_lr`` is reached at the last warmup step). Then
    ``peak_lr * (1 + cos(pi * t)) / 2`` with ``t = (step - warmup_steps) / (total_steps -
    warmup_steps)``, which reaches 0 at ``step = total_steps``; later steps get 0.

    Args:
        step: optimizer steps taken so far; >= 0.
        total_steps: steps in the whole run; > 0.
        warmup_steps: steps of linear warmup; 0 <= warmup_steps <= total_steps.
        peak_lr: the learning rate at the end of warmup (already scaled by batch size).

    Returns:
        The learning rate, a Python float.

    Raises:
        ValueError: a negative step, ``total_steps < 1`` or warmup outside [0, total_steps]
            (a caller's bug: the trainer derives them from a validated config).

    Example:
        >>> lr_at(0, total_steps=100, warmup_steps=10, peak_lr=1.6)
        0.16
    """
    if step < 0:
        raise ValueError(f"step: got {step}; allowed: >= 0")
    if total_steps < 1:
        raise ValueError(f"total_steps: got {total_steps}; allowed: >= 1")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps: got {warmup_steps}; allowed: 0..{total_steps} "
                          "(total_steps)")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return 0.0
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, lr: float, *, momentum: float = 0.9,
                    nesterov: bool = True, weight_decay: float = 2e-5) -> torch.optim.SGD:
    """SGD with (Nesterov) momentum over :func:`param_groups` of ``model``.

    Call AGC on the (all-reduced, AMP-unscaled) gradients before ``step()``: the clipped
    gradient then receives weight decay and enters the momentum buffer, the paper's order.

    Args:
        model: the network.
        lr: the learning rate to start with (the trainer sets ``lr_at(...)`` every step).
        momentum: momentum coefficient, in [0, 1).
        nesterov: Nesterov momentum; needs ``momentum > 0``.
        weight_decay: L2 coefficient on weights (not on gains, biases, norm layers).

    Returns:
        A ``torch.optim.SGD`` using the multi-tensor (``foreach``) implementation.

    Raises:
        ConfigError: a negative ``lr``, ``momentum`` outside [0, 1), Nesterov without momentum,
            a negative ``weight_decay``.
    """
    if not (math.isfinite(lr) and lr >= 0):
        raise ConfigError(f"optim.lr: got {lr!r}; allowed: a number >= 0")
    if not 0 <= momentum < 1:
        raise ConfigError(f"optim.momentum: got {momentum!r}; allowed: 0 <= momentum < 1")
    if nesterov and momentum == 0:
        raise ConfigError("optim.nesterov: got true with optim.momentum 0; allowed: nesterov "
                          "only with momentum > 0")
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum,
                           nesterov=nesterov, foreach=True)
