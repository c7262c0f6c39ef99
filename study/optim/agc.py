"""Adaptive Gradient Clipping (AGC), PAPER.md §4.

Brock et al. 2021, §4; official code: ``deepmind-research/nfnets/agc_optax.py``.

For every parameter ``W`` with gradient ``G`` and every unit ``i`` (one output unit, a row):

    max_i = clipping * max(||W_i||_F, eps)
    G_i  <- G_i * max_i / max(||G_i||_F, 1e-6)    only where ||G_i||_F > max_i

Units follow PyTorch layouts: a conv weight (O, I/groups, kh, kw) reduces dims 1, 2, 3, a
Linear weight (O, I) reduces dim 1 (one row per output unit; reducing dim 0 is the known port
bug), and a tensor with ``ndim <= 1`` (bias, gain, SkipInit scalar) is one unit. ``mode="layer"``
treats every whole tensor as one unit (the paper's layer-wise variant).

Vectorisation (DESIGN.md, performance rules): a :class:`_Plan` is built once per parameter
list. Whole-tensor norms (``ndim <= 1``, and every tensor in layer mode) take one
``torch._foreach_norm`` call; row norms take one copy-free reduction per weight tensor (a
view, no stacking: PyTorch has no multi-tensor per-row norm, and stacking same-shape tensors
copied NFNet-F0's 71M gradients and was 7x slower on CPU); the scale factors of all units are
computed in a few ops on one concatenated vector, and one ``torch._foreach_mul_`` applies them.
Units under the threshold are multiplied by exactly 1.0, which leaves them bit for bit.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from study.errors import ConfigError

MODES = ("unit", "layer")
CLASSIFIER_ENTRIES = {"classifier.weight": "weight", "classifier.bias": "bias"}
_GRAD_NORM_FLOOR = 1e-6  # official guard on the division by ||G_i||


@dataclass(frozen=True)
class _Group:
    """Parameters sharing a (device, dtype): their norms are concatenated and scaled together."""

    params: tuple[torch.Tensor, ...]
    row_dims: tuple[tuple[int, ...] | None, ...]  # reduction dims per tensor; None: whole tensor
    whole_index: tuple[int, ...]  # positions of the whole-tensor units
    scale_shapes: tuple[tuple[int, ...], ...]  # broadcast shape of each tensor's scale
    unit_counts: tuple[int, ...]  # units per tensor, in order


class _Plan:
    """The reduction layout of one parameter list, computed once and reused every step."""

    def __init__(self, params: Sequence[torch.Tensor], mode: str):
        by_key: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for p in params:
            by_key.setdefault((p.device, p.dtype), []).append(p)
        self.groups = [self._group(ps, mode) for ps in by_key.values()]

    @staticmethod
    def _group(params: list[torch.Tensor], mode: str) -> _Group:
        row_dims, scale_shapes, unit_counts = [], [], []
        for p in params:
            rowwise = mode == "unit" and p.ndim > 1
            row_dims.append(tuple(range(1, p.ndim)) if rowwise else None)
            scale_shapes.append((p.shape[0],) + (1,) * (p.ndim - 1) if rowwise else ())
            unit_counts.append(p.shape[0] if rowwise else 1)
        whole_index = tuple(i for i, d in enumerate(row_dims) if d is None)
        return _Group(tuple(params), tuple(row_dims), whole_index, tuple(scale_shapes),
                      tuple(unit_counts))


def _unit_norms(tensors: Sequence[torch.Tensor], group: _Group) -> torch.Tensor:
    """Norms of every unit of ``tensors`` (laid out as ``group``), concatenated in order."""
    norms: list[torch.Tensor | None] = [
        None if d is None else torch.linalg.vector_norm(t, dim=d)
        for t, d in zip(tensors, group.row_dims)
    ]
    if group.whole_index:
        whole = torch._foreach_norm([tensors[i] for i in group.whole_index])
        for i, n in zip(group.whole_index, whole):
            norms[i] = n.reshape(1)
    return torch.cat(norms)


def _clip_group_(group: _Group, grads: list[torch.Tensor], clipping: float, eps: float) -> None:
    with torch.no_grad():
        weights = [p.detach() for p in group.params]
        max_norm = _unit_norms(weights, group).clamp_(min=eps).mul_(clipping)
        grad_norm = _unit_norms(grads, group)
        scale = torch.where(grad_norm > max_norm,
                            max_norm / grad_norm.clamp(min=_GRAD_NORM_FLOOR),
                            torch.ones_like(grad_norm))
        scales = [s.view(shape) for s, shape in
                  zip(scale.split(group.unit_counts), group.scale_shapes)]
        torch._foreach_mul_(grads, scales)


def _check(clipping: float, eps: float, mode: str) -> None:
    if not (isinstance(clipping, (int, float)) and math.isfinite(clipping) and clipping > 0):
        raise ConfigError(f"agc.clipping: got {clipping!r}; allowed: a positive finite number "
                          "(null in the config turns AGC off)")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"agc.eps: got {eps!r}; allowed: a finite number >= 0")
    if mode not in MODES:
        raise ConfigError(f"agc.mode: got {mode!r}; allowed: {', '.join(MODES)}")


class AGC:
    """Adaptive gradient clipping of a fixed parameter list, with its reduction plan cached.

    Build it once next to the optimizer and call :meth:`clip_` after ``backward()`` (and after
    the all-reduce and, under AMP, ``scaler.unscale_(optimizer)``), before ``optimizer.step()``.

    Args:
        parameters: the tensors to clip, e.g. ``agc_parameters(model)``.
        clipping: λ, the threshold on ``||G_i|| / max(||W_i||, eps)``; > 0.
        eps: floor on the weight norm (paper: 1e-3); a zero-initialised gain sits on it.
        mode: ``"unit"`` (one row per output unit) or ``"layer"`` (one unit per tensor).

    Raises:
        ConfigError: ``clipping`` not positive, ``eps`` negative, unknown ``mode``.

    Example:
        >>> agc = AGC(agc_parameters(model), clipping=0.01)
        >>> loss.backward(); agc.clip_(); optimizer.step()
    """

    def __init__(self, parameters: Iterable[torch.Tensor], clipping: float, *,
                 eps: float = 1e-3, mode: str = "unit"):
        _check(clipping, eps, mode)
        self.parameters = list(parameters)
        self.clipping, self.eps, self.mode = float(clipping), float(eps), mode
        self._plan = _Plan(self.parameters, mode)

    def clip_(self) -> None:
        """Clips the ``.grad`` of every parameter in place; parameters without one are skipped."""
        grads = [p.grad for p in self.parameters]
        if any(g is None for g in grads):
            present = [p for p in self.parameters if p.grad is not None]
            if present:
                _clip_plan_(_Plan(present, self.mode), self.clipping, self.eps)
            return
        _clip_plan_(self._plan, self.clipping, self.eps)


def _clip_plan_(plan: _Plan, clipping: float, eps: float) -> None:
    for group in plan.groups:
        grads = [p.grad.detach() for p in group.params]
        _clip_group_(group, grads, clipping, eps)


def adaptive_grad_clip_(parameters: torch.Tensor | Iterable[torch.Tensor], clipping: float,
                        eps: float = 1e-3, mode: str = "unit") -> None:
    """Clips gradients in place by their norm relative to the weight norm (PAPER.md §4).

    Functional form of :class:`AGC`, shaped like ``torch.nn.utils.clip_grad_norm_``; it plans
    the reductions on every call, so a training loop should keep an :class:`AGC` instead.
    Clip the final gradient: averaged over replicas and, under AMP, unscaled.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped; tensors
            without a gradient are skipped.
        clipping: λ; every unit's gradient norm is capped at ``λ · max(||W_i||, eps)``.
        eps: floor on the weight norm.
        mode: ``"unit"`` (per output unit) or ``"layer"`` (per tensor).

    Raises:
        ConfigError: ``clipping`` not positive, ``eps`` negative, unknown ``mode``.

    Example:
        >>> adaptive_grad_clip_(agc_parameters(model), clipping=0.01)
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    _check(clipping, eps, mode)
    present = [p for p in parameters if p.grad is not None]
    if present:
        _clip_plan_(_Plan(present, mode), float(clipping), float(eps))


def agc_parameters(model: nn.Module,
                   exclude: Sequence[str] = ("classifier.weight",)) -> list[nn.Parameter]:
    """The trainable parameters of ``model`` that AGC clips: all but the excluded ones.

    The paper leaves only the final classifier's weight unclipped (PAPER.md §4, §4.1).

    Args:
        model: the network, unwrapped (not the DDP or compiled wrapper, whose names carry a
            prefix); ``model.get_classifier()`` names its final ``nn.Linear``.
        exclude: entries ``"classifier.weight"`` and ``"classifier.bias"`` select the weight
            and bias of ``model.get_classifier()`` by identity, whatever the module is called;
            any other entry is an ``fnmatch`` pattern over ``model.named_parameters()`` names
            (e.g. ``"stages.3.*"``). A model without ``get_classifier`` has the classifier
            entries matched as patterns.

    Returns:
        The parameters to clip, in ``named_parameters()`` order.

    Raises:
        ConfigError: an entry that matches no parameter.

    Example:
        >>> agc = AGC(agc_parameters(model, exclude=("classifier.weight", "stem.*")), 0.01)
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    excluded: set[int] = set()
    for entry in exclude:
        if entry in CLASSIFIER_ENTRIES and hasattr(model, "get_classifier"):
            tensor = getattr(model.get_classifier(), CLASSIFIER_ENTRIES[entry], None)
            matched = [p for _, p in named if tensor is not None and p is tensor]
        else:
            matched = [p for n, p in named if fnmatch.fnmatchcase(n, entry)]
        if not matched:
            raise ConfigError(f"agc.exclude: entry {entry!r} matches no trainable parameter of "
                              f"{type(model).__name__}; allowed: 'classifier.weight', "
                              "'classifier.bias' or a pattern over its parameter names")
        excluded.update(id(p) for p in matched)
    return [p for _, p in named if id(p) not in excluded]
