"""MixUp on one half of a batch and CutMix on the other (the NFNets recipe).

Official code: ``deepmind-research/nfnets/dataset.py`` (``my_mixup_cutmix``): each MixUp example
gets its own ratio ``lam ~ Beta(alpha, alpha)`` (alpha = 0.2); each CutMix example gets its own
box, whose image-1 proportion is drawn uniformly (Beta(1, 1)), and its label weight is the
pixel fraction actually kept after the box is clipped to the image. Where we differ: the
official pipeline reads a batch twice as large and mixes its halves; here each half is mixed
with itself reversed (example ``i`` with ``n - 1 - i``), so the batch size is unchanged.

Label smoothing: the trainer passes the soft targets returned here straight to
``F.cross_entropy(logits, soft_targets, label_smoothing=0.1)``; PyTorch accepts class
probabilities as targets and smooths them to ``(1 - s) * target + s / num_classes``, so no
separate smoothing function is needed (tested in ``tests/data/test_augment.py``).

All sampling runs on the images' device with the given generator and never syncs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from study.errors import ConfigError, DataError

_GAMMA_CANDIDATES = 16  # proposals per sample; Marsaglia-Tsang accepts each with p >= 0.95


def mixup_cutmix(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 alpha: float = 0.2, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp on the first half of the batch and CutMix on the second; soft one-hot targets.

    With ``h = B // 2``: examples ``[0, h)`` are MixUp'ed (``lam * x_i + (1 - lam) * x_j``),
    examples ``[h, B)`` are CutMix'ed (a box of ``x_j`` pasted into ``x_i``), ``j`` being ``i``'s
    mirror within its half. Targets are ``w * onehot(y_i) + (1 - w) * onehot(y_j)``, ``w``
    being ``lam`` or the fraction of ``x_i``'s pixels kept.

    Args:
        images: float tensor (B, C, H, W); not modified.
        labels: int64 class indices (B,).
        num_classes: number of classes of the soft targets.
        alpha: the Beta(alpha, alpha) parameter of the MixUp ratio; > 0.
        generator: random source on ``images.device``; the global one when ``None``.

    Returns:
        ``(mixed_images, soft_targets)``: same shape and dtype as ``images``, and
        (B, num_classes) float32 rows that sum to 1.

    Raises:
        ConfigError: ``alpha`` not positive or ``num_classes < 1``.
        DataError: images not a floating (B, C, H, W) tensor, or labels not matching it.

    Example:
        >>> x, t = mixup_cutmix(images, labels, num_classes=10, generator=g)
        >>> loss = F.cross_entropy(model(x), t, label_smoothing=0.1)
    """
    if not alpha > 0:
        raise ConfigError(f"alpha: got {alpha!r}; allowed: a positive number")
    if num_classes < 1:
        raise ConfigError(f"num_classes: got {num_classes!r}; allowed: >= 1")
    if images.ndim != 4 or not images.is_floating_point():
        raise DataError(f"images: got {tuple(images.shape)} {images.dtype}; allowed: a floating "
                        "point (B, C, H, W) tensor")
    if labels.shape != images.shape[:1]:
        raise DataError(f"labels: got shape {tuple(labels.shape)}; allowed: "
                        f"({images.shape[0]},), one class index per image")
    batch, _, height, width = images.shape
    half = batch // 2
    device = images.device

    partner = torch.cat([torch.arange(half, device=device).flip(0),
                         torch.arange(half, batch, device=device).flip(0)])
    other = images[partner]

    lam = _sample_beta(alpha, half, generator, device).to(images.dtype)
    keep = _cutmix_masks(batch - half, height, width, generator, device).to(images.dtype)

    mixed = torch.empty_like(images)
    mixed[:half] = torch.lerp(other[:half], images[:half], lam.view(-1, 1, 1, 1))
    mixed[half:] = keep * images[half:] + (1 - keep) * other[half:]

    weight = torch.cat([lam.float(), keep.float().mean(dim=(1, 2, 3))])
    one_hot = F.one_hot(labels, num_classes).float()
    targets = torch.lerp(one_hot[partner], one_hot, weight.unsqueeze(1))
    return mixed, targets


def _cutmix_masks(n: int, height: int, width: int, generator: torch.Generator | None,
                  device: torch.device) -> torch.Tensor:
    """(n, 1, H, W) masks, 1 where the example keeps its own pixels, 0 inside the pasted box.

    As the official ``cutmix_padding``: proportion ``u ~ U(0, 1)``, box sides
    ``int(sqrt(1 - u) * size)``, centre uniform over the pixels, box clipped to the image.
    """
    u = torch.rand(n, generator=generator, device=device)
    side = torch.sqrt(1 - u)
    cut_h, cut_w = (side * height).long(), (side * width).long()
    cy = torch.randint(0, height, (n,), generator=generator, device=device)
    cx = torch.randint(0, width, (n,), generator=generator, device=device)
    y1, y2 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    x1, x2 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    ys = torch.arange(height, device=device).view(1, height, 1)
    xs = torch.arange(width, device=device).view(1, 1, width)
    inside = ((ys >= y1.view(-1, 1, 1)) & (ys < y2.view(-1, 1, 1))
              & (xs >= x1.view(-1, 1, 1)) & (xs < x2.view(-1, 1, 1)))
    return (~inside).unsqueeze(1).float()


def _sample_beta(alpha: float, n: int, generator: torch.Generator | None,
                 device: torch.device) -> torch.Tensor:
    """n samples of Beta(alpha, alpha) = X / (X + Y), X, Y ~ Gamma(alpha), in float64."""
    log_x = _sample_log_gamma(alpha, n, generator, device)
    log_y = _sample_log_gamma(alpha, n, generator, device)
    return torch.sigmoid(log_x - log_y)


def _sample_log_gamma(alpha: float, n: int, generator: torch.Generator | None,
                      device: torch.device) -> torch.Tensor:
    """log of n Gamma(alpha, 1) samples by Marsaglia-Tsang (2000), vectorised, no sync.

    torch's own Gamma sampler takes no generator. For alpha < 1 it samples Gamma(alpha + 1)
    and multiplies by ``U ** (1 / alpha)`` (done in log space: no underflow). Each sample
    draws ``_GAMMA_CANDIDATES`` proposals and keeps the first accepted one; all being rejected
    (probability < 0.05 ** 16) falls back to the last proposal.
    """
    shape = alpha + 1 if alpha < 1 else alpha
    d = shape - 1 / 3
    c = 1 / (9 * d) ** 0.5
    size = (n, _GAMMA_CANDIDATES)
    x = torch.randn(size, generator=generator, device=device, dtype=torch.float64)
    u = torch.rand(size, generator=generator, device=device, dtype=torch.float64)
    v = (1 + c * x) ** 3
    log_v = torch.log(v.clamp(min=1e-300))
    accept = (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * log_v)
    accept[:, -1] = True
    first = accept.float().argmax(dim=1, keepdim=True)
    log_gamma = (torch.log(torch.tensor(d, dtype=torch.float64, device=device))
                 + log_v.gather(1, first).squeeze(1))
    if alpha < 1:
        boost = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        log_gamma = log_gamma + torch.log(boost) / alpha
    return log_gamma
