"""Signal-propagation statistics at initialisation ([I] §3: Brock, De, Smith, ICLR 2021,
arXiv 2101.08692)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from study.models.layers import BranchTap, StochasticDepth


def _channel_stats(x: torch.Tensor) -> tuple[float, float]:
    """Average channel squared mean and average channel variance of an NCHW tensor."""
    x = x.detach().double()
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    return float(mean.pow(2).mean()), float(var.mean())


def signal_propagation(model: nn.Module, inputs: torch.Tensor) -> pd.DataFrame:
    """Measure the signal at the output of every residual block, as [I]'s SPPs.

    Runs one forward pass in training mode (BatchNorm normalises with the batch statistics,
    as at the first training step) with stochastic depth and dropout switched off and
    without gradients. BatchNorm running statistics are left untouched (the pass updates
    copies). Call it on a freshly built model (for NF nets, ``skipinit=False`` shows the
    α-scaled growth; with SkipInit every block is the identity at initialisation).

    Args:
        model: a registered model; its residual blocks are found by their ``branch_tap``
            (:class:`study.models.layers.BranchTap`) and ``stage`` attributes.
        inputs: an NCHW batch, e.g. ``torch.randn(64, 3, 32, 32)`` (white noise) or images.

    Returns:
        One row per block, in forward order, with columns ``block`` (0-based), ``stage``,
        ``avg_channel_squared_mean`` (mean over channels of the squared mean over N, H, W),
        ``avg_channel_variance`` (mean over channels of the variance over N, H, W) and
        ``residual_variance`` (the same variance on the branch output, before stochastic
        depth, SkipInit and α).

    Raises:
        ValueError: the model has no blocks with a ``branch_tap``.

    Example:
        >>> from study.models import build_model
        >>> model = build_model("nf_resnet_small", skipinit=False)
        >>> signal_propagation(model, torch.randn(32, 3, 16, 16)).shape
        (6, 5)
    """
    blocks = [m for m in model.modules() if isinstance(getattr(m, "branch_tap", None), BranchTap)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no residual blocks with a branch_tap")
    rows: list[dict] = [{} for _ in blocks]
    handles = []
    for index, block in enumerate(blocks):
        row = rows[index]
        row.update(block=index, stage=block.stage)

        def on_branch(module, args, output, row=row):
            row["residual_variance"] = _channel_stats(output)[1]

        def on_block(module, args, output, row=row):
            row["avg_channel_squared_mean"], row["avg_channel_variance"] = _channel_stats(output)

        handles.append(block.branch_tap.register_forward_hook(on_branch))
        handles.append(block.register_forward_hook(on_block))

    modes = {m: m.training for m in model.modules()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, (StochasticDepth, nn.Dropout)):
                m.eval()
        with torch.no_grad():
            functional_call(model, buffers, (inputs,), strict=False)
    finally:
        for m, mode in modes.items():
            m.training = mode
        for handle in handles:
            handle.remove()
    columns = ["block", "stage", "avg_channel_squared_mean", "avg_channel_variance",
               "residual_variance"]
    return pd.DataFrame(rows, columns=columns)
