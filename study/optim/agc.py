"""Adaptive Gradient Clipping (AGC), arXiv 2102.06171.

Brock et al. 2021, §4; official code: ``deepmind-research/nfnets/agc_optax.py``.

For every parameter ``W`` with gradient ``G`` and every unit ``i`` (one output unit, a row):

    max_i = clipping * max(||W_i||_F, eps)
    G_i  <- G_i * max_i / max(||G_i||_F, 1e-6)    only where ||G_i||_F > max_i

Units follow PyTorch layouts: a conv weight (O, I/groups, kh, kw) reduces dims 1, 2, 3, a
Linear weight (O, I) reduces dim 1 (one row per output unit; reducing dim 0 is the known port
bug), and a tensor with ``ndim <= 1`` (bias, gain, SkipInit scalar) is one unit. ``mode="layer"``
treats every whole tensor as one unit (the paper's layer-wise variant).

Vectorisation. :class:`AGC` re-homes the parameters it clips
into one flat buffer per (device, dtype), ordered by unit length, each tensor starting on a
16-byte boundary (whole zero rows pad the gaps), and keeps their gradients in a twin flat
buffer (the flat-parameter layout of apex and FSDP). Every unit is then a row of a
2-D view of a region of equal unit length, so one step costs one norm call per distinct unit
length for the weights and one for the gradients (written straight into two preallocated norm
vectors), a few ops on those vectors and one ``torch._foreach_mul_``, whatever the number of
parameters (nf_resnet_small: 9 regions for 52 tensors; NFNet-F0: 16 for 232). Gradients that
autograd hands over as fresh tensors (``zero_grad(set_to_none=True)``, SAM) are copied into the
buffer by one ``torch._foreach_copy_`` and ``.grad`` is pointed at the buffer, so a loop that
zeroes gradients in place (``set_to_none=False``) pays no copy. A parameter whose data is
replaced later (``model.to(...)``, ``p.data = ...``) is detected by its data pointer and the
layout is rebuilt. Tensors that cannot be laid out so (rows not contiguous, meta) and the
functional :func:`adaptive_grad_clip_` take the per-tensor path: whole-tensor norms in one
``torch._foreach_norm`` call, one copy-free row reduction per weight tensor (stacking
same-shape tensors instead copied NFNet-F0's 71M gradients and was 7x slower on CPU).
Units under the threshold are multiplied by exactly 1.0, which leaves them bit for bit.

Telemetry (``AGC(..., telemetry=True)``). The step has every unit's ‖W_i‖ and ‖G_i‖ at hand,
so it also adds, on the device and without a host sync, per unit: whether it was clipped,
its ratio ‖G_i‖/max(‖W_i‖, ε), and the largest ‖W_i‖ seen (three small vector ops per
region layout). :meth:`AGC.read_stats` copies them to the host in one transfer when asked
(the trainer does so once per epoch) and starts the next period.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from study.errors import ConfigError

MODES = ("unit", "layer")
CLASSIFIER_ENTRIES = {"classifier.weight": "weight", "classifier.bias": "bias"}
_GRAD_NORM_FLOOR = 1e-6  # official guard on the division by ||G_i||
#: Where each tensor starts in the flat buffers: the foreach kernels' fast path and the
#: vectorised cuDNN/cuBLAS kernels need 16-byte-aligned data (packed end to end, 41 of the
#: 42 tensors of ``bn_resnet_cifar`` started off such a boundary).
ALIGNMENT_BYTES = 16


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


class _UnitStats:
    """Telemetry of one layout's units, kept on the device: rows are steps clipped, the sum
    of ‖G‖/max(‖W‖, ε), and the largest ‖W‖ seen (the last is never reset)."""

    def __init__(self, units: int, device: torch.device):
        self.totals = torch.zeros(3, units, device=device)
        self.steps = 0

    def observe_(self, weight_norm: torch.Tensor, grad_norm: torch.Tensor, max_norm: torch.Tensor,
                 over: torch.Tensor, clipping: float) -> None:
        self.totals[0].add_(over)
        self.totals[1].addcdiv_(grad_norm, max_norm, value=clipping)  # max_norm = λ·max(‖W‖, ε)
        torch.maximum(self.totals[2], weight_norm, out=self.totals[2])
        self.steps += 1


def _clip_group_(group: _Group, grads: list[torch.Tensor], clipping: float, eps: float,
                 stats: _UnitStats | None = None) -> None:
    with torch.no_grad():
        weights = [p.detach() for p in group.params]
        weight_norm = _unit_norms(weights, group)
        max_norm = weight_norm.clamp(min=eps).mul_(clipping)
        grad_norm = _unit_norms(grads, group)
        over = grad_norm > max_norm
        if stats is not None:
            stats.observe_(weight_norm, grad_norm, max_norm, over, clipping)
        scale = torch.where(over, max_norm / grad_norm.clamp(min=_GRAD_NORM_FLOOR), torch.ones_like(grad_norm))
        scales = [s.view(shape) for s, shape in
                  zip(scale.split(group.unit_counts), group.scale_shapes)]
        torch._foreach_mul_(grads, scales)


def _unit_length(p: torch.Tensor, mode: str) -> int:
    """Elements per unit: a row (``mode="unit"``, ``ndim > 1``) or the whole tensor."""
    return p.numel() // p.shape[0] if mode == "unit" and p.ndim > 1 else p.numel()


def _flattenable(p: torch.Tensor) -> bool:
    """Dense, on a real device, with each row (dim-0 slice) one contiguous chunk of memory
    (contiguous or channels-last layouts), so the tensor can live in a flat buffer."""
    if p.is_meta or p.numel() == 0:
        return False
    if p.is_contiguous():
        return True
    return (p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last)) or (
        p.ndim == 5 and p.is_contiguous(memory_format=torch.channels_last_3d))


def _aligned_offsets(sizes: Sequence[tuple[int, int]], align: int
                     ) -> tuple[list[int], list[tuple[int, int, int]], int]:
    """Where each tensor of ``sizes`` (``(numel, unit length)``, sorted by unit length) starts
    in a flat buffer so that every start is a multiple of ``align`` elements.

    A region (tensors of one unit length, viewed as rows of that length) starts aligned;
    inside it, a tensor is moved on by whole padding rows until its start is aligned, which
    always succeeds within ``align`` rows, since the region's start is aligned.

    Returns:
        The offsets, the regions as ``(start, end, unit length)``, and the buffer's length.
    """
    offsets: list[int] = []
    regions: list[list[int]] = []
    offset = 0
    for numel, length in sizes:
        if regions and regions[-1][2] == length:
            while offset % align:
                offset += length
        else:
            offset = -(-offset // align) * align
            regions.append([offset, offset, length])
        offsets.append(offset)
        offset += numel
        regions[-1][1] = offset
    return offsets, [tuple(r) for r in regions], offset


def _unit_slices(offsets: Sequence[int], regions: Sequence[tuple[int, int, int]],
                 numels: Sequence[int]) -> list[slice]:
    """Where each tensor's units lie in the concatenated per-row norms of its flat buffer."""
    slices, row_start, region = [], 0, 0
    for offset, numel in zip(offsets, numels):
        while not regions[region][0] <= offset < regions[region][1]:
            row_start += (regions[region][1] - regions[region][0]) // regions[region][2]
            region += 1
        start, _, length = regions[region]
        first = row_start + (offset - start) // length
        slices.append(slice(first, first + numel // length))
    return slices


class _FlatGroup:
    """Parameters of one (device, dtype) moved into one flat buffer, sorted by unit length,
    and a twin flat buffer for their gradients; rows of equal length form 2-D region views.
    Every tensor starts on an :data:`ALIGNMENT_BYTES` boundary (:func:`_aligned_offsets`)."""

    def __init__(self, params: Sequence[torch.Tensor], mode: str):
        lengths = {id(p): _unit_length(p, mode) for p in params}
        self.params = tuple(sorted(params, key=lambda p: lengths[id(p)]))
        first = self.params[0]
        align = max(1, ALIGNMENT_BYTES // first.element_size())
        offsets, regions, total = _aligned_offsets([(p.numel(), lengths[id(p)]) for p in self.params], align)
        # Zeros: padding rows have weight 0 and gradient 0, so clipping leaves them 0.
        self.weights = torch.zeros(total, device=first.device, dtype=first.dtype)
        self.grads = torch.zeros_like(self.weights)
        grad_views = []
        with torch.no_grad():
            for p, offset in zip(self.params, offsets):
                n = p.numel()
                view = self.weights[offset:offset + n].as_strided(p.shape, p.stride())
                view.copy_(p)
                p.data = view  # same values, shape and strides; storage now shared
                grad_views.append(self.grads[offset:offset + n].as_strided(p.shape, p.stride()))
        self.grad_views = tuple(grad_views)
        self.pointers = tuple(p.data_ptr() for p in self.params)
        self.unit_slices = _unit_slices(offsets, regions, [p.numel() for p in self.params])
        self.weight_rows = [self.weights[a:b].view(-1, length) for a, b, length in regions]
        self.grad_rows = [self.grads[a:b].view(-1, length) for a, b, length in regions]
        self.row_counts = [rows.shape[0] for rows in self.weight_rows]
        self.weight_norms = self.weights.new_empty(sum(self.row_counts))
        self.grad_norms = self.weights.new_empty(sum(self.row_counts))
        self._weight_norm_parts = self.weight_norms.split(self.row_counts)
        self._grad_norm_parts = self.grad_norms.split(self.row_counts)

    def in_place(self) -> bool:
        """Whether every parameter still lives in :attr:`weights` (nobody replaced its data)."""
        return all(p.data_ptr() == ptr for p, ptr in zip(self.params, self.pointers))

    def adopt_grads_(self) -> None:
        """Copies gradients that are not views of :attr:`grads` into it and repoints ``.grad``."""
        moved = [(p, view) for p, view in zip(self.params, self.grad_views) if p.grad is not view]
        if moved:
            torch._foreach_copy_([view for _, view in moved], [p.grad.detach() for p, _ in moved])
            for p, view in moved:
                p.grad = view

    def clip_(self, clipping: float, eps: float, stats: _UnitStats | None = None) -> None:
        self.adopt_grads_()
        with torch.no_grad():
            for rows, out in zip(self.weight_rows, self._weight_norm_parts):
                torch.linalg.vector_norm(rows, dim=1, out=out)
            for rows, out in zip(self.grad_rows, self._grad_norm_parts):
                torch.linalg.vector_norm(rows, dim=1, out=out)
            max_norm = self.weight_norms.clamp(min=eps).mul_(clipping)
            over = self.grad_norms > max_norm
            if stats is not None:
                stats.observe_(self.weight_norms, self.grad_norms, max_norm, over, clipping)
            scale = torch.where(over, max_norm / self.grad_norms.clamp(min=_GRAD_NORM_FLOOR), 1.0)
            torch._foreach_mul_(self.grad_rows, [s.unsqueeze(1) for s in scale.split(self.row_counts)])


def _check(clipping: float, eps: float, mode: str) -> None:
    if not (isinstance(clipping, (int, float)) and math.isfinite(clipping) and clipping > 0):
        raise ConfigError(f"agc.clipping: got {clipping!r}; allowed: a positive finite number "
                          "(null in the config turns AGC off)")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"agc.eps: got {eps!r}; allowed: a finite number >= 0")
    if mode not in MODES:
        raise ConfigError(f"agc.mode: got {mode!r}; allowed: {', '.join(MODES)}")


class AGC:
    """Adaptive gradient clipping of a fixed parameter list, with its reduction layout cached.

    Build it once next to the optimizer and call :meth:`clip_` after ``backward()`` (and after
    the all-reduce and, under AMP, ``scaler.unscale_(optimizer)``), before ``optimizer.step()``.

    With ``flatten=True`` (the default) the clipped parameters are moved into one flat buffer
    per (device, dtype): their values, shapes, strides and identities stay, but their data
    become views of a shared storage, and after the first :meth:`clip_` their ``.grad`` are
    views of a twin gradient buffer. Zero gradients in place (``zero_grad(set_to_none=False)``)
    to keep them there; otherwise each call copies the fresh gradients in first. Replacing a
    parameter's data later (``model.to(...)``) is detected and the layout rebuilt.

    Args:
        parameters: the tensors to clip, e.g. ``agc_parameters(model)``.
        clipping: λ, the threshold on ``||G_i|| / max(||W_i||, eps)``; > 0.
        eps: floor on the weight norm (paper: 1e-3); a zero-initialised gain sits on it.
        mode: ``"unit"`` (one row per output unit) or ``"layer"`` (one unit per tensor).
        flatten: use the flat-buffer layout (fast); ``False`` leaves every tensor where it is
            and clips tensor by tensor.
        telemetry: accumulate per-unit statistics on the device for :meth:`read_stats`.

    Raises:
        ConfigError: ``clipping`` not positive, ``eps`` negative, unknown ``mode``.

    Example:
        >>> agc = AGC(agc_parameters(model), clipping=0.01)
        >>> loss.backward(); agc.clip_(); optimizer.step()
    """

    def __init__(self, parameters: Iterable[torch.Tensor], clipping: float, *,
                 eps: float = 1e-3, mode: str = "unit", flatten: bool = True, telemetry: bool = False):
        _check(clipping, eps, mode)
        self.parameters = list(dict.fromkeys(parameters))  # each tensor once
        self.clipping, self.eps, self.mode, self.flatten = float(clipping), float(eps), mode, flatten
        self.telemetry = telemetry
        self._layout()

    def _layout(self) -> None:
        by_key: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        rest = []
        for p in self.parameters:
            if self.flatten and _flattenable(p):
                by_key.setdefault((p.device, p.dtype), []).append(p)
            else:
                rest.append(p)
        self._flat = [_FlatGroup(params, self.mode) for params in by_key.values()]
        self._plan = _Plan(rest, self.mode)
        # Each layout's units: its tensors, where their units lie in its norms, its stats.
        layouts = [(g.params, g.unit_slices, len(g.weight_norms), g.weights.device) for g in self._flat]
        for g in self._plan.groups:
            ends = list(itertools.accumulate(g.unit_counts))
            layouts.append((g.params, [slice(e - n, e) for e, n in zip(ends, g.unit_counts)], ends[-1],
                            g.params[0].device))
        self._units = [(params, slices) for params, slices, _, _ in layouts]
        self._stats = [_UnitStats(units, device) if self.telemetry else None for _, _, units, device in layouts]

    def clip_(self) -> None:
        """Clips the ``.grad`` of every parameter in place; parameters without one are skipped
        (that step then takes the slower per-tensor path, and telemetry leaves it out)."""
        if any(p.grad is None for p in self.parameters):
            present = [p for p in self.parameters if p.grad is not None]
            if present:
                _clip_plan_(_Plan(present, self.mode), self.clipping, self.eps)
            return
        if not all(group.in_place() for group in self._flat):
            self._layout()
        for group, stats in zip(self._flat, self._stats):
            group.clip_(self.clipping, self.eps, stats)
        _clip_plan_(self._plan, self.clipping, self.eps, self._stats[len(self._flat):])

    def read_stats(self) -> list[UnitStats]:
        """What the steps since the last read did to each clipped tensor (one host sync), and
        starts a new period; empty without ``telemetry=True``.

        Returns:
            One :class:`UnitStats` per tensor; ``weight_max`` covers every step since the
            layout was built, the rest the period's steps.
        """
        if not self.telemetry or not self._stats:
            return []
        totals = torch.cat([stats.totals.float().cpu() for stats in self._stats], dim=1)  # the one sync
        out, column = [], 0
        for (params, slices), stats in zip(self._units, self._stats):
            block = totals[:, column:column + stats.totals.shape[1]]
            column += stats.totals.shape[1]
            out += [UnitStats(p, stats.steps, block[0, s], block[1, s], block[2, s]) for p, s in zip(params, slices)]
            stats.totals[:2].zero_()
            stats.steps = 0
        return out


@dataclass(frozen=True)
class UnitStats:
    """Telemetry of one clipped tensor over a period of steps (host tensors, one entry per unit)."""

    param: torch.Tensor
    steps: int
    clipped: torch.Tensor
    """Steps on which each unit was clipped."""
    ratio_sum: torch.Tensor
    """Sum over the steps of ‖G_i‖/max(‖W_i‖, ε)."""
    weight_max: torch.Tensor
    """The largest ‖W_i‖ seen by a step (|w| for a scalar such as a SkipInit gain)."""


def _clip_plan_(plan: _Plan, clipping: float, eps: float, stats: Sequence[_UnitStats | None] = ()) -> None:
    for group, group_stats in itertools.zip_longest(plan.groups, stats[:len(plan.groups)]):
        grads = [p.grad.detach() for p in group.params]
        _clip_group_(group, grads, clipping, eps, group_stats)


def adaptive_grad_clip_(parameters: torch.Tensor | Iterable[torch.Tensor], clipping: float,
                        eps: float = 1e-3, mode: str = "unit") -> None:
    """Clips gradients in place by their norm relative to the weight norm (Brock et al. 2021, §4).

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

    The paper leaves only the final classifier's weight unclipped (Brock et al. 2021, §4.1).

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
