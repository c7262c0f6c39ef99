"""Checks made before anything is written: data directories, tracking store, queue storage.

``nfstudy run`` calls them after validating the study and before it opens MLflow, so a
missing data set or a dead server is one line and exit 2, with no database, experiment or
run created. Servers are probed with a short timeout (:data:`PROBE_TIMEOUT_S`): an
unreachable URL answers in seconds, never hangs. Messages show URLs redacted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from study.config.run_config import RunConfig
from study.errors import DataError
from study.record.stores import check_storage, check_tracking

#: Data sets read from ``data.root`` (digits is embedded, fake is generated).
_ON_DISK = ("cifar10", "cifar100", "imagefolder")


def check_data(configs: Iterable[RunConfig]) -> None:
    """Every on-disk data set's ``data.root`` exists (unless ``data.download`` is true).

    Raises:
        DataError: naming the key, the missing directory and what to do.
    """
    seen = set()
    for config in configs:
        data = config.data
        key = (data.name, data.root, data.download)
        if data.name not in _ON_DISK or data.download or key in seen:
            continue
        seen.add(key)
        if data.root is None:
            raise DataError(f"data.root is not set for data.name={data.name}: set data.root to its "
                            "directory (or data.download=true to fetch it)")
        if not Path(data.root).expanduser().is_dir():
            raise DataError(f"data.root '{data.root}' does not exist (data.name={data.name}, "
                            "data.download=false): set data.root to an existing directory or data.download=true")

__all__ = ["check_data", "check_storage", "check_tracking"]
