"""CIFAR-10 and CIFAR-100 from the official "python version" files, held on the device.

The on-disk format is the one torchvision's ``CIFAR10``/``CIFAR100`` read (and the one
https://www.cs.toronto.edu/~kriz/cifar.html documents): a folder ``cifar-10-batches-py/``
with pickled batches ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and ``batches.meta``,
or ``cifar-100-python/`` with ``train``, ``test`` and ``meta``. Each batch is a dict whose
``data`` is an ``(n, 3072)`` uint8 array (1024 red, then green, then blue values, rows top
to bottom) and whose ``labels`` (CIFAR-100: ``fine_labels``) list the classes. File names,
URLs and archive checksums are taken from torchvision's classes, so there is one source.

Why our own small reader instead of ``torchvision.datasets.CIFAR10``: torchvision checks the
md5 of every batch file each time a data set is constructed, so only the exact official
bytes load — nothing else in that format can be tested — and it converts to HWC which we
would convert back. Here the download (``download=True``) goes through torchvision, which
verifies the archive's md5; reading checks the structure instead (every file present, each
a dict with a ``(n, 3072)`` uint8 ``data`` and ``n`` labels in range), which catches
missing, truncated and foreign files. Unlike torchvision, the unpickler accepts numpy arrays
and plain containers only, so a malicious file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import download_and_extract_archive

from study.errors import DataError

_DATASETS = {"cifar10": CIFAR10, "cifar100": CIFAR100}
_LABELS_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}

# Per-channel mean and standard deviation of the training images, in 0..1 units (computed
# over all 50,000 training images and their pixels; the std is of pixels, not of image means).
_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def cifar_mean_std(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The standard per-channel mean and std of a CIFAR training set, in 0..1 units.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.

    Returns:
        ``(mean, std)``, each three floats (red, green, blue).

    Raises:
        DataError: ``name`` is not a CIFAR data set.
    """
    _check_name(name)
    return _MEAN_STD[name]


def load_cifar(
    name: str, root: str | Path | None, download: bool, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Load CIFAR-10 or CIFAR-100 into uint8 tensors on ``device``.

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: the directory that holds ``cifar-10-batches-py/`` (``cifar-100-python/``).
        download: fetch and unpack the official archive into ``root`` when files are missing
            (never otherwise).
        device: where the tensors live.

    Returns:
        ``(train_images, train_labels, test_images, test_labels, num_classes)``: images
        ``(N, 3, 32, 32)`` uint8, labels ``(N,)`` int64, in the files' order.

    Raises:
        DataError: unknown ``name``, no ``root``, a missing or unreadable file, or a failed
            download.

    Example:
        >>> train_x, train_y, test_x, test_y, num_classes = load_cifar("cifar10", "~/data", False, "cuda")
        >>> train_x.shape, num_classes
        (torch.Size([50000, 3, 32, 32]), 10)
    """
    _check_name(name)
    dataset = _DATASETS[name]
    if root is None:
        raise DataError(
            f"data.root is not set for {name}: set data.root to a directory (and data.download=true to fetch it)"
        )
    root = Path(root).expanduser()
    folder = root / dataset.base_folder
    train_files = [file for file, _ in dataset.train_list]
    test_files = [file for file, _ in dataset.test_list]
    meta_file = dataset.meta["filename"]

    if missing_files(name, root) and download:
        _download(dataset, root)
    check_files(name, root)

    class_names = _unpickle(folder / meta_file).get(dataset.meta["key"])
    if not isinstance(class_names, list) or not class_names:
        raise DataError(f"{folder / meta_file} has no '{dataset.meta['key']}' list: the file is not CIFAR metadata")
    num_classes = len(class_names)
    train_images, train_labels = _read_batches(folder, train_files, _LABELS_KEY[name], num_classes)
    test_images, test_labels = _read_batches(folder, test_files, _LABELS_KEY[name], num_classes)
    return (
        train_images.to(device),
        train_labels.to(device),
        test_images.to(device),
        test_labels.to(device),
        num_classes,
    )


def _check_name(name: str) -> None:
    if name not in _DATASETS:
        raise DataError(f"unknown CIFAR data set '{name}': allowed are {', '.join(_DATASETS)}")


def missing_files(name: str, root: str | Path) -> list[str]:
    """The files of CIFAR data set ``name`` that are not under ``root`` (empty when complete)."""
    _check_name(name)
    dataset = _DATASETS[name]
    folder = Path(root).expanduser() / dataset.base_folder
    files = [file for file, _ in dataset.train_list + dataset.test_list] + [dataset.meta["filename"]]
    return [file for file in files if not (folder / file).is_file()]


def check_files(name: str, root: str | Path) -> None:
    """Every batch file of CIFAR data set ``name`` is under ``root`` (not read: a quick check).

    Raises:
        DataError: naming the missing files and the folder they belong in.
    """
    if missing := missing_files(name, root):
        folder = Path(root).expanduser() / _DATASETS[name].base_folder
        raise DataError(
            f"{name} not found in {folder} (missing {', '.join(missing)}): set data.root to the directory "
            f"that holds {_DATASETS[name].base_folder}/ or set data.download=true"
        )


def _download(dataset: type[CIFAR10], root: Path) -> None:
    try:
        download_and_extract_archive(dataset.url, str(root), filename=dataset.filename, md5=dataset.tgz_md5)
    except Exception as err:  # network, disk and checksum failures all mean: no data set
        raise DataError(f"could not download {dataset.url} into {root}: {err}") from err


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, nothing else: a foreign
    pickle cannot run code (``pickle.load`` would call any global it names)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"),
                ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object"),
                ("_codecs", "encode")}  # how protocol-2 pickles store bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR file holds only arrays")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            # latin1: the official files are Python 2 pickles (as torchvision reads them).
            entry = _ArraysOnly(file, encoding="latin1").load()
    except Exception as err:  # any failure to unpickle means a truncated or foreign file
        raise DataError(
            f"{path} is not a readable CIFAR file ({type(err).__name__}: {err}); delete it and set data.download=true"
        ) from err
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR file: it holds a {type(entry).__name__}, not a dict")
    return entry


def _read_batches(
    folder: Path, files: list[str], labels_key: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    data, labels = [], []
    for file in files:
        entry = _unpickle(folder / file)
        rows, targets = entry.get("data"), entry.get(labels_key)
        is_rows = isinstance(rows, np.ndarray) and rows.dtype == np.uint8 and rows.ndim == 2
        if not (is_rows and rows.shape[1] == 3 * 32 * 32):
            raise DataError(f"{folder / file} has no (n, 3072) uint8 'data' array: the file is not a CIFAR batch")
        if targets is None or len(targets) != len(rows):
            raise DataError(
                f"{folder / file} has {len(rows)} images but its '{labels_key}' does not list as many labels"
            )
        data.append(rows)
        labels.append(np.asarray(targets, dtype=np.int64))
    images = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))
    targets = torch.from_numpy(np.concatenate(labels))
    if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
        raise DataError(f"labels in {folder} fall outside 0..{num_classes - 1}, the classes its metadata names")
    return images, targets
