"""Exponential moving average of the weights, evaluated in place of the model (NFNets recipe).

The paper evaluates an EMA of the weights with decay 0.99999 and a warmup of the decay,
``decay_t = min(decay, (1 + t) / (10 + t))``, so that early averages are not dominated by the
random initialisation. Buffers (BatchNorm running statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from study.errors import ConfigError


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module under a DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrapper."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return getattr(model, "_orig_mod", model)


class EMA:
    """An averaged copy of a model.

    Args:
        model: the network being trained (DDP or compiled wrappers are unwrapped).
        decay: the largest decay, in [0, 1).

    Raises:
        ConfigError: ``decay`` outside [0, 1).

    Example:
        >>> ema = EMA(model, decay=0.99999)
        >>> for step, batch in enumerate(batches):
        ...     train_step(model, batch)
        ...     ema.update_(model, step)
        >>> evaluate(ema.module)
    """

    def __init__(self, model: nn.Module, decay: float = 0.99999):
        if not 0 <= decay < 1:
            raise ConfigError(f"ema.decay: got {decay!r}; allowed: 0 <= decay < 1")
        self.decay = float(decay)
        self.module = copy.deepcopy(_unwrap(model)).eval()
        self.module.requires_grad_(False)
        names = [n for n, _ in self.module.named_parameters()]
        self._params = [p for _, p in self.module.named_parameters()]
        self._buffers = [b for _, b in self.module.named_buffers()]
        self._names = (names, [n for n, _ in self.module.named_buffers()])

    def decay_at(self, step: int) -> float:
        """``min(decay, (1 + step) / (10 + step))``, the decay used at ``step``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    def update_(self, model: nn.Module, step: int) -> None:
        """Moves the average towards ``model``'s weights and copies its buffers.

        ``ema <- d * ema + (1 - d) * w`` with ``d = decay_at(step)``, for every parameter.

        Args:
            model: the trained network, with the same parameter and buffer names as at
                construction.
            step: optimizer steps taken (0-based, the ``t`` of the paper's formula).

        Raises:
            ValueError: ``model`` has parameters or buffers other than at construction.
        """
        model = _unwrap(model)
        named_params = list(model.named_parameters())
        named_buffers = list(model.named_buffers())
        if ([n for n, _ in named_params], [n for n, _ in named_buffers]) != self._names:
            raise ValueError("EMA.update_: the model's parameters/buffers differ from the "
                             "model the EMA was built from")
        d = self.decay_at(step)
        with torch.no_grad():
            torch._foreach_lerp_(self._params, [p.detach() for _, p in named_params], 1.0 - d)
            if self._buffers:  # a Normalizer-Free model may have none
                torch._foreach_copy_(self._buffers, [b for _, b in named_buffers])
