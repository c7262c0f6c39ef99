"""Exponential moving average of the weights, evaluated beside the model (Brock et al. 2021,
arXiv 2102.06171, App. A: decay 0.99999; official ``nfnets/utils.py`` ``tf1_ema`` applied in
``experiment.py`` to the parameters *and* the states).

``decay_t = min(decay, (1 + t) / (10 + t))``, so that early averages are not dominated by the
random initialisation. Every floating-point parameter and buffer is averaged (BatchNorm's
running mean and variance too, as the official code averages Haiku's states); integer
buffers (BatchNorm's ``num_batches_tracked``) are copied.

The tensors are paired once, at construction, so a step is one ``torch._foreach_lerp_`` (and
one ``_foreach_copy_`` when there are integer buffers) with the decay as a scalar argument: no
walk over the module tree and no host sync per step. The model's parameters are held as the
``Parameter`` objects themselves, so a later ``p.data = …`` (AGC's flat buffer) is followed;
its buffers by (module, name), so a buffer replaced by ``model.to(…)`` is followed too.
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
    """An averaged copy of a model that follows the model's own tensors.

    Args:
        model: the network being trained (DDP or compiled wrappers are unwrapped). Its
            parameters and buffers are the ones averaged at every :meth:`update_`: they must
            stay the same tensor objects (``load_state_dict`` and optimizers keep them).
        decay: the largest decay, in [0, 1).

    Raises:
        ConfigError: ``decay`` outside [0, 1).

    Example:
        >>> ema = EMA(model, decay=0.99999)
        >>> for step, batch in enumerate(batches):
        ...     train_step(model, batch)
        ...     ema.update_(step)
        >>> evaluate(ema.module)
    """

    def __init__(self, model: nn.Module, decay: float = 0.99999):
        if not 0 <= decay < 1:
            raise ConfigError(f"optim.ema_decay: got {decay!r}; allowed: 0 <= decay < 1")
        self.decay = float(decay)
        source = _unwrap(model)
        self.module = copy.deepcopy(source).eval()
        self.module.requires_grad_(False)
        buffers = [(name, b) for name, b in self.module.named_buffers()]
        owners = [(source.get_submodule(name.rpartition(".")[0]), name.rpartition(".")[2]) for name, _ in buffers]
        floating = [i for i, (_, b) in enumerate(buffers) if b.is_floating_point()]
        exact = [i for i, (_, b) in enumerate(buffers) if not b.is_floating_point()]
        self._averaged = list(self.module.parameters()) + [buffers[i][1] for i in floating]
        self._param_sources = list(source.parameters())
        self._buffer_sources = [owners[i] for i in floating]
        self._copied, self._copy_sources = [buffers[i][1] for i in exact], [owners[i] for i in exact]

    def decay_at(self, step: int) -> float:
        """``min(decay, (1 + step) / (10 + step))``, the decay used at ``step``."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    def update_(self, step: int) -> None:
        """Moves the average towards the model: ``ema <- d * ema + (1 - d) * w`` with
        ``d = decay_at(step)`` for every floating parameter and buffer; integer buffers copied.

        Args:
            step: optimizer steps taken before this update (0-based, the ``t`` of the formula).
        """
        sources = self._param_sources + [module._buffers[name] for module, name in self._buffer_sources]
        with torch.no_grad():
            torch._foreach_lerp_(self._averaged, sources, 1.0 - self.decay_at(step))
            if self._copied:
                torch._foreach_copy_(self._copied, [module._buffers[name] for module, name in self._copy_sources])
