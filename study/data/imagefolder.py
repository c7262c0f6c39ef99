"""ImageNet-style image folders with the NFNet input pipeline (Brock et al. 2021,
arXiv 2102.06171, §4 and App. A; official ``deepmind-research/nfnets/dataset.py`` and
``experiment.py``).

Splits (fixed and seeded, whatever the run seed; :func:`image_splits`):

- ``root/train/<class>/`` + ``root/val/<class>/`` (ImageNet): ``val/`` is the reported split
  (``test/*`` metrics, as the paper reports on ImageNet's validation set); the tuning split
  (``val/*`` metrics, what a study selects on) is ``data.val_size`` images carved from
  ``train/`` (by default 10,000, as the official ``Split.VALID``, or a tenth of a smaller
  tree); training uses the rest.
- ``root/<class>/`` (one pool): the reported split is carved first (a tenth, at most 10,000),
  then the tuning split, from one seeded permutation; training uses the rest.

Training, one step of a global batch of B images, for one DDP rank's rows of it:

1. the step's drawn images are the next B of the epoch's order (2B with
   ``data.mixup_pairing=disjoint``, the official pairing: an epoch is then two passes);
   the rank decodes only the images its rows need (:class:`~study.data.augment.Mixing`);
2. each image is cropped, flipped and resized (:mod:`study.data.preprocess`), and given
   RandAugment here if ``data.augment_before_mix`` (or without MixUp);
3. MixUp/CutMix over the rows, rounded back to uint8;
4. RandAugment on each mixed image when it comes after mixing (the official NFNet order,
   ``augment_before_mix=False``);
5. uint8 batches go to the device (pinned, non-blocking: four times fewer bytes than float32)
   and are normalised there with the ImageNet mean and std.

Every draw comes from a seed derived from ``(seed, epoch, step, row)``
(:func:`~study.data.seeds.derive_seed`), never from a worker's generator, so an epoch
replays exactly after a checkpoint, the worker count changes nothing, and the ranks of a DDP
run train on exactly the batch one process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets import ImageFolder

from study.data.augment import Mixing, mix_rows
from study.data.layout import SPLIT, imagefolder_layout
from study.data.preprocess import TrainCrop, eval_transform
from study.data.randaugment import RandAugment
from study.data.seeds import derive_seed
from study.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDAUGMENT_LAYERS = 4  # official NFNets: '405', '410', '415' = 4 layers
DEFAULT_HOLDOUT = 10_000  # official Split.VALID: 10,000 training images held out for tuning
SPLIT_SEED = 0
PREFETCH_FACTOR = 4  # batches each worker keeps ready
_CROP, _MIX, _AUGMENT_MIXED = 0, 1, 2  # seed streams of a step


@dataclass(frozen=True)
class ImageRecipe:
    """How training and evaluation images are made (the ``data.*`` keys, sizes resolved).

    ``randaugment`` is the magnitude (``None``: off); the other fields are described in
    :mod:`study.data.preprocess`, :mod:`study.data.randaugment` and
    :mod:`study.data.augment`.
    """

    train_size: int
    test_size: int
    randaugment: int | None = None
    randaugment_policy: str = "torchvision"
    augment_before_mix: bool = True
    train_crop: str = "torchvision"
    interpolation: str = "bilinear"
    eval_resize: str = "shorter_side"
    mixup: bool = False
    mixup_alpha: float = 0.2
    mixup_pairing: str = "mirror"


@dataclass
class ImageFolderData:
    """The three loaders of an image-folder data set and its facts."""

    train: ImageFolderLoader
    val: ImageFolderLoader
    test: ImageFolderLoader
    num_classes: int
    num_train: int


@dataclass(frozen=True)
class _Split:
    folder: ImageFolder
    indices: list[int]


def holdout_size(num_images: int) -> int:
    """The default size of a carved split: 10,000, or a tenth of a smaller pool (at least 1)."""
    return max(1, min(DEFAULT_HOLDOUT, num_images // 10))


def image_splits(root: str | Path, val_size: int | None = None) -> tuple[dict[str, _Split], list[str]]:
    """The train, val (tuning) and test (reported) splits of an image-folder tree.

    Args:
        root: a tree in one of the two layouts of :mod:`study.data.layout`.
        val_size: images in the tuning split; ``None`` = :func:`holdout_size` of the pool.

    Returns:
        ``({"train" | "val" | "test": split}, class names)``; a split holds its
        ``ImageFolder`` and the sorted sample indices it uses.

    Raises:
        DataError: a bad layout, or splits that leave no training image.
    """
    root = Path(root).expanduser()
    if imagefolder_layout(root) == SPLIT:
        pool, test_folder = _image_folder(root / "train"), _image_folder(root / "val")
        test_count = 0
    else:
        pool = test_folder = _image_folder(root)
        test_count = holdout_size(len(pool))
    val_count = val_size or holdout_size(len(pool) - test_count)
    if test_count + val_count >= len(pool):
        raise DataError(f"data.val_size: {val_count} validation images (+ {test_count} test) leave no training "
                        f"image of the {len(pool)} in {pool.root}; set a smaller data.val_size")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    test = order[:test_count] if test_count else list(range(len(test_folder)))
    splits = {"train": _Split(pool, sorted(order[test_count + val_count:])),
              "val": _Split(pool, sorted(order[test_count:test_count + val_count])),
              "test": _Split(test_folder, sorted(test))}
    return splits, pool.classes


def build_imagefolder(root: str | Path | None, recipe: ImageRecipe, batch_size: int, device: torch.device | str,
                      seed: int, *, val_size: int | None = None, num_workers: int = 4, rank: int = 0,
                      world_size: int = 1, channels_last: bool = False) -> ImageFolderData:
    """Training, tuning and test loaders for an image-folder tree.

    Args:
        root: ``data.root`` (either layout of :mod:`study.data.layout`).
        recipe: how images are made.
        batch_size: the global batch B of one training step (the last partial batch of an
            epoch is dropped); each rank receives its ``B / world_size`` rows. Evaluation
            batches hold ``B / world_size`` images and every rank evaluates the whole split.
        device: where batches are delivered.
        seed: the run seed: orders and augments the training batches (not the splits).
        val_size: size of the tuning split (``None``: :func:`holdout_size`).
        num_workers: DataLoader worker processes (0 decodes in the training process).
        rank, world_size: this process's place in a DDP run.
        channels_last: deliver batches in ``torch.channels_last`` memory format.

    Returns:
        :class:`ImageFolderData`. Each loader yields ``(x, targets)`` on ``device``: ``x``
        float32 ``(n, 3, S, S)`` normalised with the ImageNet mean/std; ``targets`` int64
        class indices (classes sorted by folder name), or float32 ``(n, num_classes)``
        soft targets for training batches with MixUp/CutMix.

    Raises:
        DataError: no ``root``, a bad layout, splits without training images, or a batch
            larger than the training split.

    Example:
        >>> data = build_imagefolder("~/imagenet", ImageRecipe(192, 256, randaugment=5), 256,
        ...                          "cuda", seed=0, num_workers=8)
        >>> for x, y in data.train: ...
    """
    if root is None:
        raise DataError("data.root is not set for imagefolder: set data.root to a directory with "
                        "train/ and val/ class folders, or with class folders")
    splits, classes = image_splits(root, val_size)
    train_split = splits["train"]
    if batch_size > len(train_split.indices):
        raise DataError(f"batch_size {batch_size} is larger than the {len(train_split.indices)} "
                        f"training images in {root}")
    mixing = Mixing(len(classes), recipe.mixup_alpha, recipe.mixup_pairing) if recipe.mixup else None
    device = torch.device(device)
    common: dict[str, Any] = dict(num_workers=num_workers, device=device, channels_last=channels_last)
    plans = _StepPlans(train_split.indices, batch_size, seed, mixing, rank, world_size)
    train = ImageFolderLoader(_TrainBatches(train_split.folder, recipe, mixing), batch_size=None,
                              sampler=plans, **common)
    transform = eval_transform(recipe.test_size, recipe.eval_resize, recipe.interpolation)
    local = batch_size // world_size
    val, test = (ImageFolderLoader(_Pictures(splits[name], transform), batch_size=local, **common)
                 for name in ("val", "test"))
    return ImageFolderData(train, val, test, len(classes), len(train_split.indices))


@dataclass(frozen=True)
class _Plan:
    """What one rank loads for one step: the drawn images its rows need and how they pair."""

    seed: int
    batch_size: int
    rows: tuple[int, int]
    positions: tuple[int, ...]
    samples: tuple[int, ...]
    own: tuple[int, ...]
    partner: tuple[int, ...] | None


class _StepPlans(Sampler[_Plan]):
    """The epoch's steps as :class:`_Plan` items (made in the training process)."""

    def __init__(self, indices: list[int], batch_size: int, seed: int, mixing: Mixing | None,
                 rank: int, world_size: int) -> None:
        self.indices, self.batch_size, self.seed = indices, batch_size, seed
        self.passes = 2 if mixing is not None and mixing.draws(batch_size) == 2 * batch_size else 1
        self.rows = (rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        if mixing is None:
            self.own, self.partner = list(range(*self.rows)), None
        else:
            own, partner = mixing.sources(batch_size)
            self.own, self.partner = own[slice(*self.rows)].tolist(), partner[slice(*self.rows)].tolist()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices) // self.batch_size

    def __iter__(self) -> Iterator[_Plan]:
        return self._plans(self.epoch)

    def _plans(self, epoch: int) -> Iterator[_Plan]:
        order = []
        for extra in range(self.passes):  # the second pass of a 2B-per-step epoch
            keys = (self.seed, epoch) if extra == 0 else (self.seed, epoch, extra)
            order += torch.randperm(len(self.indices), generator=torch.Generator().manual_seed(derive_seed(*keys))).tolist()
        drawn = self.batch_size * self.passes
        positions = sorted(set(self.own) | set(self.partner or ()))
        where = {p: i for i, p in enumerate(positions)}
        own = tuple(where[p] for p in self.own)
        partner = None if self.partner is None else tuple(where[p] for p in self.partner)
        for step in range(len(self)):
            samples = tuple(self.indices[order[step * drawn + p]] for p in positions)
            yield _Plan(derive_seed(self.seed, epoch, step), self.batch_size, self.rows, tuple(positions),
                        samples, own, partner)


class _TrainBatches(Dataset):
    """Makes one rank's slice of a training batch from a :class:`_Plan` (in a worker)."""

    def __init__(self, folder: ImageFolder, recipe: ImageRecipe, mixing: Mixing | None) -> None:
        self.samples, self.loader, self.recipe, self.mixing = folder.samples, folder.loader, recipe, mixing
        self.crop = TrainCrop(recipe.train_size, recipe.train_crop, recipe.interpolation)
        self.augment = (None if recipe.randaugment is None
                        else RandAugment(recipe.randaugment, RANDAUGMENT_LAYERS, recipe.randaugment_policy))
        self.augment_drawn = self.augment is not None and (recipe.augment_before_mix or mixing is None)

    def __getitem__(self, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([self._drawn_image(sample, derive_seed(plan.seed, _CROP, position))
                              for sample, position in zip(plan.samples, plan.positions)])
        labels = torch.tensor([self.samples[sample][1] for sample in plan.samples])
        if self.mixing is None:
            return images, labels
        own, partner = torch.tensor(plan.own), torch.tensor(plan.partner)
        size = self.recipe.train_size
        draw = self.mixing.draw(plan.batch_size, size, size,
                                torch.Generator().manual_seed(derive_seed(plan.seed, _MIX)), "cpu")
        mixed, targets = mix_rows(images[own].float(), images[partner].float(), labels[own], labels[partner],
                                  draw, range(*plan.rows), self.mixing.num_classes)
        mixed = mixed.round_().clamp_(0, 255).to(torch.uint8)
        if self.augment is not None and not self.augment_drawn:
            mixed = torch.stack([self._seeded(self.augment, image, derive_seed(plan.seed, _AUGMENT_MIXED, row))
                                 for row, image in zip(range(*plan.rows), mixed)])
        return mixed, targets

    def _drawn_image(self, sample: int, seed: int) -> torch.Tensor:
        image = self._seeded(self.crop, self.loader(self.samples[sample][0]), seed)
        if self.augment_drawn:
            image = self._seeded(self.augment, image, derive_seed(seed, 1))
        return image

    @staticmethod
    def _seeded(transform, image, seed: int) -> torch.Tensor:
        # torchvision's transforms draw from the global generator: seed it for this image only,
        # leaving the training process's generator (dropout, stochastic depth) untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return transform(image)


class _Pictures(Dataset):
    """The evaluation images of a split, decoded and resized, with their labels."""

    def __init__(self, split: _Split, transform) -> None:
        self.samples, self.loader = split.folder.samples, split.folder.loader
        self.indices, self.transform = split.indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[self.indices[i]]
        return self.transform(self.loader(path)), label


class ImageFolderLoader:
    """A DataLoader that delivers normalised batches on the device.

    Same contract as :class:`~study.data.gpu_loader.DeviceLoader`: ``len`` is batches per
    epoch, each ``iter`` is the next epoch, :meth:`set_epoch` picks the epoch to replay.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int | None, num_workers: int, device: torch.device,
                 channels_last: bool, sampler: _StepPlans | None = None) -> None:
        self.dataset, self.device, self.channels_last, self._plans = dataset, device, channels_last, sampler
        self.num_examples = len(sampler.indices) if sampler is not None else len(dataset)
        self._epoch = 0
        workers = num_workers > 0
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
            pin_memory=device.type == "cuda", persistent_workers=workers,
            prefetch_factor=PREFETCH_FACTOR if workers else None)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` produce epoch ``epoch``'s batches (to resume)."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._plans is not None:
            # Fixed before the DataLoader asks for it (at once with workers, lazily without).
            self._plans.epoch = self._epoch
        self._epoch += 1
        return self._to_device(iter(self.loader))

    def _to_device(self, batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in batches:
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            x = torch.addcmul(self._shift, images.float(), self._scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, targets


def _image_folder(path: Path) -> ImageFolder:
    try:
        return ImageFolder(str(path))
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise DataError(f"{path}: {err}") from err
