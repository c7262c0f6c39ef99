"""Shared fixtures: every test gets its own $NFSTUDY_HOME (a temp dir), so MLflow and
Optuna stores are real SQLite files that vanish with the test."""

from __future__ import annotations

import pytest
import torch

# One thread: tests start worker subprocesses beside the test process on 2-core CI
# machines, where two threads each oversubscribe the cores (measured: up to 7x slower).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip on a machine without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (scripts/gpu_check.sh runs these)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def nfstudy_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("NFSTUDY_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NFSTUDY_STORAGE", raising=False)
    monkeypatch.delenv("NFSTUDY_EXPERIMENTS", raising=False)
    _forget_plugins(monkeypatch)
    return home


def _forget_plugins(monkeypatch) -> None:
    """Each test starts without the plugins an earlier one imported: none exported to the
    processes it starts, none in its code fingerprint."""
    from study import plugins

    monkeypatch.delenv(plugins.PLUGINS_ENV, raising=False)
    monkeypatch.delenv(plugins.PATH_ENV, raising=False)
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setitem(plugins._state, "entry_points", False)


@pytest.fixture
def study_file(tmp_path):
    """Write a study YAML into tmp_path and return its path: ``study_file(text, name=...)``."""

    def write(text: str, name: str = "study.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
