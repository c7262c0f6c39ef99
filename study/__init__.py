"""nfstudy: declarative ablation studies on PyTorch, tracked in MLflow and searched with
Optuna; its first use reproduces the ablations of Brock et al., *High-Performance Large-Scale
Image Recognition Without Normalization* (ICML 2021, arXiv 2102.06171).

The public API, imported on first use (``import study`` alone loads neither torch nor MLflow)::

    from study import expand, load_study, run_study, train

    configs = expand(load_study("quickstart"), preset="smoke")
    metrics = train(configs[0])                       # one run, in this process
    frame = run_study("quickstart", preset="smoke")   # `nfstudy run`, returning the results
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name → the module that defines it.
_PUBLIC = {
    "RunConfig": "study.config.run_config",
    "make_config": "study.config.run_config",
    "StudySpec": "study.config.study_file",
    "load_study": "study.config.study_file",
    "list_studies": "study.config.study_file",
    "expand": "study.config.expand",
    "plan": "study.config.expand",
    "train": "study.train.trainer",
    "run_study": "study.cli.notebook",
    "build_model": "study.models",
    "list_models": "study.models",
    "register_model": "study.models",
    "register_dataset": "study.data",
    "adaptive_grad_clip_": "study.optim.agc",
    "NfstudyError": "study.errors",
    "ConfigError": "study.errors",
}

__all__ = [
    "ConfigError", "NfstudyError", "RunConfig", "StudySpec", "adaptive_grad_clip_", "build_model", "expand",
    "list_models", "list_studies", "load_study", "make_config", "plan", "register_dataset", "register_model",
    "run_study", "train",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from study.cli.notebook import run_study
    from study.config.expand import expand, plan
    from study.config.run_config import RunConfig, make_config
    from study.config.study_file import StudySpec, list_studies, load_study
    from study.data import register_dataset
    from study.errors import ConfigError, NfstudyError
    from study.models import build_model, list_models, register_model
    from study.optim.agc import adaptive_grad_clip_
    from study.train.trainer import train


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'study' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
