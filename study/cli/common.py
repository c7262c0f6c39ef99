"""What the ``nfstudy`` commands share: the console, the options used by several commands
(one definition each), the plan of a study and the checks made before anything is written."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer
from rich.console import Console

from study.errors import ConfigError

# Plain text everywhere: names, paths and URLs hold '[' and ':' that rich would read as
# markup or emoji codes. Long lines (paths, URLs) stay whole, as print() leaves them.
console = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)

# -- options shared by several commands: one definition each --------------------------------
StudyArg = Annotated[str, typer.Argument(help="Study name or path to a study YAML file.")]
PresetOpt = Annotated[Optional[str], typer.Option(
    "--preset", metavar="NAME", help="Run the study at another scale: swap its base preset (smoke, digits, "
    "cifar10, imagenet); the preset's caps bound every run (smoke: 4 steps).")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config key for every run, e.g. --set agc.clipping=0.02 "
    "(repeatable); on a grid key it replaces the axis by that one value.")]
SweepOpt = Annotated[Optional[list[str]], typer.Option(
    "--sweep", metavar="KEY=V1,V2", help="A grid axis from the command line (Hydra's comma list), e.g. --sweep "
    "agc.clipping=0.01,0.02: replaces the study's axis of that key, or adds one; runs are named by it "
    "(repeatable).")]
SeedsOpt = Annotated[Optional[str], typer.Option(
    "--seeds", metavar="SEEDS", help="Replace the study's seeds, e.g. --seeds 0-4 or --seeds 0,1,2 (every arm "
    "gets the same seeds: arms stay paired).")]
AddSeedsOpt = Annotated[int, typer.Option(
    "--add-seeds", metavar="INTEGER", min=0, help="Add this many new seeds after the study's last (arms stay "
    "paired).")]
OnlyOpt = Annotated[Optional[list[str]], typer.Option(
    "--only", metavar="ARM|HASH|#", help="Only these runs: an arm, a config hash or a run's # in `nfstudy show` "
    "(repeatable).")]
ImportOpt = Annotated[Optional[list[str]], typer.Option(
    "--import", metavar="MODULE", help="Import this module first (a plugin that registers your models and data "
    "sets); every worker process imports it too (repeatable).")]
TrackingOpt = Annotated[Optional[str], typer.Option(
    "--tracking-uri", metavar="URI", help="MLflow tracking URI, e.g. http://HOST:5000 (default: "
    "$MLFLOW_TRACKING_URI, else $NFSTUDY_HOME/mlflow.db); spool: (worker, enqueue, launch slurm) records "
    "into $NFSTUDY_HOME/spool only, for nfstudy sync to upload.")]
QueueOpt = Annotated[Optional[str], typer.Option(
    "--storage", metavar="URL", help="The run queue's storage (Optuna): postgresql://USER@HOST:PORT/DB for many "
    "machines, a journal file path (one machine), or journal+nfs:///PATH for a journal on a shared filesystem (a "
    "cluster without a database server) (default: $NFSTUDY_STORAGE, else $NFSTUDY_HOME/queue.journal).")]
SearchStorageOpt = Annotated[Optional[str], typer.Option(
    "--search-storage", metavar="URL", help="The searches' storage (Optuna): postgresql://USER@HOST:PORT/DB for "
    "many machines (default: $NFSTUDY_SEARCH_STORAGE, else $NFSTUDY_STORAGE, else $NFSTUDY_HOME/optuna.db).")]
OldStorageOpt = Annotated[Optional[str], typer.Option("--storage", hidden=True)]


def plan_runs(name: str, preset: Optional[str], sets: Optional[list[str]], sweeps: Optional[list[str]] = None,
          seeds: Optional[str] = None, add_seeds: int = 0, imports: Optional[list[str]] = None):
    """The study and its runs as the command line describes them: plugins imported, then the
    study file, ``--sweep``/``--seeds``/``--add-seeds`` axes, ``--preset`` and ``--set``."""
    from study.config.expand import parse_overrides, parse_seeds, parse_sweeps, plan, with_axes
    from study.config.study_file import load_study
    from study.plugins import use_plugins

    use_plugins(imports or [], folder=os.getcwd() if imports else None)
    overrides, swept = parse_overrides(sets), parse_sweeps(sweeps)
    if both := sorted(set(overrides) & set(swept)):
        raise ConfigError(f"--set and --sweep both give {', '.join(both)}: keep one (--set KEY=V is --sweep KEY=V)")
    spec = with_axes(load_study(name), swept, parse_seeds(seeds), add_seeds)
    return spec, plan(spec, preset=preset, overrides=overrides)


def notes(spec, runs, preset: Optional[str], caps: Optional[list[str]] = None) -> None:
    """The study's warnings (stderr) and the caps a ``--preset`` applied (stdout)."""
    for line in spec.warnings:
        err_console.print(f"warning: {line}")
    for line in cap_notes(runs, preset) if caps is None else caps:
        console.print(line)


def cap_notes(runs, preset: Optional[str]) -> list[str]:
    """One line per key a ``--preset`` capped: the cap and what the study asks."""
    asked: dict[str, set] = {}
    for run in runs:
        for key, value in run.capped.items():
            asked.setdefault(key, set()).add(str(value))
    lines = []
    for key, values in asked.items():
        cap = next(run.config.flat()[key] for run in runs if key in run.capped)
        lines.append(f"note: --preset {preset} caps {key} at {cap} "
                     f"(the study asks {', '.join(sorted(values))}; --set {key}=N overrides)")
    return lines


def preflight_checks(runs, tracking_uri: Optional[str], storage: Optional[str], *, spool_ok: bool = False) -> None:
    """Data directories, tracking store and queue storage: checked before anything is
    written, by a real run and a dry run alike (``spool_ok``: ``--tracking-uri spool:`` allowed)."""
    from study import paths
    from study.cli import preflight
    from study.run.queue import storage_url

    preflight.check_data(r.config for r in runs)
    if any(r.config.train.system_metrics for r in runs):
        from study.record.system_metrics import check_system_metrics

        check_system_metrics()
    preflight.check_tracking(paths.tracking_uri(tracking_uri), spool_ok=spool_ok)
    preflight.check_storage(storage_url(storage))
