"""Your own data set: ``data.name: python:pkg.module:factory``, or a name a plugin registered
with :func:`register_dataset`.

The factory returns the three splits, ``(train, val, test)`` or ``{"train": …, "val": …,
"test": …}`` (a dict may add ``"num_classes"``). It is called with the keyword arguments it
names among ``root`` (``data.root``) and ``image_size`` (``data.image_size``). Each split is
either

- a map-style ``torch.utils.data.Dataset`` of ``(image, label)`` pairs, the image a float
  tensor ``(C, H, W)`` already transformed by the Dataset (augmentation is the Dataset's
  own): batched by a ``DataLoader`` with ``data.num_workers`` workers; or
- a pair of tensors ``(images, labels)``, images ``uint8 (N, C, H, W)``: kept on the training
  device and batched there (:class:`~study.data.gpu_loader.DeviceLoader`, with
  ``data.crop_pad``, ``data.flip`` and ``data.mixup``), as the built-in small data sets are.

Training batches are drawn in a seeded order (the run seed and the epoch), so an epoch
replays after a checkpoint and each DDP rank gets its rows of the global batch. The number of
classes is the dict's ``num_classes``, else the training Dataset's ``classes``, else the
largest training label + 1.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from study.errors import ConfigError, DataError, did_you_mean

PREFIX = "python:"
BUILTIN = ("digits", "cifar10", "cifar100", "imagefolder", "fake")
_FACTORIES: dict[str, Callable[..., Any]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a data set factory under ``name`` (decorator), for ``data.name: NAME``.

    Raises:
        ValueError: ``name`` is built in, has the ``python:`` prefix, or is registered twice.

    Example:
        >>> @register_dataset("my_shapes")
        ... def my_shapes(root):
        ...     return train, val, test
    """
    if name in BUILTIN or name.startswith(PREFIX) or not name:
        raise ValueError(f"data set {name!r}: the name is taken by a built-in data set or the python: prefix")

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"data set {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return decorator


def list_datasets() -> list[str]:
    """The data set names a plugin registered (plugins loaded first), sorted."""
    from study.plugins import load_plugins

    load_plugins()
    return sorted(_FACTORIES)


def is_user_data(name: str) -> bool:
    return name not in BUILTIN


def check_data_name(name: str) -> None:
    """Raise unless ``name`` is built in, registered, or a ``python:`` factory that imports.

    Raises:
        ConfigError: one line naming what is missing.
    """
    if name in BUILTIN:
        return
    factory(name)


def factory(name: str) -> Callable[..., Any]:
    """The factory ``data.name`` names (importing its module as a plugin).

    Raises:
        ConfigError: a bad ``python:`` spec, a module or attribute that is missing, or an
            unknown name.
    """
    from study.plugins import import_plugin

    if name.startswith(PREFIX):
        module, sep, attr = name[len(PREFIX):].partition(":")
        if not sep or not module or not attr.isidentifier():
            raise ConfigError(f"data.name={name}: expected python:package.module:function")
        found = getattr(import_plugin(module), attr, None)
        if not callable(found):
            raise ConfigError(f"data.name={name}: module {module} has no function {attr!r}")
        return found
    if name not in list_datasets():
        known = [*BUILTIN, *list_datasets()]
        raise ConfigError(f"data.name: unknown data set {name!r}{did_you_mean(name, known)}; allowed: "
                          f"{', '.join(map(repr, known))}, or python:package.module:function")
    return _FACTORIES[name]


def call_factory(cfg) -> dict[str, Any]:
    """Call ``cfg.name``'s factory; returns ``{"train", "val", "test"[, "num_classes"]}``.

    Raises:
        DataError: the factory returned something else.
    """
    made = factory(cfg.name)
    wanted = {"root": cfg.root, "image_size": cfg.image_size}
    params = inspect.signature(made).parameters
    splits = made(**{key: value for key, value in wanted.items() if key in params})
    if isinstance(splits, (tuple, list)) and len(splits) == 3:
        splits = dict(zip(("train", "val", "test"), splits))
    if not isinstance(splits, dict) or not {"train", "val", "test"} <= set(splits):
        raise DataError(f"data.name={cfg.name}: the factory must return (train, val, test) or a dict with those "
                        f"keys; got {type(splits).__name__}")
    return splits


def build_python_data(cfg, batch_size: int, device, seed: int, channels_last: bool, rank: int, world_size: int):
    """The :class:`~study.data.DataBundle` of a user data set (see the module docstring)."""
    import torch

    from study.data import EVAL_BATCH_SIZE, DataBundle

    splits = call_factory(cfg)
    if all(_is_tensor_pair(splits[key]) for key in ("train", "val", "test")):
        return _device_bundle(cfg, splits, batch_size, device, seed, channels_last, rank, world_size)
    if cfg.mixup:
        raise DataError(f"data.mixup: data.name={cfg.name} returns Datasets; MixUp/CutMix needs uint8 tensor "
                        "splits (images, labels), or mix inside your Dataset")
    train = splits["train"]
    if len(train) < batch_size:
        raise DataError(f"data.batch_size {batch_size} is larger than the {len(train)} training examples of "
                        f"{cfg.name}; a training epoch would have no full batch")
    image, _ = train[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise DataError(f"data.name={cfg.name}: a training example's image must be a (C, H, W) tensor; got "
                        f"{type(image).__name__}" + (f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else
                                                     "") + " (add transforms.ToTensor() to your Dataset)")
    num_classes = splits.get("num_classes") or _num_classes(train)
    common = dict(num_workers=cfg.num_workers, device=device, channels_last=channels_last)
    loaders = [DatasetLoader(train, batch_size, seed=seed, train=True, rank=rank, world_size=world_size, **common),
               *(DatasetLoader(splits[key], EVAL_BATCH_SIZE, **common) for key in ("val", "test"))]
    return DataBundle(*loaders, int(num_classes), image.shape[0], image.shape[-1], len(train))


def _is_tensor_pair(split: Any) -> bool:
    import torch

    return isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split)


def _device_bundle(cfg, splits, batch_size, device, seed, channels_last, rank, world_size):
    from study.data import device_bundle

    on_device = {key: tuple(t.to(device) for t in splits[key]) for key in ("train", "val", "test")}
    num_classes = int(splits.get("num_classes") or int(on_device["train"][1].max()) + 1)
    return device_bundle(cfg, on_device, num_classes, on_device["train"][0].shape[-1], batch_size, seed,
                         channels_last, rank, world_size)


def _num_classes(dataset) -> int:
    classes = getattr(dataset, "classes", None)
    if classes:
        return len(classes)
    targets = getattr(dataset, "targets", None)
    labels = targets if targets is not None else (dataset[i][1] for i in range(len(dataset)))
    return int(max(int(label) for label in labels)) + 1


class DatasetLoader:
    """A user Dataset batched by a ``DataLoader``, delivered on the device; the contract of
    :class:`~study.data.gpu_loader.DeviceLoader` (``len`` = batches per epoch, each ``iter``
    the next epoch, :meth:`set_epoch` to replay one). Training batches are full, in an order
    seeded by ``(seed, epoch)``; a DDP rank gets rows ``[rank·B/w, (rank+1)·B/w)`` of each."""

    def __init__(self, dataset, batch_size: int, *, num_workers: int, device, channels_last: bool,
                 train: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        from torch.utils.data import DataLoader

        self.dataset, self.device, self.channels_last = dataset, device, channels_last
        self.num_examples = len(dataset)
        self._sampler = _GlobalBatches(len(dataset), batch_size, seed, train, rank, world_size)
        self.loader = DataLoader(dataset, batch_sampler=self._sampler, num_workers=num_workers,
                                 pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)

    def __len__(self) -> int:
        return len(self._sampler)

    def set_epoch(self, epoch: int) -> None:
        self._sampler.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)  # the sampler's epoch is read here
        self._sampler.epoch += 1
        return self._to_device(batches)

    def _to_device(self, batches) -> Iterator[Any]:
        import torch

        for images, targets in batches:
            x = images.to(self.device, non_blocking=True).float()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, torch.as_tensor(targets).to(self.device, non_blocking=True)


class _GlobalBatches:
    """Index batches: seeded full global batches (this rank's rows) for training, the
    dataset in order for evaluation."""

    def __init__(self, size: int, batch_size: int, seed: int, train: bool, rank: int, world_size: int) -> None:
        self.size, self.batch_size, self.seed, self.train = size, batch_size, seed, train
        self.rows = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        self.epoch = 0

    def __len__(self) -> int:
        return self.size // self.batch_size if self.train else -(-self.size // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        return self._batches(self.epoch)  # the epoch is fixed now, not at the first batch

    def _batches(self, epoch: int) -> Iterator[list[int]]:
        import torch

        from study.data.seeds import derive_seed

        if not self.train:
            for start in range(0, self.size, self.batch_size):
                yield list(range(start, min(start + self.batch_size, self.size)))
            return
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
        for step in range(len(self)):
            yield order[step * self.batch_size:(step + 1) * self.batch_size][self.rows].tolist()
