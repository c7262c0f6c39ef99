"""What AGC and the SkipInit gains did during a run, read once per epoch (Brock et al. 2021,
§4, arXiv 2102.06171).

AGC (:class:`study.optim.agc.AGC` with ``telemetry=True``) accumulates per-unit statistics on
the device inside its step, where the norms exist already; :meth:`Telemetry.read` copies them
to the host at each epoch's end, where the trainer syncs anyway, and turns them into metrics:

- ``agc/clipped_fraction``: the fraction of units clipped over the epoch's steps, and
  ``agc/clipped_fraction/<group>`` per group (``stem``, ``stage<k>`` for a block of stage k,
  else the parameter name's first part, ``classifier`` for the final layer's bias);
- ``agc/grad_weight_ratio_p50|p90|max``: quantiles over the units of their mean
  ‖G_i‖/max(‖W_i‖, ε) over the epoch (a unit is clipped when it exceeds λ);
- ``agc/max_skipinit_gain``: the largest |SkipInit gain| reached so far in the run: every step
  under AGC, at epoch ends without it (and, after a resume, from the checkpointed value on);
- ``classifier/row_norm_max|mean``: the classifier weight's row norms at the epoch's end.

At the run's end, :meth:`Telemetry.tags` gives ``nfstudy.agc_floor_bound``: ``true`` when AGC
clips the gains and they never exceeded ``FLOOR_GAIN`` (0.1 = 100 × ε at the default
ε = 10⁻³), the threshold the report (``analysis.floor``) uses.
"""

from __future__ import annotations

import torch
from torch import nn

from study.optim.agc import AGC, UnitStats
from study.record.tags import (
    AGC_CLIPPED_FRACTION,
    AGC_FLOOR_BOUND,
    AGC_GROUP_PREFIX,
    AGC_MAX_SKIPINIT_GAIN,
    AGC_RATIO_QUANTILES,
    CLASSIFIER_ROW_NORM_MAX,
    CLASSIFIER_ROW_NORM_MEAN,
    FLOOR_GAIN,
)

GAIN_SUFFIX = "skipinit_gain"
"""The attribute name of a SkipInit gain (``study.models.layers.skipinit_gain``)."""


def parameter_groups(model: nn.Module) -> dict[int, str]:
    """A group label for every parameter (by ``id``): ``stage<k>`` for a module with a
    ``stage`` attribute (a residual block), ``classifier`` for ``model.get_classifier()``, else
    the first part of its name (``stem``)."""
    labels = {id(p): name.split(".")[0] for name, p in model.named_parameters()}
    for module in model.modules():
        if isinstance(getattr(module, "stage", None), int):
            labels.update({id(p): f"stage{module.stage}" for p in module.parameters()})
    if hasattr(model, "get_classifier"):
        labels.update({id(p): "classifier" for p in model.get_classifier().parameters()})
    return labels


class Telemetry:
    """The telemetry of one run's ``model`` and its ``agc`` (``None`` without AGC).

    Args:
        model: the unwrapped network.
        agc: its AGC, built with ``telemetry=True``, or None.
        resumed: the last checkpointed epoch's metrics (empty for a fresh run).
    """

    def __init__(self, model: nn.Module, agc: AGC | None, resumed: dict[str, float] | None = None):
        self.agc = agc
        self.labels = parameter_groups(model)
        self.gains = [p for name, p in model.named_parameters() if name.split(".")[-1] == GAIN_SUFFIX]
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        self.classifier = getattr(classifier, "weight", None)
        self.max_gain = float((resumed or {}).get(AGC_MAX_SKIPINIT_GAIN, 0.0))
        clipped = {id(p) for p in agc.parameters} if agc is not None else set()
        self.gains_clipped = bool(self.gains) and all(id(g) in clipped for g in self.gains)

    def read(self) -> dict[str, float]:
        """This epoch's metrics (two host syncs); starts AGC's next period."""
        metrics = self._agc_metrics(self.agc.read_stats()) if self.agc is not None else {}
        with torch.no_grad():
            parts = [torch.stack([g.detach().abs().float() for g in self.gains]).amax().reshape(1)] if self.gains else []
            if self.classifier is not None:
                rows = torch.linalg.vector_norm(self.classifier.detach().float(), dim=1)
                parts += [rows.amax().reshape(1), rows.mean().reshape(1)]
            values = torch.cat(parts).tolist() if parts else []  # the second sync
        if self.gains:
            self.max_gain = max(self.max_gain, values.pop(0))
            metrics[AGC_MAX_SKIPINIT_GAIN] = self.max_gain
        if self.classifier is not None:
            metrics[CLASSIFIER_ROW_NORM_MAX], metrics[CLASSIFIER_ROW_NORM_MEAN] = values
        return metrics

    def _agc_metrics(self, stats: list[UnitStats]) -> dict[str, float]:
        stats = [s for s in stats if s.steps]
        if not stats:
            return {}
        gains = {id(g) for g in self.gains}
        for s in stats:
            if id(s.param) in gains:
                self.max_gain = max(self.max_gain, float(s.weight_max.max()))
        clipped: dict[str, list[float]] = {}
        for s in stats:
            totals = clipped.setdefault(self.labels.get(id(s.param), "other"), [0.0, 0.0])
            totals[0] += float(s.clipped.sum())
            totals[1] += s.steps * s.clipped.numel()
        metrics = {AGC_CLIPPED_FRACTION: sum(c for c, _ in clipped.values()) / sum(n for _, n in clipped.values())}
        metrics |= {AGC_GROUP_PREFIX + label: c / n for label, (c, n) in sorted(clipped.items())}
        ratios = torch.cat([s.ratio_sum / s.steps for s in stats])
        quantiles = torch.quantile(ratios, torch.tensor(list(AGC_RATIO_QUANTILES.values()), dtype=ratios.dtype))
        return metrics | dict(zip(AGC_RATIO_QUANTILES, quantiles.tolist()))

    def tags(self) -> dict[str, str]:
        """``nfstudy.agc_floor_bound`` when AGC clips the SkipInit gains, else nothing (reads
        the steps since the last epoch's end too: a diverged run's last epoch)."""
        if not self.gains_clipped:
            return {}
        self._agc_metrics(self.agc.read_stats())
        return {AGC_FLOOR_BOUND: "true" if self.max_gain <= FLOOR_GAIN else "false"}
