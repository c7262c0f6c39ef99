"""What the ``nfstudy`` commands share: the console, the options used by several commands
(one definition each), the plan of a study and the checks made before anything is written."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

# Plain text everywhere: names, paths and URLs hold '[' and ':' that rich would read as
# markup or emoji codes. Long lines (paths, URLs) stay whole, as print() leaves them.
console = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)

# -- options shared by several commands: one definition each --------------------------------
StudyArg = Annotated[str, typer.Argument(help="Study name or path to a study YAML file.")]
PresetOpt = Annotated[Optional[str], typer.Option(
    "--preset", help="Run the study at another scale: swap its base preset (smoke, digits, cifar10, imagenet); "
    "the preset's caps bound every run (smoke: 4 steps).")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override a config key for every run, e.g. --set agc.clipping=0.02 (repeatable); on a grid key "
    "it replaces the axis by that one value.")]
TrackingOpt = Annotated[Optional[str], typer.Option(
    "--tracking-uri", help="MLflow tracking URI, e.g. http://HOST:5000 (default: $MLFLOW_TRACKING_URI, else "
    "$NFSTUDY_HOME/mlflow.db).")]
QueueOpt = Annotated[Optional[str], typer.Option(
    "--storage", help="The run queue's storage (Optuna): postgresql://USER@HOST:PORT/DB for many machines, a "
    "journal file path (one machine), or journal+nfs:///PATH for a journal on a shared filesystem (a cluster "
    "without a database server) (default: $NFSTUDY_STORAGE, else $NFSTUDY_HOME/queue.journal).")]
SearchStorageOpt = Annotated[Optional[str], typer.Option(
    "--search-storage", help="The searches' storage (Optuna): postgresql://USER@HOST:PORT/DB for many machines "
    "(default: $NFSTUDY_SEARCH_STORAGE, else $NFSTUDY_STORAGE, else $NFSTUDY_HOME/optuna.db).")]
OldStorageOpt = Annotated[Optional[str], typer.Option("--storage", hidden=True)]


def plan_runs(name: str, preset: Optional[str], sets: Optional[list[str]]):
    from study.config.expand import parse_overrides, plan
    from study.config.study_file import load_study

    spec = load_study(name)
    return spec, plan(spec, preset=preset, overrides=parse_overrides(sets))


def notes(spec, runs, preset: Optional[str]) -> None:
    """The study's warnings (stderr) and the caps a ``--preset`` applied (stdout)."""
    for line in spec.warnings:
        err_console.print(f"warning: {line}")
    asked: dict[str, set] = {}
    for run in runs:
        for key, value in run.capped.items():
            asked.setdefault(key, set()).add(str(value))
    for key, values in asked.items():
        cap = next(run.config.flat()[key] for run in runs if key in run.capped)
        console.print(f"note: --preset {preset} caps {key} at {cap} "
                      f"(the study asks {', '.join(sorted(values))}; --set {key}=N overrides)")


def preflight_checks(runs, tracking_uri: Optional[str], storage: Optional[str]) -> None:
    """Data directories, tracking store and queue storage: checked before anything is
    written, by a real run and a dry run alike."""
    from study import paths
    from study.cli import preflight
    from study.run.queue import storage_url

    preflight.check_data(r.config for r in runs)
    preflight.check_tracking(paths.tracking_uri(tracking_uri))
    preflight.check_storage(storage_url(storage))
