"""Data sets. Small ones (digits, CIFAR, fake) live on the training device as uint8 and
are batched there (:class:`~study.data.gpu_loader.DeviceLoader`); ImageFolder uses a
DataLoader with workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from study.config.run_config import DataConfig
from study.errors import DataError

EVAL_BATCH_SIZE = 500


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
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen).to(labels.device)
    return (images[perm[num_val:]], labels[perm[num_val:]]), (images[perm[:num_val]], labels[perm[:num_val]])


def build_data(cfg: DataConfig, batch_size: int, device: torch.device, seed: int,
               channels_last: bool = False) -> DataBundle:
    """Build the train/val/test iterables for ``cfg`` on ``device``.

    Args:
        batch_size: the batch actually drawn per training step.
        seed: the run seed; it orders and augments the training batches only (the splits
            are fixed).

    Raises:
        DataError: the data set's directory is missing or incomplete.
    """
    from study.data.gpu_loader import DeviceLoader, channel_stats

    if cfg.name == "imagefolder":
        return _imagefolder(cfg, batch_size, device, seed)
    if cfg.name == "digits":
        from study.data.digits import NUM_CLASSES, load_digits_tensors

        splits = load_digits_tensors(device)
        num_classes, default_size = NUM_CLASSES, 16
    elif cfg.name in ("cifar10", "cifar100"):
        from study.data.cifar import load_cifar

        train_x, train_y, test_x, test_y, num_classes = load_cifar(cfg.name, cfg.root, cfg.download, device)
        # The official 5,000 validation images; a tenth of a smaller local copy.
        train, val = _split_off_val(train_x, train_y, num_val=min(5000, len(train_y) // 10))
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

    train_x, train_y = splits["train"]
    mean, std = channel_stats(train_x)
    size = cfg.image_size or default_size
    common = dict(image_size=size, mean=mean, std=std, channels_last=channels_last)
    train = DeviceLoader(train_x, train_y, batch_size, train=True, crop_pad=cfg.crop_pad,
                         flip=cfg.flip, seed=seed, **common)
    val = DeviceLoader(*splits["val"], EVAL_BATCH_SIZE, train=False, **common)
    test = DeviceLoader(*splits["test"], EVAL_BATCH_SIZE, train=False, **common)
    return DataBundle(train, val, test, num_classes, train_x.shape[1], size, len(train_y))


def _imagefolder(cfg: DataConfig, batch_size: int, device: torch.device, seed: int) -> DataBundle:
    from study.data.imagefolder import build_imagefolder_loaders

    train_size = cfg.image_size or 224
    test_size = cfg.test_image_size or train_size
    train, val, num_classes = build_imagefolder_loaders(
        cfg.root, batch_size, train_size, test_size, cfg.randaugment, cfg.num_workers, device, seed
    )
    # ImageNet's labelled val split is the paper's test set; it doubles as our val split here.
    return DataBundle(train, val, val, num_classes, 3, train_size, len(train.dataset))
