"""Sharpness-Aware Minimisation and the paper's cheap variant (Brock et al. 2021,
arXiv 2102.06171, §5.1 and App. A.4; Foret et al. 2021, arXiv 2010.01412).

Foret et al. 2021 (SAM); Brock et al. 2021, §5 and App. A.4. One SAM step:

1. ascent: the gradient ``g`` of the loss at ``W``; ``e = rho * g / ||g||_2`` (global norm over
   every parameter with a gradient); ``W <- W + e``;
2. descent: the gradient at ``W + e`` (computed by the trainer);
3. ``W <- W`` restored exactly, then clip (AGC on this descent gradient only) and step.

``mode="full"`` takes the ascent gradient on the whole batch (about 2x the cost of a step);
``mode="fraction"`` on the first ``ceil(fraction * B)`` examples of the *same* batch (the
paper's variant, +20-40% cost; a different batch destroys the benefit). The ascent is local to
each replica: under DDP it runs inside ``model.no_sync()``. The direction ``g / ||g||`` does not
depend on the scale of the loss, so an AMP-scaled loss gives the same ``e``.

The ascent runs the forward the descent runs: the trainer passes its (compiled) forward, its
autocast context and its gradient scaler's ``scale``, so under bf16 or ``train.compile`` the
ascent costs what the paper's "+20-40%" measures, not an fp32 eager pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from study.errors import ConfigError

MODES = ("full", "fraction")
_NORM_FLOOR = 1e-12  # guards e = rho * g / ||g|| against an all-zero gradient


class SAM:
    """Perturbs a model's weights along its normalised gradient, then restores them.

    Args:
        model: the network (a DDP wrapper works: its ascent pass is not synchronised).
        rho: radius of the perturbation; > 0 (0.05 in the paper's fine-tuning).
        mode: ``"full"`` or ``"fraction"``.
        fraction: the share of the batch used for the ascent in ``"fraction"`` mode, in (0, 1].

    Raises:
        ConfigError: ``rho`` not positive, unknown ``mode``, ``fraction`` outside (0, 1].

    Example:
        >>> sam = SAM(model, rho=0.05, mode="fraction", fraction=0.2)
        >>> sam.ascend_(loss_fn, inputs, targets)
        >>> loss_fn(model(inputs), targets).backward()  # descent gradient at W + e
        >>> sam.restore_()
        >>> agc.clip_(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
    """

    def __init__(self, model: nn.Module, rho: float = 0.05, mode: str = "fraction",
                 fraction: float = 0.2):
        if not (math.isfinite(rho) and rho > 0):
            raise ConfigError(f"sam.rho: got {rho!r}; allowed: a positive number")
        if mode not in MODES:
            raise ConfigError(f"sam.mode: got {mode!r}; allowed: {', '.join(MODES)} "
                              "(or 'off' in the config, which builds no SAM)")
        if not 0 < fraction <= 1:
            raise ConfigError(f"sam.fraction: got {fraction!r}; allowed: 0 < fraction <= 1")
        self.model, self.rho, self.mode, self.fraction = model, float(rho), mode, float(fraction)
        self._ascended = False
        self._perturbed: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] = []

    def ascent_size(self, batch_size: int) -> int:
        """Examples used by the ascent: all in ``"full"`` mode, else ``ceil(fraction * B)``."""
        if self.mode == "full":
            return batch_size
        return min(batch_size, max(1, math.ceil(self.fraction * batch_size)))

    def ascend_(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                inputs: torch.Tensor, targets: torch.Tensor, *,
                forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                autocast: Callable[[], AbstractContextManager] = nullcontext,
                scale: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Moves the weights to ``W + e``; every ``.grad`` is ``None`` afterwards.

        Existing gradients are discarded. BatchNorm running statistics are saved before and
        restored after the ascent pass, so only the descent pass updates them.

        Args:
            loss_fn: ``loss_fn(outputs, targets) -> scalar loss``.
            inputs: the batch (first dim = examples); ``forward(inputs[:n])`` is called.
            targets: the matching targets (class indices or soft targets).
            forward: the callable that runs the model (e.g. its ``torch.compile`` of the same
                module); ``None`` calls the model given to the constructor.
            autocast: returns the context the forward runs in (the descent's autocast).
            scale: applied to the ascent loss before ``backward`` (an AMP ``GradScaler.scale``,
                so fp16 gradients do not underflow; the direction is unchanged).

        Returns:
            The ascent loss, detached (no device sync).

        Raises:
            RuntimeError: called twice without :meth:`restore_` in between.
        """
        if self._ascended:
            raise RuntimeError("SAM.ascend_ called twice; call restore_() after the descent")
        n = self.ascent_size(inputs.shape[0])
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        norm_stats = _save_running_stats(self.model)
        no_sync = getattr(self.model, "no_sync", nullcontext)
        forward = self.model if forward is None else forward  # not `or`: a compiled module has no truth value
        with no_sync():
            with autocast():
                loss = loss_fn(forward(inputs[:n]), targets[:n])
            (loss if scale is None else scale(loss)).backward()
        _restore_running_stats_(norm_stats)
        with torch.no_grad():
            self._perturbed = [p for p in params if p.grad is not None]
            grads = [p.grad for p in self._perturbed]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                self._saved = [p.detach().clone() for p in self._perturbed]
                step = self.rho / norm.clamp(min=_NORM_FLOOR)
                torch._foreach_add_(self._perturbed, torch._foreach_mul(grads, step))
        for p in params:
            p.grad = None
        self._ascended = True
        return loss.detach()

    def restore_(self) -> None:
        """Copies the weights saved by :meth:`ascend_` back (bit exact); gradients are kept.

        Raises:
            RuntimeError: no :meth:`ascend_` before.
        """
        if not self._ascended:
            raise RuntimeError("SAM.restore_ called without a preceding ascend_()")
        if self._perturbed:
            with torch.no_grad():
                torch._foreach_copy_(self._perturbed, self._saved)
        self._ascended, self._perturbed, self._saved = False, [], []


def _save_running_stats(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) for every running statistic of every BatchNorm layer in ``model``."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                if buf is not None:
                    saved.append((buf, buf.clone()))
    return saved


def _restore_running_stats_(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for buf, copy in saved:
            buf.copy_(copy)
