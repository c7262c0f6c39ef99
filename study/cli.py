"""The ``nfstudy`` command line (also ``python -m study``).

Bad input of any kind prints one line naming the problem and exits 2; ``--debug``
(anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Optional

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from study.errors import NfstudyError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Declarative ablation studies on PyTorch (NFNets paper), tracked in MLflow.")
console = Console()
err_console = Console(stderr=True)

_SET_HELP = "Override a config key for every run, e.g. --set agc.clipping=0.02 (repeatable)."


def _plan(name: str, preset: Optional[str], sets: Optional[list[str]]):
    from study.registry import load_study, parse_overrides, plan

    spec = load_study(name)
    return spec, plan(spec, preset=preset, overrides=parse_overrides(sets))


@app.command("list")
def list_cmd() -> None:
    """Registered studies with their run counts."""
    from study.registry import list_studies, load_study, plan

    table = Table()
    for column in ("study", "runs", "paper"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=50)
    for name in list_studies():
        spec = load_study(name)
        table.add_row(name, str(len(plan(spec))), spec.paper or "", spec.description)
    console.print(table)


@app.command()
def show(
    name: str = typer.Argument(..., help="Study name or path to a study YAML file."),
    preset: Optional[str] = typer.Option(None, help="Swap the study's base preset."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=_SET_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $NFSTUDY_HOME/mlflow.db)."),
) -> None:
    """The expanded runs of a study (arm, grid values, seed, hash) and which are done."""
    from study.tracking import Tracking

    spec, runs = _plan(name, preset, set_)
    done = _finished(spec.name, tracking_uri)
    table = Table("#", "arm", *spec.grid, "seed", "hash", "done", title=f"{spec.name}: {len(runs)} runs")
    for i, run in enumerate(runs):
        table.add_row(str(i), run.arm or "-", *(str(v) for v in run.point.values()), str(run.seed),
                      run.config_hash, "yes" if run.config_hash in done else "")
    console.print(table)
    console.print(f"{sum(r.config_hash in done for r in runs)} done, "
                  f"{sum(r.config_hash not in done for r in runs)} to run")


def _finished(study: str, tracking_uri: Optional[str]) -> set[str]:
    """Finished hashes, without creating anything when the store or study does not exist."""
    from study import paths
    from study.tracking import Tracking

    uri = paths.tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not paths.Path(uri.removeprefix("sqlite:///")).exists():
        return set()
    tracking = Tracking(uri)
    experiment = tracking.client.get_experiment_by_name(study)
    return set(tracking.finished_hashes(experiment.experiment_id)) if experiment else set()


@app.command()
def run(
    name: str = typer.Argument(..., help="Study name or path to a study YAML file."),
    preset: Optional[str] = typer.Option(None, help="Swap the study's base preset (smoke, digits, cifar10, imagenet)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=_SET_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the runs; train nothing."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $NFSTUDY_HOME/mlflow.db)."),
) -> None:
    """Run what is not finished yet of a study; finished configs are never trained again."""
    from study.execution import execute, pending_runs
    from study.tracking import Tracking

    spec, runs = _plan(name, preset, set_)
    if dry_run:
        done = _finished(spec.name, tracking_uri)
        todo = [r for r in runs if r.config_hash not in done]
        console.print(f"{spec.name}: {len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to run (dry run)")
        for r in todo:
            console.print(f"  {r.config_hash}  {r.name}")
        return
    tracking = Tracking(tracking_uri)
    experiment_id, parent_id = tracking.ensure_study(spec.name, spec.description)
    todo = pending_runs(tracking, experiment_id, runs)
    copied = tracking.adopt_finished(experiment_id, parent_id, spec.name,
                                     {r.config_hash: (r.arm, r.name) for r in todo})
    if copied:
        todo = pending_runs(tracking, experiment_id, runs)
    console.print(f"{spec.name}: {len(runs) - len(todo)} done, {len(todo)} to run"
                  + (f" ({copied} copied from other studies)" if copied else ""))
    if not todo:
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        overall = progress.add_task("runs", total=len(runs), completed=len(runs) - len(todo))
        epochs = progress.add_task("epochs", total=None)

        def on_run_start(r):
            progress.reset(epochs, total=None, description=f"  {r.name}")

        def on_epoch(epoch, metrics):
            progress.update(epochs, completed=epoch + 1,
                            description=f"  {progress.tasks[epochs].description.split(' |')[0]} | val/top1 {metrics['val/top1']:.3f}")

        def on_run_end(r, result):
            progress.advance(overall)
            outcome = "FAILED" if result is None else f"{result['outcome']} val/top1 {result['val/top1']:.3f}"
            progress.console.print(f"  {r.name} [{r.config_hash}]: {outcome}", markup=False)

        summary = execute(spec, runs, tracking, on_run_start, on_epoch, on_run_end)
    console.print(f"{spec.name}: {summary.completed} completed, {summary.diverged} diverged, "
                  f"{len(summary.failed)} failed, {summary.done_before} were already done")
    for line in summary.failed:
        err_console.print(f"failed: {line}")
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def report(
    name: Optional[str] = typer.Argument(None, help="Study name or path to a study YAML file."),
    all_: bool = typer.Option(False, "--all", help="Report every registered study and write an index page."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $NFSTUDY_HOME/mlflow.db)."),
) -> None:
    """Figures (PNG + SVG), report.md and report.html under $NFSTUDY_HOME/reports/NAME/."""
    from analysis.report import build_index, build_report
    from study import paths
    from study.registry import list_studies, load_study

    if not all_ and name is None:
        raise NfstudyError("report: give a study name, or --all")
    names = list_studies() if all_ else [name]
    uri = paths.tracking_uri(tracking_uri)
    for study_name in names:
        spec = load_study(study_name)
        out = paths.reports_dir(spec.name)
        written = build_report(spec, uri, out, command=f"nfstudy report {spec.name}")
        console.print(f"{spec.name}: {written.get('html', out)}")
    if all_:
        console.print(f"index: {build_index(paths.home() / 'reports', [load_study(n) for n in names])}")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: runs the app, turning bad input into one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="nfstudy", standalone_mode=False)
    except NfstudyError as err:
        if debug:
            raise
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except click.exceptions.Exit as err:
        return err.exit_code
    except click.exceptions.Abort:
        err_console.print("interrupted", markup=False)
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130
    except click.exceptions.ClickException as err:
        if debug:
            raise
        err_console.print(f"error: {err.format_message()}", markup=False, highlight=False, soft_wrap=True)
        return 2
    return 0


def entry() -> None:
    sys.exit(main())
