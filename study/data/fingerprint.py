"""What an on-disk data set *is*: a fingerprint of its files, for a run's identity.

``data.root`` is machine-local (the same data lives at other paths on other machines), so
it is left out of the config hash; the fingerprint stands for the contents instead, as
``data.id`` (see :func:`study.config.expand.plan`). Two folders with the same files give
the same fingerprint wherever they are; another folder of images gives another, so a
study over it trains instead of reusing runs made on the first.

- CIFAR (``cifar10``, ``cifar100``): the MD5 of each file the reader reads (the batches and
  the meta file). Before a download (``data.download=true``, files not there yet) the
  official files' MD5s, taken from torchvision, give the same fingerprint the files will.
- ImageFolder: every file under ``root`` (hidden ones aside), by relative path and content
  (SHA-256) while the tree holds at most :data:`CONTENT_LIMIT` bytes; above that, by
  relative path and size only, since reading an ImageNet-sized tree at every ``nfstudy
  run`` would take minutes: files replaced in place by others of exactly the same size
  then go unnoticed. Set ``data.id`` to name such a data set's version yourself.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Trees up to this many bytes are fingerprinted by content, larger ones by listing.
CONTENT_LIMIT = 256 * 2**20
_CHUNK = 2**20


def data_fingerprint(name: str, root: str | os.PathLike | None, *, download: bool = False) -> str | None:
    """The fingerprint of an on-disk data set (``cifar:…``, ``content:…`` or ``listing:…``).

    Args:
        name: ``cifar10``, ``cifar100`` or ``imagefolder``.
        root: the data set's directory.
        download: CIFAR only: files missing now will be the official ones.

    Returns:
        16 hex digits after the kind, or ``None`` when there is nothing to fingerprint (no
        ``root``, or a missing one): the run's data check says what is wrong.
    """
    if root is None:
        return None
    folder = Path(root).expanduser()
    if name in ("cifar10", "cifar100"):
        return _cifar(name, folder, download)
    if not folder.is_dir():
        return None
    files = _files(folder)
    by_content = sum(size for _, _, size in files) <= CONTENT_LIMIT
    digest = hashlib.sha256()
    for relative, path, size in files:
        digest.update(f"{relative}\0{_sha256(path) if by_content else size}\n".encode())
    return f"{'content' if by_content else 'listing'}:{digest.hexdigest()[:16]}"


def _files(folder: Path) -> list[tuple[str, Path, int]]:
    """``(relative posix path, path, size)`` of every regular file under ``folder`` (symlinks
    followed, hidden names skipped), sorted by relative path. One ``stat`` per file."""
    found, pending, seen = [], [folder], {folder.resolve()}
    while pending:
        with os.scandir(pending.pop()) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)  # the same walk on every machine
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    if (real := Path(entry.path).resolve()) not in seen:  # a symlink loop is walked once
                        seen.add(real)
                        pending.append(Path(entry.path))
                elif entry.is_file():
                    path = Path(entry.path)
                    found.append((path.relative_to(folder).as_posix(), path, entry.stat().st_size))
    return sorted(found, key=lambda item: item[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _cifar(name: str, folder: Path, download: bool) -> str | None:
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    official = [*dataset.train_list, *dataset.test_list, [dataset.meta["filename"], dataset.meta["md5"]]]
    base = folder / dataset.base_folder
    if all((base / file_name).is_file() for file_name, _ in official):
        sums = [(file_name, _md5(base / file_name)) for file_name, _ in official]
    elif download:  # the reader downloads the official files
        sums = [(file_name, md5) for file_name, md5 in official]
    else:
        return None
    text = "".join(f"{file_name} {md5}\n" for file_name, md5 in sorted(sums))
    return f"cifar:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
