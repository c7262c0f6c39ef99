"""What an on-disk data set must look like: checked before a study writes anything.

:func:`check_layout` is quick on a full ImageNet tree: it lists the class folders and looks
for one image in each, it does not read or count the images. The builders
(:mod:`study.data.imagefolder`, :mod:`study.data.cifar`) rely on the same rules, so a tree
that passes here loads there.

ImageFolder layouts:

- ``root/train/<class>/…`` and ``root/val/<class>/…`` with the same class folders (ImageNet's
  layout): chosen whenever ``root/train`` holds folders;
- ``root/<class>/…`` (torchvision's ``ImageFolder``): any other directory of class folders.

A class folder needs at least one image (``.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp``,
any case, in subfolders too); other files are ignored, as ``torchvision.datasets.ImageFolder``
does.
"""

from __future__ import annotations

import os
from pathlib import Path

from study.errors import DataError

ON_DISK = ("cifar10", "cifar100", "imagefolder")
SPLIT, FLAT = "split", "flat"
_HINT = "ImageFolder wants root/train/<class>/ and root/val/<class>/, or root/<class>/ image folders"


def check_layout(name: str, root: str | Path | None, download: bool = False) -> None:
    """Whether ``root`` holds data set ``name`` in a layout its loader reads.

    Args:
        name: ``data.name``; data sets not read from disk pass.
        root: ``data.root``.
        download: ``data.download``; missing CIFAR files are then fetched at training time.

    Raises:
        DataError: one line naming the key, the path and what is wrong.

    Example:
        >>> check_layout("imagefolder", "~/imagenet")
    """
    if name not in ON_DISK:
        return
    if root is None:
        raise DataError(f"data.root is not set for data.name={name}: set data.root to its directory"
                        + ("" if name == "imagefolder" else " (or data.download=true to fetch it)"))
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise DataError(f"data.root '{root}' is a file, not a directory (data.name={name}): "
                        "set data.root to the data set's directory")
    if name != "imagefolder" and download:
        return
    if not path.is_dir():
        raise DataError(f"data.root '{root}' does not exist (data.name={name}"
                        + ("" if name == "imagefolder" else ", data.download=false")
                        + "): set data.root to an existing directory"
                        + ("" if name == "imagefolder" else " or data.download=true"))
    if name == "imagefolder":
        imagefolder_layout(path)
    else:
        from study.data.cifar import check_files

        check_files(name, path)


def imagefolder_layout(root: Path) -> str:
    """:data:`SPLIT` or :data:`FLAT` for an image-folder tree (module docstring).

    Raises:
        DataError: no class folders, a class folder without images, a ``train/`` without a
            ``val/``, or ``train/`` and ``val/`` with different classes.
    """
    train, val = root / "train", root / "val"
    if train.is_dir() and _class_folders(train):
        if not val.is_dir() or not _class_folders(val):
            raise DataError(f"{root}/train has class folders but {root}/val does not: {_HINT}")
        train_classes, val_classes = _checked_classes(train), _checked_classes(val)
        if train_classes != val_classes:
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            raise DataError(f"{root}/train and {root}/val have different classes "
                            f"(only in train: {only_train[:5]}, only in val: {only_val[:5]})")
        return SPLIT
    _checked_classes(root)
    return FLAT


def _class_folders(path: Path) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def _checked_classes(path: Path) -> list[str]:
    classes = _class_folders(path)
    if not classes:
        raise DataError(f"{path} has no class folders: {_HINT}")
    from torchvision.datasets.folder import IMG_EXTENSIONS  # imported here: preflight stays quick

    empty = [name for name in classes if not _has_image(path / name, IMG_EXTENSIONS)]
    if empty:
        raise DataError(f"{path}: class folder(s) {', '.join(empty[:5])} hold no image "
                        f"({', '.join(IMG_EXTENSIONS)})")
    return classes


def _has_image(folder: Path, extensions: tuple[str, ...]) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(file.lower().endswith(extensions) for file in files):
            return True
    return False
