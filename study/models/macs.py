"""Multiply-accumulates of a forward pass, the "FLOPs" the paper reports for NFNet-F0…F6."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def count_macs(model: nn.Module, image_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """Count the multiply-accumulates of one image's forward pass through convs and linears.

    A conv producing an O×H×W output with kernel k×k and G groups from I channels costs
    O·H·W·(I/G)·k²; a linear layer I→O costs I·O (the SE layers included, as the official
    ``count_flops``). Activations, pooling, normalisation and additions are not counted.

    The forward runs on the meta device with meta stand-ins for the parameters and
    buffers, so it costs no compute or memory and leaves the model untouched; the model may
    live on any device, including meta.

    Args:
        model: any module made of ``nn.Conv2d`` (or subclasses) and ``nn.Linear`` layers.
        image_size: input side in pixels, or ``(height, width)``.
        in_chans: input channels.

    Returns:
        The count, an int.

    Example:
        >>> from study.models import build_model
        >>> with torch.device("meta"):
        ...     f0 = build_model("nfnet_f0")
        >>> round(count_macs(f0, 256) / 1e9, 2)
        12.38
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        per_output = (
            module.in_features if isinstance(module, nn.Linear)
            else module.weight[0].numel()  # (I/G)·kh·kw
        )
        total += output[0].numel() * per_output  # one image of the batch

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    meta = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            functional_call(model, meta, (torch.empty(1, in_chans, height, width, device="meta"),))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
