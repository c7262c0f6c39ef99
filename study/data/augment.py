"""MixUp on one half of a batch and CutMix on the other (Brock et al. 2021, arXiv 2102.06171,
§4.1 and App. A; Zhang et al. 2018; Yun et al. 2019).

Official code: ``deepmind-research/nfnets/dataset.py`` (``my_mixup_cutmix``). For a training
batch of B images it reads 2B and splits them into quarters of ``q = B / 2``: the first
quarter is MixUp'ed with the second (``lam * x_own + (1 - lam) * x_partner``, one
``lam ~ Beta(alpha, alpha)`` per example, alpha = 0.2), the third is CutMix'ed with the fourth
(the partner's image with a box of the own image pasted in; box side ``sqrt(1 - u)`` of the
image with ``u ~ U(0, 1)``, centre uniform, clipped to the image). The target puts weight
``lam`` (MixUp) or the box's pixel fraction (CutMix) on the own label, the rest on the
partner's. That is ``pairing="disjoint"`` here.

``pairing="mirror"`` is the cheaper variant nfstudy used first: B images are read and each
half is mixed with itself reversed (example ``i`` with ``h - 1 - i``), so each image appears
twice, once as own and once as partner.

A batch is described by which drawn rows pair (:meth:`Mixing.sources`) and by per-row draws
(:meth:`Mixing.draw`), so a DDP rank can mix only its slice of the global batch with exactly
the pairs and draws one process would use (:func:`mix_rows`).

Label smoothing: the trainer passes the soft targets returned here straight to
``F.cross_entropy(logits, soft_targets, label_smoothing=0.1)``; PyTorch accepts class
probabilities as targets and smooths them to ``(1 - s) * target + s / num_classes``, the
official ``_loss_fn``'s formula (tested in ``tests/data/test_augment.py``).

Every tensor is made on the images' device from device tensors and Python scalars passed
as kernel arguments: nothing is copied from the host and nothing syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from study.errors import ConfigError, DataError

PAIRINGS = ("mirror", "disjoint")
_GAMMA_CANDIDATES = 16  # proposals per sample; Marsaglia-Tsang accepts each with p >= 0.95


@dataclass(frozen=True)
class MixDraw:
    """The random part of one mixed batch of ``B`` rows.

    Attributes:
        ratio: (B,) float64, the MixUp weight of the own image (rows before ``cutmix_from``).
        boxes: (B, 4) int64, ``y1, y2, x1, x2`` of the own image's box (rows from
            ``cutmix_from``), half-open and clipped to the image.
        cutmix_from: the first CutMix row, ``B // 2``.
    """

    ratio: torch.Tensor
    boxes: torch.Tensor
    cutmix_from: int


@dataclass(frozen=True)
class Mixing:
    """MixUp on the first ``B // 2`` rows of a batch, CutMix on the rest.

    Args:
        num_classes: classes of the soft targets.
        alpha: the Beta(alpha, alpha) parameter of the MixUp weight; > 0.
        pairing: ``"disjoint"`` (official: 2B images drawn, disjoint pairs) or ``"mirror"``
            (B images drawn, each half paired with itself reversed).

    Raises:
        ConfigError: ``alpha`` not positive, ``num_classes < 1`` or an unknown pairing.
    """

    num_classes: int
    alpha: float = 0.2
    pairing: str = "mirror"

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ConfigError(f"data.mixup_alpha: got {self.alpha!r}; allowed: a positive number")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes: got {self.num_classes!r}; allowed: >= 1")
        if self.pairing not in PAIRINGS:
            raise ConfigError(f"data.mixup_pairing: got {self.pairing!r}; allowed: {', '.join(PAIRINGS)}")

    def draws(self, batch_size: int) -> int:
        """Images read for one mixed batch of ``batch_size``: 2B (disjoint) or B (mirror)."""
        return 2 * batch_size if self.pairing == "disjoint" else batch_size

    def sources(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """For each output row, the drawn row of its own image and of its partner.

        Returns:
            ``(own, partner)``, two (B,) int64 tensors of indices into the
            :meth:`draws` rows. Disjoint with ``h = B // 2``: row ``k < h`` is
            ``(k, h + k)``, row ``k >= h`` is ``(h + k, B + k)`` (for even B the official
            quarters). Mirror: ``(k, h - 1 - k)`` and ``(k, B - 1 + h - k)``.
        """
        half = batch_size // 2
        rows = torch.arange(batch_size, device=device)
        cutmix = rows >= half
        if self.pairing == "disjoint":
            return torch.where(cutmix, rows + half, rows), torch.where(cutmix, rows + batch_size, rows + half)
        return rows, torch.where(cutmix, batch_size - 1 + half - rows, half - 1 - rows)

    def draw(self, batch_size: int, height: int, width: int, generator: torch.Generator | None,
             device: torch.device | str) -> MixDraw:
        """The MixUp weights and CutMix boxes of one global batch (every row, so every
        rank draws the same numbers from the same generator)."""
        ratio = _sample_beta(self.alpha, batch_size, generator, device)
        return MixDraw(ratio, _cutmix_boxes(batch_size, height, width, generator, device), batch_size // 2)


def mix_rows(own: torch.Tensor, partner: torch.Tensor, own_labels: torch.Tensor,
             partner_labels: torch.Tensor, draw: MixDraw, rows: range, num_classes: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix rows ``rows`` of a global batch whose draws are ``draw``.

    Args:
        own, partner: float (n, C, H, W), the own and partner images of those rows.
        own_labels, partner_labels: int64 (n,) class indices.
        draw: the whole batch's draws (:meth:`Mixing.draw`).
        rows: which rows of the global batch these are (``len(rows) == n``).
        num_classes: classes of the targets.

    Returns:
        ``(images, targets)``: the mixed images (dtype of ``own``) and (n, num_classes)
        float32 targets ``w * onehot(own) + (1 - w) * onehot(partner)``, ``w`` being the
        MixUp weight or the fraction of pixels inside the own image's box.
    """
    device, (_, _, height, width) = own.device, own.shape
    index = torch.arange(rows.start, rows.stop, device=device)
    boxes = draw.boxes[rows.start:rows.stop].view(-1, 4, 1, 1)
    ys = torch.arange(height, device=device).view(1, height, 1)
    xs = torch.arange(width, device=device).view(1, 1, width)
    inside = (ys >= boxes[:, 0]) & (ys < boxes[:, 1]) & (xs >= boxes[:, 2]) & (xs < boxes[:, 3])
    ratio = draw.ratio[rows.start:rows.stop]
    cutmix = index >= draw.cutmix_from
    pixel_weight = torch.where(cutmix.view(-1, 1, 1), inside.to(own.dtype), ratio.to(own.dtype).view(-1, 1, 1))
    mixed = torch.lerp(partner, own, pixel_weight.unsqueeze(1))
    weight = torch.where(cutmix, inside.float().mean(dim=(1, 2)), ratio.float())
    targets = torch.lerp(F.one_hot(partner_labels, num_classes).float(),
                         F.one_hot(own_labels, num_classes).float(), weight.unsqueeze(1))
    return mixed, targets


def mixup_cutmix(images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 alpha: float = 0.2, generator: torch.Generator | None = None, *,
                 pairing: str = "mirror") -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp on the first half of a batch and CutMix on the second; soft one-hot targets.

    Args:
        images: float tensor (R, C, H, W) of the drawn images; not modified. R is the
            batch size B (mirror) or 2B (disjoint).
        labels: int64 class indices (R,).
        num_classes: number of classes of the soft targets.
        alpha: the Beta(alpha, alpha) parameter of the MixUp ratio; > 0.
        generator: random source on ``images.device``; the global one when ``None``.
        pairing: ``"mirror"`` or ``"disjoint"`` (see :class:`Mixing`).

    Returns:
        ``(mixed_images, soft_targets)``: (B, C, H, W) of the images' dtype and
        (B, num_classes) float32 rows that sum to 1.

    Raises:
        ConfigError: ``alpha`` not positive, ``num_classes < 1``, an unknown pairing.
        DataError: images not a floating (R, C, H, W) tensor, labels not matching it, or an
            odd R for the disjoint pairing.

    Example:
        >>> x, t = mixup_cutmix(images, labels, num_classes=10, generator=g, pairing="disjoint")
        >>> loss = F.cross_entropy(model(x), t, label_smoothing=0.1)
    """
    mixing = Mixing(num_classes, alpha, pairing)
    if images.ndim != 4 or not images.is_floating_point():
        raise DataError(f"images: got {tuple(images.shape)} {images.dtype}; allowed: a floating "
                        "point (B, C, H, W) tensor")
    if labels.shape != images.shape[:1]:
        raise DataError(f"labels: got shape {tuple(labels.shape)}; allowed: "
                        f"({images.shape[0]},), one class index per image")
    drawn, _, height, width = images.shape
    if pairing == "disjoint" and drawn % 2:
        raise DataError(f"images: got {drawn} rows; allowed: an even number (2B) for pairing='disjoint'")
    batch = drawn // 2 if pairing == "disjoint" else drawn
    own, partner = mixing.sources(batch, images.device)
    draw = mixing.draw(batch, height, width, generator, images.device)
    return mix_rows(images[own], images[partner], labels[own], labels[partner], draw, range(batch), num_classes)


def _cutmix_boxes(n: int, height: int, width: int, generator: torch.Generator | None,
                  device: torch.device | str) -> torch.Tensor:
    """(n, 4) boxes ``y1, y2, x1, x2`` as the official ``cutmix_padding``: proportion
    ``u ~ U(0, 1)``, sides ``int(sqrt(1 - u) * size)``, centre uniform over the pixels,
    corners ``centre -/+ side // 2`` clipped to the image."""
    u = torch.rand(n, generator=generator, device=device)
    side = torch.sqrt(1 - u)
    cut_h, cut_w = (side * height).long(), (side * width).long()
    cy = torch.randint(0, height, (n,), generator=generator, device=device)
    cx = torch.randint(0, width, (n,), generator=generator, device=device)
    return torch.stack([(cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height),
                        (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)], dim=1)


def _sample_beta(alpha: float, n: int, generator: torch.Generator | None,
                 device: torch.device | str) -> torch.Tensor:
    """n samples of Beta(alpha, alpha) = X / (X + Y), X, Y ~ Gamma(alpha), in float64."""
    log_x = _sample_log_gamma(alpha, n, generator, device)
    log_y = _sample_log_gamma(alpha, n, generator, device)
    return torch.sigmoid(log_x - log_y)


def _sample_log_gamma(alpha: float, n: int, generator: torch.Generator | None,
                      device: torch.device | str) -> torch.Tensor:
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
    accept[:, -1].fill_(True)  # fill_ takes a scalar; `= True` would make a tensor from host data
    first = accept.float().argmax(dim=1, keepdim=True)
    # log(d) as a Python scalar: a kernel argument, not a tensor copied from the host.
    log_gamma = log_v.gather(1, first).squeeze(1) + math.log(d)
    if alpha < 1:
        boost = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        log_gamma = log_gamma + torch.log(boost) / alpha
    return log_gamma
