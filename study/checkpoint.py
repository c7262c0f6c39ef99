"""Checkpoints for long runs (``train.checkpoint_every``): a crashed run resumes from its
last checkpoint. Files live under ``$NFSTUDY_HOME/checkpoints/<config hash>/`` and are
written atomically (temp file + rename) so a kill mid-write leaves the previous one."""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch

from study.paths import checkpoint_dir

_FILE = "last.pt"


def save_checkpoint(key: str, state: dict[str, Any]) -> None:
    folder = checkpoint_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, folder / _FILE)


def load_checkpoint(key: str) -> dict[str, Any] | None:
    """The last checkpoint saved under ``key``, or ``None``. Loaded with
    ``weights_only=True``: a checkpoint cannot run code."""
    path = checkpoint_dir(key) / _FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_checkpoint(key: str) -> None:
    shutil.rmtree(checkpoint_dir(key), ignore_errors=True)
