"""Batches of a small image data set that lives on the training device.

The idea is airbench's ``CifarLoader`` (Keller Jordan, ``legacy/airbench94.py``): keep the
whole data set on the device as uint8, and make every batch there — the permutation, the
random crop, the flip, the conversion to float and the normalisation — so a training step
never waits for a host-side DataLoader.

Where we differ from airbench: the random crop reads reflected indices straight from the
unpadded images (one gather per batch that does crop and flip together) instead of padding
the whole data set once per epoch, and the random numbers come from a generator seeded from
``(seed, epoch)``, so an epoch can be replayed after a checkpoint (:meth:`set_epoch`).

MixUp/CutMix (:mod:`study.data.augment`) happens here too, after the crop and the resize,
and a DDP rank makes only its rows of the global batch, with the same pairs and draws as one
process (every rank draws the whole batch's random numbers from the same generator).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from study.data.augment import Mixing, mix_rows
from study.data.seeds import derive_seed
from study.errors import DataError


class DeviceLoader:
    """Batches a uint8 image tensor that lives on the training device.

    Training (``train=True``): each epoch draws a fresh permutation on the device, shifts
    every image by up to ``crop_pad`` pixels in each direction (reflect padding followed by
    a random crop of the original size), flips it horizontally with probability 1/2 if
    ``flip``, and drops the last partial batch. Evaluation (``train=False``): fixed order,
    no augmentation, the last partial batch is kept.

    Every batch is returned as float32, normalised per channel with ``mean``/``std`` (in
    0..1 units), resized to ``image_size`` if given (bilinear, ``align_corners=False``, no
    antialias; the crop happens before, in the stored resolution), then mixed when
    ``mixing`` is given (soft targets instead of class indices). Nothing inside an epoch
    syncs with the host.

    Args:
        images: ``(N, C, H, W)`` uint8 on the training device.
        labels: ``(N,)`` int64 on the same device.
        batch_size: images per batch.
        train: augment, shuffle and drop the last partial batch.
        image_size: output side (``int``) or ``(height, width)``; ``None`` keeps the stored size.
        crop_pad: largest shift in pixels of the random crop; 0 turns it off.
        flip: random horizontal flips.
        mean: per-channel mean, one value or one per channel.
        std: per-channel standard deviation, one value or one per channel.
        seed: seeds the permutation and the augmentation of every epoch.
        channels_last: return batches in ``torch.channels_last`` memory format.
        mixing: MixUp/CutMix of training batches (``None``: off). With the disjoint
            pairing a step reads 2B images and an epoch (still ``N // B`` steps) two passes.
        rank, world_size: training batches hold rows ``[rank·B/w, (rank+1)·B/w)`` of the
            global batch of ``batch_size`` (evaluation batches are whole).

    Raises:
        DataError: the tensors have the wrong dtype, shape or device, or a training loader
            would have no full batch.

    Example:
        >>> loader = DeviceLoader(images, labels, 128, train=True, crop_pad=2, flip=True)
        >>> for x, y in loader:  # one epoch; the next ``for`` is the next epoch
        ...     loss = F.cross_entropy(model(x), y)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        image_size: int | Sequence[int] | None = None,
        crop_pad: int = 0,
        flip: bool = False,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        seed: int = 0,
        channels_last: bool = False,
        mixing: Mixing | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_tensors(images, labels)
        channels = images.shape[1]
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        if train and batch_size > len(labels):
            raise DataError(
                f"batch_size {batch_size} is larger than the {len(labels)} training examples; "
                "a training epoch would have no full batch"
            )
        if crop_pad < 0 or crop_pad >= min(images.shape[2:]):
            raise DataError(f"crop_pad must be in 0..{min(images.shape[2:]) - 1} for these images, got {crop_pad}")
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise DataError(
                    f"{name} must have 1 or {channels} values for {channels}-channel images, got {tuple(values)}"
                )
        if any(s <= 0 for s in std):
            raise DataError(f"std must be positive, got {tuple(std)}")

        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.train = train
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.crop_pad = crop_pad if train else 0
        self.flip = flip and train
        self.seed = seed
        self.channels_last = channels_last
        self.num_examples = len(labels)
        self.mixing = mixing if train else None
        self._passes = 2 if self.mixing is not None and self.mixing.draws(batch_size) == 2 * batch_size else 1
        self._rows = range(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        own, partner = (mixing.sources(batch_size, images.device) if self.mixing is not None
                        else (torch.arange(batch_size, device=images.device), None))
        self._own = own[self._rows.start:self._rows.stop]
        self._partner = None if partner is None else partner[self._rows.start:self._rows.stop]
        self._epoch = 0
        # (x/255 - mean)/std == x*scale + shift: one fused multiply-add per batch.
        std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def __len__(self) -> int:
        if self.train:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` produce epoch ``epoch`` (to resume from a checkpoint)."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Not a generator function, so the counter advances when the epoch starts.
        epoch = self._epoch
        self._epoch += 1
        return self._train_batches(epoch) if self.train else self._eval_batches()

    def _eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.num_examples, self.batch_size):
            end = start + self.batch_size
            yield self._layout(self._normalise(self.images[start:end])), self.labels[start:end]

    def _train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device = self.images.device
        n, _, height, width = self.images.shape
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed(self.seed, epoch))
        order = torch.cat([torch.randperm(n, generator=generator, device=device) for _ in range(self._passes)])
        span = 2 * self.crop_pad + 1
        drawn = len(order)
        shifts = torch.randint(0, span, (2, drawn), generator=generator, device=device) - self.crop_pad
        flips = torch.randint(0, 2, (drawn,), generator=generator, device=device, dtype=torch.bool)
        grid = torch.arange(height, device=device), torch.arange(width, device=device)
        out_h, out_w = self.image_size or (height, width)
        for step in range(len(self)):
            start = step * self.batch_size * self._passes
            own = self._drawn(order, shifts, flips, grid, self._own + start)
            own_labels = self.labels[order[self._own + start]]
            if self.mixing is None:
                yield self._layout(own), own_labels
                continue
            partner = self._drawn(order, shifts, flips, grid, self._partner + start)
            draw = self.mixing.draw(self.batch_size, out_h, out_w, generator, device)
            mixed, targets = mix_rows(own, partner, own_labels, self.labels[order[self._partner + start]],
                                      draw, self._rows, self.mixing.num_classes)
            yield self._layout(mixed), targets

    def _drawn(self, order, shifts, flips, grid, positions) -> torch.Tensor:
        """The normalised, cropped, flipped and resized images at ``positions`` of the epoch."""
        index = order[positions]
        if self.crop_pad == 0 and not self.flip:
            return self._normalise(self.images[index])
        return self._normalise(self._crop_and_flip(index, shifts[:, positions], flips[positions], *grid))

    def _crop_and_flip(self, index, shifts, flips, rows, cols) -> torch.Tensor:
        """One gather: output pixel (i, j) of image b reads the reflected pixel (i + dy, j' + dx),
        where j' = W - 1 - j for flipped images."""
        height, width = len(rows), len(cols)
        src_cols = torch.where(flips[:, None], width - 1 - cols, cols) if self.flip else cols.expand(len(index), -1)
        src_rows = _reflect(rows[None, :] + shifts[0][:, None], height)  # (B, H)
        src_cols = _reflect(src_cols + shifts[1][:, None], width)  # (B, W)
        channels = torch.arange(self.images.shape[1], device=self.images.device)
        return self.images[
            index[:, None, None, None],
            channels[None, :, None, None],
            src_rows[:, None, :, None],
            src_cols[:, None, None, :],
        ]

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self._shift, batch.float(), self._scale)
        if self.image_size is not None and tuple(x.shape[2:]) != tuple(self.image_size):
            x = F.interpolate(x, size=tuple(self.image_size), mode="bilinear", align_corners=False, antialias=False)
        return x

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect out-of-range indices into 0..size-1 without repeating the edge (numpy/torch
    ``"reflect"`` padding); valid for shifts smaller than ``size``."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def _check_tensors(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(
            f"images must be a (N, C, H, W) uint8 tensor, got {images.dtype} of shape {tuple(images.shape)}"
        )
    if labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
        raise DataError(
            f"labels must be a ({len(images)},) int64 tensor to match the images, "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if labels.device != images.device:
        raise DataError(f"images and labels must be on one device, got {images.device} and {labels.device}")
