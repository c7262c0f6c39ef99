"""Where nfstudy keeps things: one home directory, ``$NFSTUDY_HOME`` (default ``./.nfstudy``).

``mlflow.db`` (tracking), ``artifacts/`` (MLflow artifacts), ``optuna.db`` (queue and
searches), ``reports/NAME/``, ``checkpoints/HASH/``. ``MLFLOW_TRACKING_URI`` or
``--tracking-uri`` point tracking at a server instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def home() -> Path:
    """The nfstudy home directory (absolute; not created here)."""
    return Path(os.environ.get("NFSTUDY_HOME", ".nfstudy")).expanduser().resolve()


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow tracking URI: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else an absolute
    ``sqlite:///`` URI under :func:`home` (absolute, so workers in other directories agree)."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{home() / 'mlflow.db'}"


def artifact_root() -> str:
    """Artifact location for experiments created on the local SQLite store."""
    return (home() / "artifacts").as_uri()


def optuna_storage(explicit: str | None = None) -> str:
    """The searches' Optuna storage URL: ``explicit`` (``--search-storage``), else
    ``$NFSTUDY_SEARCH_STORAGE``, else ``$NFSTUDY_STORAGE`` (the queue's, which can hold
    searches too), else SQLite under home."""
    for url in (explicit, os.environ.get("NFSTUDY_SEARCH_STORAGE"), os.environ.get("NFSTUDY_STORAGE")):
        if url:
            return url
    return f"sqlite:///{home() / 'optuna.db'}"


def safe_name(name: str) -> str:
    """A file-name-safe form of a study or run name (no separators, no '..')."""
    cleaned = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("._") or "unnamed"
    return cleaned[:120]


def confined(*parts: str) -> Path:
    """A path under :func:`home` built from sanitised parts; never escapes home."""
    path = home().joinpath(*(safe_name(p) for p in parts))
    assert path.resolve().is_relative_to(home())
    return path


def scale_name(preset: str | None = None, overrides: list[str] | None = None) -> str:
    """The name of one scale of a study's runs (``--preset``/``--set``), for its report folder:
    ``""`` for the study's own base preset, else e.g. ``preset-smoke_data.image_size=8``."""
    parts = ([f"preset-{preset}"] if preset else []) + list(overrides or [])
    return safe_name("_".join(parts)) if parts else ""


def reports_dir(study: str, scale: str = "") -> Path:
    """``reports/STUDY/``, or ``reports/STUDY/SCALE/`` for the runs of another scale (so one
    scale's report never overwrites another's)."""
    return confined("reports", study, scale) if scale else confined("reports", study)


def checkpoint_dir(config_hash: str) -> Path:
    return confined("checkpoints", config_hash)
