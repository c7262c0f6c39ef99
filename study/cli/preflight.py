"""Checks made before anything is written: data directories, tracking store, queue storage.

``nfstudy run`` calls them after validating the study and before it opens MLflow, so a
missing data set or a dead server is one line and exit 2, with no database, experiment or
run created. Servers are probed with a short timeout (:data:`PROBE_TIMEOUT_S`): an
unreachable URL answers in seconds, never hangs. Messages show URLs redacted.
"""

from __future__ import annotations

from collections.abc import Iterable

from study.config.run_config import RunConfig
from study.data.layout import check_layout
from study.record.stores import check_storage, check_tracking


def check_data(configs: Iterable[RunConfig]) -> None:
    """Every on-disk data set is where ``data.root`` says, in a layout its loader reads
    (:func:`study.data.layout.check_layout`: ImageFolder's class folders, CIFAR's batch
    files; a plain file is refused), unless ``data.download`` fetches it.

    Raises:
        DataError: naming the key, the path and what to do.
    """
    seen = set()
    for config in configs:
        data = config.data
        key = (data.name, data.root, data.download)
        if key not in seen:
            seen.add(key)
            check_layout(data.name, data.root, data.download)


__all__ = ["check_data", "check_storage", "check_tracking"]
