"""The ``nfstudy`` command line (also ``python -m study``).

Bad input of any kind prints one line naming the problem and exits 2; ``--debug``
(anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Column, Table
from typer.exceptions import TyperException

from study.errors import NfstudyError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Declarative ablation studies on PyTorch (NFNets paper), tracked in MLflow.")
console = Console(soft_wrap=True)  # long lines (paths, URLs) stay whole, as print() leaves them
err_console = Console(stderr=True, soft_wrap=True)

_SET_HELP = "Override a config key for every run, e.g. --set agc.clipping=0.02 (repeatable)."
_STORAGE_HELP = ("Queue storage (Optuna): postgresql://USER@HOST:PORT/DB for many machines, or a journal file "
                 "path (default: $NFSTUDY_STORAGE, else $NFSTUDY_HOME/queue.journal).")


def _plan(name: str, preset: Optional[str], sets: Optional[list[str]]):
    from study.config.expand import parse_overrides, plan
    from study.config.study_file import load_study

    spec = load_study(name)
    return spec, plan(spec, preset=preset, overrides=parse_overrides(sets))


@app.command("list")
def list_cmd() -> None:
    """Registered studies with their run counts."""
    from study.config.expand import plan
    from study.config.study_file import list_studies, load_study

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
    from study.record.tracking import Tracking

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
    workers: int = typer.Option(1, "--workers", min=1, help="Local worker processes: one GPU each when there "
                                "are GPUs, else an equal share of the CPU cores; 1 trains in this process."),
    storage: Optional[str] = typer.Option(None, help=_STORAGE_HELP),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, help="Processes (GPUs) per run: each run "
                                       "becomes one torchrun DDP job; AGC clips the all-reduced gradient."),
) -> None:
    """Run what is not finished yet of a study; finished configs are never trained again.

    The configs go into the study's queue (Optuna storage); local workers and any
    `nfstudy worker` on other machines train them. Ctrl-C stops cleanly (exit 130)."""
    from study.cli.progress import RunProgress
    from study.record.tracking import Tracking
    from study.run.coordinator import execute

    spec, runs = _plan(name, preset, set_)
    if dry_run:
        done = _finished(spec.name, tracking_uri)
        todo = [r for r in runs if r.config_hash not in done]
        console.print(f"{spec.name}: {len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to run (dry run)")
        for r in todo:
            console.print(f"  {r.config_hash}  {r.name}")
        return
    _preflight(runs, tracking_uri, storage)
    tracking = Tracking(tracking_uri)
    _sync_spool(tracking)
    with RunProgress(console, spec.name, len(runs), workers) as progress:
        summary = execute(spec, runs, tracking, workers=workers, storage=storage, on_prepared=progress.on_prepared,
                          on_progress=progress.on_progress, on_event=progress.on_event, on_epoch=progress.on_epoch,
                          nproc_per_node=nproc_per_node)
    console.print(f"{spec.name}: {summary.completed} completed, {summary.diverged} diverged, "
                  + (f"{len(summary.failed)} not finished (interrupted; the next run resumes)" if summary.interrupted
                     else f"{len(summary.failed)} failed") + f", {summary.done_before} were already done")
    if summary.interrupted:
        raise KeyboardInterrupt
    for line in summary.failed:
        err_console.print(f"failed: {line}", markup=False)
    if summary.failed:
        raise typer.Exit(1)


def _preflight(runs, tracking_uri: Optional[str], storage: Optional[str]) -> None:
    """Data directories, tracking store and queue storage: checked before anything is written."""
    from study import paths
    from study.cli import preflight
    from study.run.queue import storage_url

    preflight.check_data(r.config for r in runs)
    preflight.check_tracking(paths.tracking_uri(tracking_uri))
    preflight.check_storage(storage_url(storage))


def _sync_spool(tracking) -> None:
    """Upload runs spooled while the tracking server was unreachable (see `nfstudy sync`)."""
    from study.record import spool

    if spool.pending():
        summary = spool.sync(tracking, on_run=lambda line: console.print(f"sync: {line}", markup=False))
        console.print(f"sync: {summary.uploaded} spooled runs uploaded, {summary.duplicates} duplicates dropped",
                      markup=False)


@app.command()
def sync(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $NFSTUDY_HOME/mlflow.db)."),
) -> None:
    """Upload the runs spooled under $NFSTUDY_HOME/spool while the tracking server was
    unreachable. Idempotent: a config already FINISHED is not recorded twice."""
    from study import paths
    from study.cli import preflight
    from study.record import spool
    from study.record.tracking import Tracking

    if not spool.pending():
        console.print("sync: nothing spooled", markup=False)
        return
    preflight.check_tracking(paths.tracking_uri(tracking_uri))
    _sync_spool(Tracking(tracking_uri))


@app.command()
def ui(
    port: int = typer.Option(5000, help="Port of the MLflow UI."),
    host: Optional[str] = typer.Option(None, help="Interface to bind (default 127.0.0.1). Anything else "
                                       "opens the UI, which has no login, to the network."),
    optuna: bool = typer.Option(False, "--optuna", help="Also start optuna-dashboard on the Optuna storage."),
    optuna_port: Optional[int] = typer.Option(None, help="Port of optuna-dashboard (default: --port + 1)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $NFSTUDY_HOME/mlflow.db)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage of searches (default: $NFSTUDY_HOME/optuna.db)."),
) -> None:
    """MLflow UI on the same tracking database and artifacts as `run` (127.0.0.1); Ctrl-C stops."""
    from study import paths
    from study.cli.ui import LOOPBACK, serve

    if host is not None and host not in LOOPBACK:
        err_console.print(f"warning: --host {host} makes the UI reachable from the network; "
                          "MLflow has no login: anyone who reaches it can read and delete runs",
                          markup=False, highlight=False, soft_wrap=True)
    code = serve(paths.tracking_uri(tracking_uri), host or "127.0.0.1", port,
                 paths.optuna_storage(storage) if optuna else None, optuna_port or port + 1,
                 lambda line: console.print(line, markup=False, highlight=False))
    if code:
        raise typer.Exit(code)


@app.command()
def worker(
    study: str = typer.Option(..., "--study", help="The study whose queue to join (its name; no study file needed)."),
    storage: Optional[str] = typer.Option(None, help=_STORAGE_HELP),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI, e.g. http://HOST:5000 "
                                               "(default: $NFSTUDY_HOME/mlflow.db)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on this machine: one GPU each when "
                                "there are GPUs, else an equal share of the CPU cores; 1 trains in this process."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, help="Processes (GPUs) per run (torchrun DDP)."),
    parent_pid: Optional[int] = typer.Option(None, hidden=True, help="Stop when this process (a local coordinator) dies."),
    plan: Optional[str] = typer.Option(None, hidden=True, help="Train only this plan's configs (a local coordinator's)."),
) -> None:
    """Join a study's queue (e.g. from another machine) and train until the queue is empty.

    Start `nfstudy run NAME --storage URL --tracking-uri URI` somewhere first: it fills the
    queue. Exits 0 when nothing is left; Ctrl-C or SIGTERM closes the current run KILLED,
    puts its config back in the queue and exits 130."""
    import socket

    from study import paths
    from study.cli import preflight
    from study.record.tracking import Tracking
    from study.run.coordinator import run_local_workers
    from study.run.queue import RunQueue, storage_url
    from study.run.worker import run_worker

    # A wrong URL is one line and exit 2 within seconds; an outage later is ridden out.
    preflight.check_storage(storage_url(storage))
    preflight.check_tracking(paths.tracking_uri(tracking_uri))
    queue = RunQueue(study, storage)
    tracking = Tracking(tracking_uri)
    me = f"worker {socket.gethostname()}:{os.getpid()}"
    if workers > 1:
        console.print(f"{me}: {workers} worker processes (logs: $NFSTUDY_HOME/logs/{study}/)", markup=False,
                      highlight=False)
        if run_local_workers(queue, tracking, workers, nproc_per_node):
            raise KeyboardInterrupt
        console.print(f"{me}: queue empty", markup=False, highlight=False)
        return

    def on_event(event, job, result):
        detail = ""
        if event == "finished":
            detail = f" {result['outcome']} val/top1 {result['val/top1']:.3f}"
        console.print(f"{me}: {event} {job.run_name} [{job.config_hash}]{detail}", markup=False, highlight=False)

    summary = run_worker(queue, tracking, hashes=queue.plan_hashes(plan) if plan else None, parent_pid=parent_pid,
                         on_event=on_event, nproc_per_node=nproc_per_node)
    queue_ms, check_ms = summary.overhead_ms()
    console.print(f"{me}: {'interrupted' if summary.interrupted else 'queue empty'}; {summary.completed} completed, "
                  f"{summary.diverged} diverged, {len(summary.failed)} failed, {summary.skipped} skipped (done "
                  f"elsewhere), {summary.recovered} lost runs recovered; per run: queue {queue_ms:.1f} ms, "
                  f"MLflow checks {check_ms:.1f} ms", markup=False, highlight=False)
    if summary.interrupted:
        raise KeyboardInterrupt


@app.command()
def search(
    name: str = typer.Argument(..., help="Study name or path to a study YAML file with a 'search:' section."),
    trials: int = typer.Option(20, "--trials", min=1, help="Trials to add to the search."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: $NFSTUDY_STORAGE, else "
                                          "$NFSTUDY_HOME/optuna.db; postgresql://… for many machines)."),
    preset: Optional[str] = typer.Option(None, help="Swap the study's base preset (smoke, digits, cifar10, imagenet)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=_SET_HELP + " A searched key set here is pinned."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $NFSTUDY_HOME/mlflow.db)."),
) -> None:
    """Optuna search over the study's 'search:' space; running it again adds trials to the same study."""
    import statistics

    import optuna

    from study.config.expand import parse_overrides
    from study.config.study_file import load_study
    from study.record.tracking import Tracking
    from study.run.search import open_storage, plan_search, run_search

    plan = plan_search(load_study(name), preset=preset, overrides=parse_overrides(set_))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from study import paths
    from study.cli import preflight

    preflight.check_storage(paths.optuna_storage(storage))
    open_storage(storage)  # a bad --storage fails here, before any MLflow run is created
    pinned = [k for k in plan.search.space if k not in plan.space]
    console.print(f"{plan.spec.name}: searching {', '.join(plan.space)} on {plan.metric} ({plan.direction})"
                  + (f"; pinned by --set: {', '.join(pinned)}" if pinned else ""), markup=False, emoji=False)

    def on_trial(record) -> None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.params.items())
        value = "" if record.value is None else f" {plan.metric} {record.value:.3f}"
        console.print(f"  trial {record.number}: {params} → {record.outcome}{value} "
                      f"({record.wall_s:.1f} s, overhead {record.overhead_ms:.0f} ms)", markup=False, emoji=False)

    result = run_search(plan, trials, storage=storage, tracking=Tracking(tracking_uri), on_trial=on_trial)
    console.print(f"Optuna study {result.study_name} in {result.storage}: {result.existed} trials existed"
                  + (f" ({result.recovered} left RUNNING by a dead search process, now FAIL)" if result.recovered else "")
                  + f", {len(result.trials)} added", markup=False, emoji=False)
    if result.trials:
        ms = lambda values: statistics.median(values) * 1000  # noqa: E731
        console.print(f"overhead per trial (median): {statistics.median(r.overhead_ms for r in result.trials):.0f} ms "
                      f"= storage {ms([r.storage_s for r in result.trials]):.0f} ms + tracking "
                      f"{ms([r.tracking_s for r in result.trials]):.0f} ms + sampling/config; "
                      f"training {ms([r.train_s for r in result.trials]):.0f} ms")
    if result.best_value is not None:
        console.print(f"best: {plan.metric} {result.best_value:.4f} at {result.best_params} "
                      f"(MLflow experiment '{plan.experiment}', parent run {result.parent_run_id})", markup=False,
                      emoji=False)


@app.command()
def report(
    name: Optional[str] = typer.Argument(None, help="Study name or path to a study YAML file."),
    all_: bool = typer.Option(False, "--all", help="Report every registered study and write an index page."),
    preset: Optional[str] = typer.Option(None, help="Report the runs of this preset (default: the study's base)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Report the runs made with these overrides."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default: $NFSTUDY_HOME/mlflow.db)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL of searches (default: $NFSTUDY_HOME/optuna.db)."),
) -> None:
    """Figures (PNG + SVG), report.md and report.html under $NFSTUDY_HOME/reports/NAME/
    (NAME/SCALE/ for the runs of --preset/--set, e.g. reports/clip-threshold/preset-smoke/)."""
    from analysis.report import build_index, build_report
    from study import paths
    from study.config.study_file import list_studies, load_study

    if not all_ and name is None:
        raise NfstudyError("report: give a study name, or --all")
    names = list_studies() if all_ else [name]
    uri = paths.tracking_uri(tracking_uri)
    scale, folders = paths.scale_name(preset, set_), {}
    for study_name in names:
        spec = load_study(study_name)
        # A search's report covers all its Optuna studies, whatever --preset/--set say.
        out = paths.reports_dir(spec.name, "" if spec.search is not None else scale)
        folders[spec.name] = out
        if spec.search is not None:  # a search study: Optuna trials, not a grid
            from analysis.search_report import build_search_report

            written = build_search_report(spec, paths.optuna_storage(storage), uri, out,
                                          command=f"nfstudy report {spec.name}")
        else:
            _, runs = _plan(study_name, preset, set_)
            spp = _signal_propagation(spec) if spec.paper == "table6" else None
            command = " ".join(["nfstudy report", spec.name, *([f"--preset {preset}"] if preset else []),
                                *(f"--set {item}" for item in set_ or [])])
            written = build_report(spec, uri, out, command=command, spp=spp,
                                   config_hashes={r.config_hash for r in runs},
                                   artifact_path="report" + (f"/{scale}" if scale else ""))
        console.print(f"{spec.name}: {written.get('html', out)}")
    if all_:
        index = build_index(paths.home() / "reports", names, folders, "index" + (f"-{scale}" if scale else ""))
        console.print(f"index: {index}")


def _signal_propagation(spec):
    """[I]'s signal-propagation statistics at initialisation for the study's models (and the
    ImageNet-scale NF/BN ResNet-50 twins), on white noise; SkipInit off so the α-scaled
    growth shows. ``analysis`` never builds models, so the frame is made here."""
    import pandas as pd
    import torch

    from study.config.expand import plan
    from study.models import build_model, signal_propagation

    configs = [run.config for run in plan(spec)]
    size = configs[0].data.image_size or 16
    cases = {(c.model.resolved_name, 1, size) for c in configs}
    cases |= {("nf_resnet50", 3, 64), ("bn_resnet50", 3, 64)}
    frames = []
    for name, chans, px in sorted(cases):
        torch.manual_seed(0)
        extra = {} if name.startswith("bn_") else {"skipinit": False}
        model = build_model(name, num_classes=10, in_chans=chans, **extra)
        frame = signal_propagation(model, torch.randn(64, chans, px, px))
        frames.append(frame.assign(model=name))
    return pd.concat(frames, ignore_index=True)


@app.command()
def bench(
    json_: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    device: str = typer.Option("cpu", help="cpu or cuda: where every figure is measured."),
    model: str = typer.Option("nf_resnet_small", help="Model of the training figures (CUDA: NFNet-F0 unless set)."),
    quick: bool = typer.Option(False, "--quick", help="Seconds-long smoke mode (tests); numbers not meaningful."),
    threads: Optional[int] = typer.Option(None, help="torch.set_num_threads for the bench (default: 1 on cpu, torch's on cuda)."),
    compile_: bool = typer.Option(False, "--compile", help="Also measure train.compile (a minute of compilation on a CPU)."),
    cifar_root: Optional[str] = typer.Option(None, help="Local CIFAR-10 copy for the time-to-94% figure (cuda; default: the cifar10 preset's data.root)."),
) -> None:
    """What the framework costs: each figure a ratio against a baseline measured in this run."""
    import json

    from study.bench import run_bench

    def log(line: str) -> None:  # progress on stderr, so --json keeps stdout one object
        err_console.print(line if line.startswith(" ") else f"measuring {line}", markup=False, highlight=False)

    out = run_bench(device, model, quick, log, threads, compile_, cifar_root)
    if json_:
        print(json.dumps(out))
        return
    host = out["host"]
    table = Table(*(Column(h, no_wrap=True, justify="left" if h in ("figure", "unit", "target") else "right")
                    for h in ("figure", "value", "baseline", "unit", "ratio", "target", "ok")),
                  title=f"nfstudy bench on {out['device']} (torch {host['torch']}, {host['threads']} threads, "
                        f"load {host['load_average']}, {host['date']}, {host['wall_s']:.0f} s)")
    for r in out["results"]:
        table.add_row(r["name"], f"{r['value']:.4g}", f"{r['baseline']:.4g}", r["unit"], f"{r['ratio']:.3f}",
                      r["target"], {True: "yes", False: "NO", None: ""}[r["ok"]])
    Console(width=max(console.width, 110)).print(table)  # logs and pipes get the whole table
    for r in out["results"]:
        if r["note"]:
            console.print(f"  {r['name']}: {r['note']}", markup=False, highlight=False)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: runs the app, turning bad input into one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        # Without standalone mode, click returns (not raises) the code of a `typer.Exit`.
        code = app(args=args, prog_name="nfstudy", standalone_mode=False)
    except NfstudyError as err:
        if debug:
            raise
        err_console.print(f"error: {_one_line(str(err))}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except (click.exceptions.Exit, typer.Exit) as err:
        return err.exit_code
    except (click.exceptions.Abort, typer.Abort):
        err_console.print("interrupted", markup=False)
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        return 130
    except (click.exceptions.ClickException, TyperException) as err:  # typer ≥ 0.20 vendors click
        if debug:
            raise
        err_console.print(f"error: {_one_line(err.format_message())}", markup=False, highlight=False,
                          soft_wrap=True)
        return 2
    return code if isinstance(code, int) else 0


def _one_line(message: str) -> str:
    """An error message as one line, with credentials in URLs redacted."""
    from study.redaction import redact

    return redact(" ".join(part.strip() for part in message.splitlines() if part.strip()))


def entry() -> None:
    import signal

    # A shell starts background jobs with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: restore it, so Ctrl-C (or `kill -INT`) always stops a run cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
