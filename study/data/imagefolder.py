"""ImageNet-style image trees (``root/train/<class>/*``, ``root/val/<class>/*``) with the
paper's input pipeline (Brock et al. 2021; official ``nfnets/dataset.py``).

Training: Inception-style ``RandomResizedCrop`` at the training resolution, a horizontal
flip, and RandAugment with 4 layers at the variant's magnitude (F0…F6: 5/10/10/15/15/15/15).
Evaluation: resize the shorter side to ``test_size + 32``, then centre-crop ``test_size``
(the official code's ``crop_padding=32``).

Where the work happens: DataLoader workers decode and augment with PIL and hand back uint8
batches; the host pins them, copies them to the device without blocking, and the device
converts them to float and normalises (four times fewer bytes over PCIe than float32).
Shuffling is a per-epoch permutation from ``(seed, epoch)``, so :meth:`set_epoch` replays an
epoch's order after a checkpoint. The augmentation draws come from the workers' seeds
(derived from ``seed`` when the workers start; with ``num_workers=0`` from torch's global
generator): a fresh run is reproducible, a resumed run gets the same order but new draws.
One process reads the whole training set (no ``DistributedSampler`` sharding yet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from study.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDAUGMENT_LAYERS = 4  # the NFNet recipe (official nfnets/dataset.py)
EVAL_CROP_PADDING = 32  # official nfnets/dataset.py: resize to test + 32, centre crop test
PREFETCH_FACTOR = 4  # batches each worker keeps ready


def train_transform(train_size: int, randaugment_magnitude: int | None) -> v2.Compose:
    """The paper's training augmentation, PIL image in, ``(3, S, S)`` uint8 tensor out.

    Args:
        train_size: output side in pixels.
        randaugment_magnitude: RandAugment magnitude (0..30) with 4 layers; ``None`` turns it off.
    """
    steps = [v2.RandomResizedCrop(train_size, antialias=True), v2.RandomHorizontalFlip()]
    if randaugment_magnitude is not None:
        steps.append(v2.RandAugment(num_ops=RANDAUGMENT_LAYERS, magnitude=randaugment_magnitude))
    steps.append(v2.PILToTensor())
    return v2.Compose(steps)


def eval_transform(test_size: int) -> v2.Compose:
    """Resize the shorter side to ``test_size + 32``, centre-crop ``test_size``; uint8 tensor out."""
    return v2.Compose([
        v2.Resize(test_size + EVAL_CROP_PADDING, antialias=True),
        v2.CenterCrop(test_size),
        v2.PILToTensor(),
    ])


def build_imagefolder_loaders(
    root: str | Path | None,
    batch_size: int,
    train_size: int,
    test_size: int,
    randaugment_magnitude: int | None,
    num_workers: int,
    device: torch.device | str,
    seed: int,
    *,
    channels_last: bool = False,
) -> tuple[ImageFolderLoader, ImageFolderLoader, int]:
    """Training and validation loaders for an ImageNet-style tree.

    Args:
        root: directory with ``train/`` and ``val/``, each holding one folder per class.
        batch_size: images per batch (training drops the last partial batch, validation keeps it).
        train_size: training resolution.
        test_size: evaluation resolution.
        randaugment_magnitude: RandAugment magnitude (0..30), ``None`` for none.
        num_workers: DataLoader worker processes (0 decodes in the training process).
        device: where the batches are delivered.
        seed: seeds the shuffling and the workers.
        channels_last: deliver batches in ``torch.channels_last`` memory format.

    Returns:
        ``(train_loader, val_loader, num_classes)``. Each loader yields ``(x, y)`` on
        ``device``: ``x`` float32 ``(B, 3, S, S)`` normalised with the ImageNet mean/std,
        ``y`` int64 class indices (classes sorted by folder name).

    Raises:
        DataError: no ``root``, a missing split or class folder, a split without images,
            train and val with different classes, or a batch larger than the training set.

    Example:
        >>> train, val, num_classes = build_imagefolder_loaders(
        ...     "~/imagenet", 256, 192, 256, 5, num_workers=8, device="cuda", seed=0)
        >>> for x, y in train: ...
    """
    if root is None:
        raise DataError("data.root is not set for imagefolder: set data.root to a directory with train/ and val/")
    if randaugment_magnitude is not None and not 0 <= randaugment_magnitude <= 30:
        raise DataError(f"randaugment_magnitude must be in 0..30 or None, got {randaugment_magnitude}")
    root = Path(root).expanduser()
    train_set = _image_folder(root / "train", train_transform(train_size, randaugment_magnitude))
    val_set = _image_folder(root / "val", eval_transform(test_size))
    if train_set.classes != val_set.classes:
        only_train = sorted(set(train_set.classes) - set(val_set.classes))
        only_val = sorted(set(val_set.classes) - set(train_set.classes))
        raise DataError(
            f"{root}/train and {root}/val have different classes "
            f"(only in train: {only_train[:5]}, only in val: {only_val[:5]})"
        )
    if batch_size > len(train_set):
        raise DataError(f"batch_size {batch_size} is larger than the {len(train_set)} training images in {root}/train")

    device = torch.device(device)
    common = dict(num_workers=num_workers, device=device, seed=seed, channels_last=channels_last)
    train = ImageFolderLoader(train_set, batch_size, train=True, **common)
    val = ImageFolderLoader(val_set, batch_size, train=False, **common)
    return train, val, len(train_set.classes)


class ImageFolderLoader:
    """A DataLoader over an ``ImageFolder`` that delivers normalised batches on the device.

    Same contract as :class:`~study.data.gpu_loader.DeviceLoader`: ``len`` is batches per
    epoch, each ``iter`` is the next epoch, :meth:`set_epoch` picks the epoch to replay.
    """

    def __init__(self, dataset: ImageFolder, batch_size: int, *, train: bool, num_workers: int,
                 device: torch.device, seed: int, channels_last: bool) -> None:
        self.dataset = dataset
        self.num_examples = len(dataset)
        self.device = device
        self.channels_last = channels_last
        self._sampler = _EpochShuffle(len(dataset), seed) if train else None
        self._epoch = 0
        workers = num_workers > 0
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._sampler,
            drop_last=train,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers,
            prefetch_factor=PREFETCH_FACTOR if workers else None,
            generator=torch.Generator().manual_seed(seed),  # seeds the workers' augmentation
        )
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` produce epoch ``epoch``'s order (to resume)."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._sampler is not None:
            # Fixed before the DataLoader asks for it (at once with workers, lazily without).
            self._sampler.draw(self._epoch)
        self._epoch += 1
        return self._to_device(iter(self.loader))

    def _to_device(self, batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in batches:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            x = torch.addcmul(self._shift, images.float(), self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, labels


class _EpochShuffle(Sampler[int]):
    """Yields the permutation of ``range(n)`` last drawn for ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.draw(0)

    def draw(self, epoch: int) -> None:
        mixed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        self._order = torch.randperm(self.n, generator=torch.Generator().manual_seed(mixed)).tolist()

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)


def _image_folder(path: Path, transform: v2.Compose) -> ImageFolder:
    if not path.is_dir():
        raise DataError(
            f"image folder {path} not found: set data.root to a directory with train/<class>/ and val/<class>/"
        )
    try:
        return ImageFolder(str(path), transform=transform)
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise DataError(f"{path}: {err}") from err
