"""Data sets. Small ones (digits, CIFAR, fake) live on the training device as uint8 and
are batched there (:class:`~study.data.gpu_loader.DeviceLoader`); ImageFolder uses a
DataLoader with workers (:mod:`study.data.imagefolder`). Both deliver each DDP rank its rows
of the global batch, MixUp/CutMix included.

Splits: ``train`` (trained on), ``val`` (tuning: what a study selects on, the ``val/*``
metrics) and ``test`` (reported, the ``test/*`` metrics), fixed whatever the run seed. digits:
1,400 / 197 / 200 (stratified); CIFAR: ``data.val_size`` (default 5,000, the official
hold-out, or a tenth of a smaller copy) carved from the training batches / the rest / the test
batch; ImageFolder: see :func:`study.data.imagefolder.image_splits`; fake: N / 500 / 500."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from study.config.run_config import DataConfig
from study.data.augment import Mixing
from study.data.python import BUILTIN, build_python_data, list_datasets, register_dataset
from study.errors import DataError

__all__ = ["DataBundle", "build_data", "list_datasets", "register_dataset"]

EVAL_BATCH_SIZE = 500
DEFAULT_IMAGE_SIZE = 224  # ImageFolder training resolution for models without their own


@dataclass
class DataBundle:
    """The three splits of a data set, ready to iterate, and its shape facts."""

    train: Iterable
    val: Iterable
    test: Iterable
    num_classes: int
    in_chans: int
    image_size: int
    num_train: int


def _split_off_val(images, labels, num_val: int, seed: int = 0):
    """A fixed validation split carved from the training set (independent of the run seed)."""
    if not 0 < num_val < len(labels):
        raise DataError(f"data.val_size: got {num_val}; allowed: 1..{len(labels) - 1} for the "
                        f"{len(labels)} training images")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen).to(labels.device)
    return (images[perm[num_val:]], labels[perm[num_val:]]), (images[perm[:num_val]], labels[perm[:num_val]])


def build_data(cfg: DataConfig, batch_size: int, device: torch.device, seed: int,
               channels_last: bool = False, *, model_name: str | None = None, rank: int = 0,
               world_size: int = 1) -> DataBundle:
    """Build the train/val/test iterables for ``cfg`` on ``device``.

    Args:
        batch_size: the global batch drawn per training step.
        seed: the run seed; it orders and augments the training batches only (the splits
            are fixed).
        channels_last: deliver batches in ``torch.channels_last`` memory format.
        model_name: the model being trained: an ImageFolder run without ``data.image_size``
            takes the model's training and test resolutions, and ``data.randaugment=auto``
            its RandAugment magnitude (:func:`study.models.input_defaults`).
        rank, world_size: a DDP rank's place; its training batches hold its rows of the
            global batch (evaluation batches are whole on every rank).

    Raises:
        DataError: the data set's directory is missing or incomplete, or a split is empty.
    """
    if cfg.name not in BUILTIN:  # python:pkg.module:factory, or a plugin's registered name
        return build_python_data(cfg, batch_size, device, seed, channels_last, rank, world_size)
    if cfg.name == "imagefolder":
        return _imagefolder(cfg, batch_size, device, seed, channels_last, model_name, rank, world_size)
    if cfg.name == "digits":
        from study.data.digits import NUM_CLASSES, load_digits_tensors

        splits = load_digits_tensors(device)
        num_classes, default_size = NUM_CLASSES, 16
    elif cfg.name in ("cifar10", "cifar100"):
        from study.data.cifar import load_cifar

        train_x, train_y, test_x, test_y, num_classes = load_cifar(cfg.name, cfg.root, cfg.download, device)
        # The official 5,000 validation images; a tenth of a smaller local copy.
        num_val = cfg.val_size or min(5000, len(train_y) // 10)
        train, val = _split_off_val(train_x, train_y, num_val=num_val)
        splits = {"train": train, "val": val, "test": (test_x, test_y)}
        default_size = 32
    elif cfg.name == "fake":
        from study.data.fake import load_fake

        num_classes, default_size = 10, cfg.image_size or 32
        n = cfg.num_examples or 5000
        x, y = load_fake(n + 1000, default_size, num_classes, device, seed=0)
        splits = {"train": (x[:n], y[:n]), "val": (x[n:n + 500], y[n:n + 500]), "test": (x[n + 500:], y[n + 500:])}
    else:  # pragma: no cover - the spec's Literal rejects anything else
        raise DataError(f"unknown data set '{cfg.name}'")

    return device_bundle(cfg, splits, num_classes, default_size, batch_size, seed, channels_last, rank, world_size)


def device_bundle(cfg: DataConfig, splits: dict, num_classes: int, default_size: int, batch_size: int, seed: int,
                  channels_last: bool, rank: int, world_size: int) -> DataBundle:
    """Device-resident loaders over ``splits`` (``{"train" | "val" | "test": (uint8 images,
    labels)}`` already on the device), with ``data.crop_pad``, ``data.flip`` and MixUp."""
    from study.data.gpu_loader import DeviceLoader, channel_stats

    train_x, train_y = splits["train"]
    mean, std = channel_stats(train_x)
    size = cfg.image_size or default_size
    common = dict(image_size=size, mean=mean, std=std, channels_last=channels_last)
    mixing = Mixing(num_classes, cfg.mixup_alpha, cfg.mixup_pairing) if cfg.mixup else None
    train = DeviceLoader(train_x, train_y, batch_size, train=True, crop_pad=cfg.crop_pad, flip=cfg.flip,
                         seed=seed, mixing=mixing, rank=rank, world_size=world_size, **common)
    val = DeviceLoader(*splits["val"], EVAL_BATCH_SIZE, train=False, **common)
    test = DeviceLoader(*splits["test"], EVAL_BATCH_SIZE, train=False, **common)
    return DataBundle(train, val, test, num_classes, train_x.shape[1], size, len(train_y))


def _imagefolder(cfg: DataConfig, batch_size: int, device: torch.device, seed: int, channels_last: bool,
                 model_name: str | None, rank: int, world_size: int) -> DataBundle:
    from study.data.imagefolder import ImageRecipe, build_imagefolder
    from study.models import input_defaults

    defaults = input_defaults(model_name) if model_name else None
    train_size = cfg.image_size or (defaults.image_size if defaults else DEFAULT_IMAGE_SIZE)
    test_size = cfg.test_image_size or (defaults.test_image_size if defaults and not cfg.image_size else train_size)
    randaugment = (defaults.randaugment if defaults else None) if cfg.randaugment == "auto" else cfg.randaugment
    recipe = ImageRecipe(train_size, test_size, randaugment, cfg.randaugment_policy, cfg.augment_before_mix,
                         cfg.train_crop, cfg.interpolation, cfg.eval_resize, cfg.mixup, cfg.mixup_alpha,
                         cfg.mixup_pairing)
    data = build_imagefolder(cfg.root, recipe, batch_size, device, seed, val_size=cfg.val_size,
                             num_workers=cfg.num_workers, rank=rank, world_size=world_size,
                             channels_last=channels_last)
    return DataBundle(data.train, data.val, data.test, data.num_classes, 3, train_size, data.num_train)
