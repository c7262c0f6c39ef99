"""The ``nfstudy`` command line (also ``python -m study``).

Bad input of any kind prints one line naming the problem and exits 2; ``--debug``
(anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.table import Column, Table
from typer.exceptions import TyperException

from study.cli import cluster
from study.cli.common import (
    AddSeedsOpt,
    ImportOpt,
    OldStorageOpt,
    OnlyOpt,
    PresetOpt,
    QueueOpt,
    SearchStorageOpt,
    SeedsOpt,
    SetOpt,
    StudyArg,
    SweepOpt,
    TrackingOpt,
    cap_notes as _cap_notes,
    console,
    err_console,
    notes as _notes,
    plan_runs as _plan,
    preflight_checks as _preflight,
)
from study.cli.examples import epilog
from study.errors import ConfigError, NfstudyError

app = typer.Typer(add_completion=True, no_args_is_help=True, rich_markup_mode="rich",
                  help="Declarative ablation studies on PyTorch (NFNets paper), tracked in MLflow.")


def _version(value: bool) -> None:
    if value:
        from study import __version__

        console.print(f"nfstudy {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print nfstudy's version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error instead of one line "
                                        "(anywhere on the command line).")] = False,
) -> None:
    """Declarative ablation studies on PyTorch (NFNets paper), tracked in MLflow."""


def _search_storage(command: str, storage: Optional[str], old: Optional[str]) -> Optional[str]:
    """``--search-storage``, or the old spelling ``--storage`` (with a note: on run and
    worker, ``--storage`` is the queue's)."""
    if old is not None and storage is not None:
        raise ConfigError(f"{command}: give --search-storage only (--storage is its old spelling)")
    if old is not None:
        err_console.print(f"note: on `nfstudy {command}`, --storage is now spelt --search-storage (the searches' "
                          "Optuna storage; --storage names the run queue's on run and worker)")
    return storage if storage is not None else old


@app.command("list", epilog=epilog("list"))
def list_cmd(
    tracking_uri: TrackingOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object per study, one per line.")] = False,
) -> None:
    """The studies on the search path with their runs done/total (tab-separated when piped)."""
    import json

    from study import paths
    from study.cli.store_reader import finished_runs
    from study.config.study_file import hidden_studies, list_studies

    uri = paths.tracking_uri(tracking_uri)
    recorded = finished_runs(uri)
    rows = []
    for name in list_studies():
        cached = _cached_plan(name)
        done = _done(uri, recorded, cached)
        rows.append({"study": name, "runs": len(cached.runs), "done": done, "paper": cached.paper,
                     "description": " ".join(cached.description.split())})
    if json_:
        for row in rows:
            console.file.write(json.dumps(row) + "\n")
    else:
        _print_list([(r["study"], str(r["runs"]), "" if r["done"] is None else f"{r['done']}/{r['runs']}",
                      r["paper"] or "", r["description"]) for r in rows], console)
    for hidden, by in hidden_studies().items():
        err_console.print(f"note: {by} hides {hidden} (same name)")


def _cached_plan(name: str, preset: Optional[str] = None, sets: Optional[list[str]] = None,
                 sweeps: Optional[list[str]] = None, seeds: Optional[str] = None, add_seeds: int = 0):
    """The study's plan as ``list`` and ``show`` print it, from :mod:`study.cli.plan_cache`."""
    from study.cli.plan_cache import cached_plan

    def notes(runs) -> list[str]:
        return _cap_notes(runs, preset)

    return cached_plan(name, lambda: _plan(name, preset, sets, sweeps, seeds, add_seeds), notes,
                       [preset, sets, sweeps, seeds, add_seeds])


def _done(uri: str, recorded, cached) -> Optional[int]:
    """How many of the plan's runs this study has FINISHED by this code (``None``: the
    store cannot be read now)."""
    from study.cli.store_reader import survey_sqlite

    found = survey_sqlite(uri, cached.name, cached.runs, recorded=recorded)
    if found is None:
        from study.run.run_cache import open_tracking, survey

        try:
            found = survey(open_tracking(uri), cached.name, cached.runs)
        except Exception:  # noqa: BLE001 - a list is still worth printing without counts
            return None
    return len(found.done)


def _print_list(rows: list[tuple[str, ...]], out: Console) -> None:
    """A table at a terminal; one tab-separated line per study otherwise (scripts read
    whole names). Names, counts and papers are never cut: only descriptions are shortened to
    fit, and a terminal too narrow even for that gets the lines too."""
    headers = ("study", "runs", "done", "paper", "description")
    widths = [max([len(headers[i])] + [len(row[i]) for row in rows]) for i in range(4)]
    room = out.width - sum(widths) - (3 * len(headers) + 1)  # borders and padding
    if not out.is_terminal or room < 12:
        for row in rows:  # not through rich, which would expand the tabs
            out.file.write("\t".join(row) + "\n")
        return
    table = Table()
    for header, width in zip(headers, [*widths, room]):
        table.add_column(header, no_wrap=True, min_width=width, max_width=width)
    for *fixed, description in rows:
        table.add_row(*fixed, description if len(description) <= room else description[:room - 1] + "…")
    out.print(table)


@app.command(epilog=epilog("show"))
def show(
    name: StudyArg,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    sweep: SweepOpt = None,
    seeds: SeedsOpt = None,
    add_seeds: AddSeedsOpt = 0,
    imports: ImportOpt = None,
    tracking_uri: TrackingOpt = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", metavar="#|HASH", help="Print one run's resolved config (its # in the table, or its config "
        "hash).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the plan and its state as one JSON object.")] = False,
) -> None:
    """The expanded runs of a study (arm, grid values, seed, hash) and what is recorded of them."""
    from study import paths
    from study.cli.store_reader import survey_sqlite
    from study.record.stores import check_tracking  # not through preflight, which imports torch

    if config is not None:
        _print_config(_plan(name, preset, set_, sweep, seeds, add_seeds, imports)[1], config)
        return
    if imports:  # a plugin decides the plan: never from the cache
        from study.cli.plan_cache import fresh_plan

        cached = fresh_plan(*_plan(name, preset, set_, sweep, seeds, add_seeds, imports), _cap_notes, preset)
    else:
        cached = _cached_plan(name, preset, set_, sweep, seeds, add_seeds)
    uri = paths.tracking_uri(tracking_uri)
    check_tracking(uri)  # a dead server is one line, not a traceback
    found = survey_sqlite(uri, cached.name, cached.runs)
    if found is None:
        from study.run.run_cache import open_tracking, survey

        found = survey(open_tracking(uri), cached.name, cached.runs)
    state = {**{h: "stale" for h in (*found.stale, *found.unknown)}, **{h: "copy" for h in found.copies},
             **{h: "yes" for h in found.done}}
    if json_:
        import json

        console.file.write(json.dumps({
            "study": cached.name, "runs": [{"#": i, "arm": run.arm, **run.point, "seed": run.seed, "name": run.name,
                                            "hash": run.config_hash, "done": state.get(run.config_hash, "")}
                                           for i, run in enumerate(cached.runs)],
            "done": len(found.done), "copies": len(found.copies), "stale": len(found.stale) + len(found.unknown),
            "to_run": found.to_train, "total": found.total}) + "\n")
        return
    table = Table("#", "arm", *cached.grid, "seed", "hash", "done", title=f"{cached.name}: {len(cached.runs)} runs")
    for i, run in enumerate(cached.runs):
        table.add_row(str(i), run.arm or "-", *(str(run.point.get(k, "")) for k in cached.grid), str(run.seed),
                      run.config_hash, state.get(run.config_hash, ""))
    console.print(table)
    console.print(f"{found.summary()} (done: recorded by this code; copy: another study has it; stale: trained "
                  "by other code)")
    _notes(cached, cached.runs, preset, cached.notes)


def _print_config(runs, which: str) -> None:
    """One run's resolved config as YAML (``--config N`` or ``--config HASH``)."""
    import yaml

    chosen = [run for i, run in enumerate(runs) if which in (str(i), run.config_hash)]
    if not chosen:
        raise ConfigError(f"--config {which}: no such run; give its # (0…{len(runs) - 1}) or config hash")
    run = chosen[0]
    console.print(f"# {run.name}  config hash {run.config_hash}")
    console.print(yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False).rstrip())


@app.command(epilog=epilog("run"))
def run(
    name: StudyArg,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    sweep: SweepOpt = None,
    seeds: SeedsOpt = None,
    add_seeds: AddSeedsOpt = 0,
    only: OnlyOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Train the chosen runs (--only, else all) again even if "
                                        "done; the old runs stay in MLflow, tagged nfstudy.role=superseded.")] = False,
    imports: ImportOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check everything a run checks and say what it "
                                          "would do (train, copy, reuse); train and write nothing.")] = False,
    tracking_uri: TrackingOpt = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Local worker processes: one GPU each when there "
                                         "are GPUs, else an equal share of the CPU cores; 1 trains in this "
                                         "process.")] = 1,
    storage: QueueOpt = None,
    nproc_per_node: Annotated[int, typer.Option("--nproc-per-node", min=1, help="Processes (GPUs) per run: each "
                                                "run becomes one torchrun DDP job; AGC clips the all-reduced "
                                                "gradient.")] = 1,
    reuse_stale: Annotated[bool, typer.Option("--reuse-stale", help="Count runs trained by other code (stale) as "
                                              "done, and copy stale runs of other studies.")] = False,
    rerun_stale: Annotated[bool, typer.Option("--rerun-stale", help="Train stale runs again (the old ones stay in "
                                              "MLflow, tagged nfstudy.role=superseded).")] = False,
    until_resolved: Annotated[bool, typer.Option("--until-resolved", help="Then add paired seeds, one round at a "
                                                 "time, to the cells that unresolved paper claims need, until every "
                                                 "claim is resolved (anytime-valid) or --max-seeds is reached.")] = False,
    max_seeds: Annotated[int, typer.Option("--max-seeds", min=1, help="With --until-resolved: seeds per cell at "
                                           "most, the planned ones included.")] = 10,
) -> None:
    """Run what is not finished yet of a study; finished configs are never trained again.

    The configs go into the study's queue (Optuna storage); local workers and any
    `nfstudy worker` on other machines train them. Ctrl-C stops cleanly (exit 130)."""
    from study import paths
    from study.cli.progress import RunProgress
    from study.config.expand import select
    from study.record.study_parent import record_study
    from study.record.tracking import Tracking
    from study.run.coordinator import execute
    from study.run.placement import check_placement, visible_gpus
    from study.run.run_cache import Stale, open_tracking, survey

    if reuse_stale and rerun_stale:
        raise ConfigError("--reuse-stale and --rerun-stale exclude each other: keep stale runs, or train them again")
    policy = Stale.REUSE if reuse_stale else Stale.RERUN if rerun_stale else Stale.STOP
    spec, planned = _plan(name, preset, set_, sweep, seeds, add_seeds, imports)
    runs = select(planned, only)
    if until_resolved:
        from study.run.until_resolved import check

        check(spec, max_seeds)
    check_placement(workers, nproc_per_node, {r.config.train.device for r in runs}, visible_gpus())
    _preflight(runs, tracking_uri, storage)
    found = survey(open_tracking(paths.tracking_uri(tracking_uri)), spec.name, runs, policy)
    if force:
        found = found.forced_again()
    if dry_run:
        _print_dry_run(spec, runs, found)
        _notes(spec, runs, preset)
        return
    found.check(spec.name)
    _notes(spec, runs, preset)
    tracking = Tracking(tracking_uri)
    _sync_spool(tracking)
    scale = paths.scale_name(preset, set_)
    with RunProgress(console, spec.name, len(runs), workers) as progress:
        def prepared(ready) -> None:
            try:
                record_study(tracking, ready.parent_id, spec, planned, scale)
            except Exception as err:  # noqa: BLE001 - the runs matter more than their summary
                err_console.print(f"warning: the study file and plan were not logged on the parent run: {err}")
            progress.on_prepared(ready)

        summary = execute(spec, runs, tracking, workers=workers, storage=storage, on_prepared=prepared,
                          on_progress=progress.on_progress, on_event=progress.on_event, on_epoch=progress.on_epoch,
                          nproc_per_node=nproc_per_node, stale=policy, force=force)
    console.print(f"{spec.name}: {summary.completed} completed, {summary.diverged} diverged, "
                  + (f"{len(summary.failed)} not finished (interrupted; the next run resumes)" if summary.interrupted
                     else f"{len(summary.failed)} failed") + f", {summary.done_before} were already done")
    if summary.interrupted:
        done = summary.completed + summary.diverged + summary.done_before
        console.print(f"{spec.name}: {done}/{len(runs)} done; run the same command to resume")
        raise KeyboardInterrupt
    if until_resolved and not summary.failed:
        from study.config.expand import parse_overrides
        from study.run.until_resolved import resolve_study

        summary.failed = resolve_study(spec, runs, preset=preset, overrides=parse_overrides(set_),
                                       tracking_uri=paths.tracking_uri(tracking_uri), max_seeds=max_seeds,
                                       say=lambda line: console.print(line, markup=False, highlight=False),
                                       execute_runs=lambda more: execute(spec, more, tracking, workers=workers,
                                                                         storage=storage, stale=policy,
                                                                         nproc_per_node=nproc_per_node)).failed
    for line in summary.failed:
        err_console.print(f"failed: {line}")
    if summary.failed:
        raise typer.Exit(1)


def _print_dry_run(spec, runs, found) -> None:
    """What ``nfstudy run`` would do, from the same survey it acts on."""
    from study.run.run_cache import Stale, StaleRunsError

    console.print(f"{spec.name}: {len(runs)} runs, {found.summary()} (dry run)")
    by_hash = {run.config_hash: run for run in runs}
    stale = {**found.stale, **found.unknown}
    kept = found.kept
    groups = [("to run", [h for h in by_hash if h not in kept and h not in found.copies and h not in stale]),
              ("copied from other studies", list(found.copies)),
              ("stale, " + {Stale.REUSE: "reused", Stale.RERUN: "superseded, then trained again or copied",
                            Stale.STOP: "trained by other code"}[found.policy], list(stale))]
    for title, hashes in groups:
        if hashes:
            console.print(f"  {title}:")
            for config_hash in hashes:
                console.print(f"    {config_hash}  {by_hash[config_hash].name}")
    try:
        found.check(spec.name)
    except StaleRunsError as err:
        console.print(f"a real run would stop here: {err}")


def _sync_spool(tracking) -> None:
    """Upload runs spooled while the tracking server was unreachable (see `nfstudy sync`)."""
    from study.record import spool

    if spool.pending():
        summary = spool.sync(tracking, on_run=lambda line: console.print(f"sync: {line}"))
        console.print(f"sync: {summary.uploaded} spooled runs uploaded, {summary.duplicates} duplicates dropped")


@app.command(epilog=epilog("sync"))
def sync(tracking_uri: TrackingOpt = None) -> None:
    """Upload the runs spooled under $NFSTUDY_HOME/spool (while the tracking server was
    unreachable, or by workers with --tracking-uri spool:). Idempotent: a config already
    FINISHED is not recorded twice."""
    from study import paths
    from study.cli import preflight
    from study.record import spool
    from study.record.tracking import Tracking

    if not spool.pending():
        console.print("sync: nothing spooled")
        return
    preflight.check_tracking(paths.tracking_uri(tracking_uri))
    _sync_spool(Tracking(tracking_uri))


@app.command(epilog=epilog("ui"))
def ui(
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[Optional[str], typer.Option(help="Interface to bind (default 127.0.0.1). Anything else opens "
                                                "the UI, which has no login, to the network.")] = None,
    optuna: Annotated[bool, typer.Option("--optuna", help="Also start optuna-dashboard on the searches' "
                                         "storage.")] = False,
    optuna_port: Annotated[Optional[int], typer.Option(help="Port of optuna-dashboard (default: --port + 1).")] = None,
    tracking_uri: TrackingOpt = None,
    search_storage: SearchStorageOpt = None,
    old_storage: OldStorageOpt = None,
) -> None:
    """MLflow UI on the same tracking database and artifacts as `run` (127.0.0.1); Ctrl-C stops."""
    from study import paths
    from study.cli.ui import LOOPBACK, serve

    storage = _search_storage("ui", search_storage, old_storage)
    if host is not None and host not in LOOPBACK:
        err_console.print(f"warning: --host {host} makes the UI reachable from the network; "
                          "MLflow has no login: anyone who reaches it can read and delete runs")
    code = serve(paths.tracking_uri(tracking_uri), host or "127.0.0.1", port,
                 paths.optuna_storage(storage) if optuna else None, optuna_port or port + 1, console.print)
    if code:
        raise typer.Exit(code)


@app.command(epilog=epilog("worker"))
def worker(
    study: Annotated[str, typer.Option("--study", help="The study whose queue to join (its name; no study file "
                                       "needed).")],
    storage: QueueOpt = None,
    tracking_uri: TrackingOpt = None,
    parent_pid: Annotated[Optional[int], typer.Option(hidden=True, help="Stop when this process (a local "
                                                      "coordinator) dies.")] = None,
    nproc_per_node: Annotated[int, typer.Option("--nproc-per-node", min=1, help="Processes (GPUs) per run "
                                                "(torchrun DDP).")] = 1,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes on this machine: one GPU each "
                                         "when there are GPUs, else an equal share of the CPU cores; 1 trains in "
                                         "this process.")] = 1,
    plan: Annotated[Optional[str], typer.Option(hidden=True, help="Train only this plan's configs (a local "
                                                "coordinator's).")] = None,
    imports: ImportOpt = None,
) -> None:
    """Join a study's queue (e.g. from another machine) and train until the queue is empty.

    Start `nfstudy enqueue NAME --storage URL --tracking-uri URI` (or `nfstudy run`) first: it fills the
    queue. Exits 0 when nothing is left; Ctrl-C or SIGTERM closes the current run KILLED,
    puts its config back in the queue and exits 130."""
    import socket

    from study import paths
    from study.cli import preflight
    from study.plugins import use_plugins
    from study.record.tracking import Tracking
    from study.run.coordinator import run_local_workers
    from study.run.queue import RunQueue, storage_url
    from study.run.worker import run_worker

    use_plugins(imports or [], folder=os.getcwd() if imports else None)  # the study file's plugins: are not here
    # A wrong URL is one line and exit 2 within seconds; an outage later is ridden out.
    preflight.check_storage(storage_url(storage))
    preflight.check_tracking(paths.tracking_uri(tracking_uri), spool_ok=True)
    queue = RunQueue(study, storage)
    tracking = Tracking(tracking_uri)
    me = f"worker {socket.gethostname()}:{os.getpid()}"
    if workers > 1:
        console.print(f"{me}: {workers} worker processes (logs: $NFSTUDY_HOME/logs/{study}/)")
        if run_local_workers(queue, tracking, workers, nproc_per_node):
            raise KeyboardInterrupt
        console.print(f"{me}: queue empty")
        return

    def on_event(event, job, result):
        detail = ""
        if event == "finished":
            detail = f" {result['outcome']} val/top1 {result['val/top1']:.3f}"
        console.print(f"{me}: {event} {job.run_name} [{job.config_hash}]{detail}")

    summary = run_worker(queue, tracking, hashes=queue.plan_hashes(plan) if plan else None, parent_pid=parent_pid,
                         on_event=on_event, nproc_per_node=nproc_per_node)
    queue_ms, check_ms = summary.overhead_ms()
    console.print(f"{me}: {'interrupted' if summary.interrupted else 'queue empty'}; {summary.completed} completed, "
                  f"{summary.diverged} diverged, {len(summary.failed)} failed, {summary.skipped} skipped (done "
                  f"elsewhere), {summary.recovered} lost runs recovered; per run: queue {queue_ms:.1f} ms, "
                  f"MLflow checks {check_ms:.1f} ms")
    if summary.interrupted:
        raise KeyboardInterrupt


@app.command(epilog=epilog("search"))
def search(
    name: Annotated[str, typer.Argument(help="Study name or path to a study YAML file with a 'search:' section.")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="Trials to add to the search.")] = 20,
    search_storage: SearchStorageOpt = None,
    old_storage: OldStorageOpt = None,
    preset: PresetOpt = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a config key of every trial, e.g. --set data.batch_size=4096 "
        "(repeatable); a searched key set here is pinned.")] = None,
    tracking_uri: TrackingOpt = None,
    imports: ImportOpt = None,
) -> None:
    """Optuna search over the study's 'search:' space; running it again adds trials to the same study."""
    import statistics

    import optuna

    from study import paths
    from study.cli import preflight
    from study.cli.progress import TrialProgress
    from study.config.expand import parse_overrides
    from study.config.study_file import load_study
    from study.plugins import use_plugins
    from study.record.tracking import Tracking
    from study.run.search import open_storage, plan_search, run_search

    storage = _search_storage("search", search_storage, old_storage)
    use_plugins(imports or [], folder=os.getcwd() if imports else None)
    plan = plan_search(load_study(name), preset=preset, overrides=parse_overrides(set_))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    preflight.check_storage(paths.optuna_storage(storage))  # a wrong URL: one line within seconds
    preflight.check_tracking(paths.tracking_uri(tracking_uri))
    open_storage(storage)  # a bad storage fails here, before any MLflow run is created
    pinned = [k for k in plan.search.space if k not in plan.space]
    console.print(f"{plan.spec.name}: searching {', '.join(plan.space)} on {plan.metric} ({plan.direction})"
                  + (f"; pinned by --set: {', '.join(pinned)}" if pinned else ""))

    with TrialProgress(console, trials) as progress:
        def on_trial(record) -> None:
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.params.items())
            value = "" if record.value is None else f" {plan.metric} {record.value:.3f}"
            progress.done(f"  trial {record.number}: {params} → {record.outcome}{value} "
                          f"({record.wall_s:.1f} s, overhead {record.overhead_ms:.0f} ms)")

        result = run_search(plan, trials, storage=storage, tracking=Tracking(tracking_uri), on_trial=on_trial)
    console.print(f"Optuna study {result.study_name} in {result.storage}: {result.existed} trials existed"
                  + (f" ({result.recovered} left RUNNING by a dead search process, now FAIL)" if result.recovered else "")
                  + f", {len(result.trials)} added")
    if result.trials:
        ms = lambda values: statistics.median(values) * 1000  # noqa: E731
        console.print(f"overhead per trial (median): {statistics.median(r.overhead_ms for r in result.trials):.0f} ms "
                      f"= storage {ms([r.storage_s for r in result.trials]):.0f} ms + tracking "
                      f"{ms([r.tracking_s for r in result.trials]):.0f} ms + sampling/config; "
                      f"training {ms([r.train_s for r in result.trials]):.0f} ms")
    if result.best_value is not None:
        console.print(f"best: {plan.metric} {result.best_value:.4f} at {result.best_params} "
                      f"(MLflow experiment '{plan.experiment}', parent run {result.parent_run_id})")


@app.command(epilog=epilog("report"))
def report(
    name: Annotated[Optional[str], typer.Argument(help="Study name or path to a study YAML file.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Report every study on the search path and write an index "
                                       "page.")] = False,
    preset: Annotated[Optional[str], typer.Option(metavar="NAME", help="Report the runs of this preset (default: "
                                                  "every scale that has runs).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Report the runs made "
                                                      "with these overrides.")] = None,
    tracking_uri: TrackingOpt = None,
    search_storage: SearchStorageOpt = None,
    old_storage: OldStorageOpt = None,
) -> None:
    """Print each report's summary and write figures (PNG + SVG), report.md and report.html
    under $NFSTUDY_HOME/reports/NAME/ (NAME/SCALE/ for another scale's runs, e.g.
    reports/clip-threshold/preset-smoke/). With no --preset/--set, every scale that has runs,
    each in its folder."""
    from analysis.report import build_index, build_report
    from analysis.runs import load_runs
    from study import paths
    from study.cli.preflight import check_tracking
    from study.config.expand import parse_overrides
    from study.config.study_file import list_studies, load_study
    from study.run.until_resolved import recorded_seed_hashes

    storage = _search_storage("report", search_storage, old_storage)
    if not all_ and name is None:
        raise NfstudyError("report: give a study name, or --all")
    uri = paths.tracking_uri(tracking_uri)
    check_tracking(uri)
    folders = {}
    for typed in _recorded(list_studies(), uri) if all_ else [name]:
        spec = load_study(typed)
        if spec.search is not None:  # a search's report covers all its Optuna studies, whatever the scale
            from analysis.search_report import build_search_report

            out = paths.reports_dir(spec.report_key)
            written = build_search_report(spec, paths.optuna_storage(storage), uri, out,
                                          command=_command("report", typed))
            folders[spec.name] = out
            console.print(f"{spec.name}: {written.get('html', out)}")
            continue
        inputs = _paper_inputs(spec)
        for scale_preset, scale_sets in _report_scales(spec, uri, preset, set_):
            scale = paths.scale_name(scale_preset, scale_sets)
            out = paths.reports_dir(spec.report_key, scale)
            folders.setdefault(spec.name, out)
            _, runs = _plan(typed, scale_preset, scale_sets)
            added = recorded_seed_hashes(spec, scale_preset, parse_overrides(scale_sets), load_runs(spec.name, uri))
            written = build_report(spec, uri, out, command=_command("report", typed, scale_preset, scale_sets),
                                   inputs=inputs, config_hashes={r.config_hash for r in runs} | added,
                                   artifact_path="report" + (f"/{scale}" if scale else ""),
                                   run_command=_command("run", typed, scale_preset, scale_sets))
            for line in written["lines"]:
                console.print(line, markup=False, highlight=False, emoji=False)
            console.print(f"{spec.name}" + (f" ({scale})" if scale else "") + f": {written['html']}", markup=False)
    if all_:
        scale = paths.scale_name(preset, set_)
        index = build_index(paths.home() / "reports", list(folders), folders, "index" + (f"-{scale}" if scale else ""))
        console.print(f"index: {index}")


def _recorded(names: list[str], uri: str) -> list[str]:
    """The studies with an MLflow experiment (grid or search) in the store: what ``report
    --all`` reports (the others have nothing to show)."""
    from study.run.run_cache import open_tracking

    tracking = open_tracking(uri)
    if tracking is None:
        return []
    found = [n for n in names if any(tracking.client.get_experiment_by_name(e) for e in (n, f"search:{n}"))]
    if len(found) < len(names):
        console.print(f"report --all: {len(names) - len(found)} studies without runs left out")
    return found


def _command(command: str, typed: str, preset: Optional[str] = None, sets: Optional[list[str]] = None) -> str:
    """The command line that makes a report (or its runs) again, the study as the user named it."""
    return " ".join(["nfstudy", command, shlex.quote(typed), *([f"--preset {shlex.quote(preset)}"] if preset else []),
                     *(f"--set {shlex.quote(item)}" for item in sets or [])])


def _report_scales(spec, uri: str, preset: Optional[str], sets) -> list[tuple]:
    """``[(preset, sets)]`` to report: the one asked for, else every scale that has runs
    (``analysis.scale.recorded_scales``; the study's base when none has any), said on stdout."""
    from analysis.runs import load_runs
    from analysis.scale import recorded_scales
    from study.config.expand import plan
    from study.config.study_file import list_presets

    if preset is not None or sets:
        return [(preset, sets)]
    plans = {}
    for candidate in [None, *list_presets()]:
        try:
            plans[candidate] = {r.config_hash: r.config.flat() for r in plan(spec, preset=candidate)}
        except NfstudyError:  # e.g. a preset that needs a data.root: no runs of it either
            continue
    varied = {key for overrides in spec.arms.values() for key in overrides} | set(spec.grid) | {"seed"}
    found = recorded_scales(load_runs(spec.name, uri), plans, varied)
    if len(found) > 1 or (found and found[0].label() != "base"):
        console.print(f"{spec.name}: runs at {len(found)} scale(s), each reported in its own folder: "
                      + "; ".join(f"{s.label()} ({s.finished}" + (f" of {s.planned})" if s.planned else " runs)")
                                  for s in found), markup=False, highlight=False)
    return [(s.preset, list(s.sets) or None) for s in found] or [(None, None)]


def _paper_inputs(spec) -> dict:
    """What the study's paper result needs besides its runs (its ``needs`` in
    ``analysis.reference``), computed here: ``analysis`` never builds models."""
    from analysis.reference import SignalPropagation, reference

    needs = reference(spec.paper).needs if spec.paper else ()
    return {need.name: _signal_propagation(spec, need) for need in needs if isinstance(need, SignalPropagation)}


def _signal_propagation(spec, need):
    """The signal-propagation rows ``need`` describes: the study's models and ``need.models``,
    each on white noise, seed 0, SkipInit off so the α-scaled growth shows."""
    import pandas as pd
    import torch

    from study.config.expand import plan
    from study.config.run_config import ModelConfig
    from study.models import build_model, model_info, signal_propagation

    configs = [run.config for run in plan(spec)]
    size = configs[0].data.image_size or 16
    cases: dict[tuple, str | None] = {}  # (registered name, channels, pixels) → model.norm
    for model in (c.model for c in configs):
        key = (model.resolved_name, 1, size)
        cases[key] = cases.get(key) or model.norm
    for ref in need.models:
        cases[(ModelConfig(name=ref.name, norm=ref.norm).resolved_name, ref.channels, ref.pixels)] = ref.norm
    frames = []
    for (name, chans, px), norm in sorted(cases.items(), key=lambda item: item[0]):
        torch.manual_seed(0)
        extra = {} if model_info(name).norm == "bn" else {"skipinit": False}
        model = build_model(name, num_classes=10, in_chans=chans, **extra)
        frame = signal_propagation(model, torch.randn(need.batch, chans, px, px))
        frames.append(frame.assign(model=name, norm=norm))
    return pd.concat(frames, ignore_index=True)


@app.command(epilog=epilog("bench"))
def bench(
    json_: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    device: str = typer.Option("cpu", help="cpu or cuda: where every figure is measured."),
    model: str = typer.Option("nf_resnet_small", help="Model of the training figures (CUDA: NFNet-F0 unless set)."),
    quick: bool = typer.Option(False, "--quick", help="Seconds-long smoke mode (tests); numbers not meaningful."),
    threads: Optional[int] = typer.Option(None, help="torch.set_num_threads for the bench (default: 1 on cpu, torch's on cuda)."),
    compile_: bool = typer.Option(False, "--compile", help="Also measure train.compile (a minute of compilation on a CPU)."),
    cifar_root: Optional[str] = typer.Option(None, help="Local CIFAR-10 copy for the time-to-94% figure (cuda; default: the cifar10 preset's data.root)."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Measure only these groups: framework, gpu, cifar, cli (repeatable; gpu and cifar need --device cuda)."),
) -> None:
    """What the framework costs: each figure a ratio against a baseline measured in this run."""
    import json

    from study.bench import run_bench

    def log(line: str) -> None:  # progress on stderr, so --json keeps stdout one object
        err_console.print(line if line.startswith(" ") else f"measuring {line}")

    out = run_bench(device, model, quick, log, threads, compile_, cifar_root, only)
    if json_:
        print(json.dumps(out))
        return
    host = out["host"]
    table = Table(*(Column(h, no_wrap=True, justify="left" if h in ("figure", "unit", "target") else "right")
                    for h in ("figure", "value", "baseline", "unit", "ratio", "spread", "rounds", "target", "ok")),
                  title=f"nfstudy bench on {out['device']} (torch {host['torch']}, {host['threads']} threads, "
                        f"load {host['load_average']} → {host['load_average_end']}, {host['date']}, "
                        f"{host['wall_s']:.0f} s; spread: ≥ 90% interval of the median ratio)")
    for r in out["results"]:
        ok = {True: "yes", False: "NO", None: ""}[r["ok"]] + ("" if r["resolved"] in (True, None) else " (unresolved)")
        table.add_row(r["name"], f"{r['value']:.4g}", f"{r['baseline']:.4g}", r["unit"], f"{r['ratio']:.3f}",
                      f"{r['low']:.3f}–{r['high']:.3f}", str(r["rounds"]), r["target"], ok)
    console.print(table, width=max(console.width, 150))  # logs and pipes get the whole table
    for r in out["results"]:
        if r["note"]:
            console.print(f"  {r['name']}: {r['note']}")


# Commands for a cluster (enqueue, launch slurm, status): their own module.
app.command(epilog=epilog("enqueue"))(cluster.enqueue)
app.add_typer(cluster.launch_app, name="launch")
app.command(epilog=epilog("status"))(cluster.status)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: runs the app, turning bad input into one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"] or ["--help"]  # a bare `nfstudy` prints the help
    if not debug:  # MLflow's INFO lines ("Creating initial MLflow database tables...") are noise here
        import logging

        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # also for the workers this process starts
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    try:
        # Without standalone mode, click returns (not raises) the code of a `typer.Exit`.
        code = app(args=args, prog_name="nfstudy", standalone_mode=False)
    except NfstudyError as err:
        if debug:
            raise
        err_console.print(f"error: {_one_line(str(err))}")
        return 2
    except (click.exceptions.Exit, typer.Exit) as err:
        return err.exit_code
    except (click.exceptions.Abort, typer.Abort):
        err_console.print("interrupted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except (click.exceptions.ClickException, TyperException) as err:  # typer ≥ 0.20 vendors click
        if debug:
            raise
        ctx = getattr(err, "ctx", None)
        param = getattr(err, "param", None)  # typer ≥ 0.20's vendored click has its own exception classes
        if type(err).__name__ == "MissingParameter" and getattr(param, "param_type_name", "") == "argument" \
                and ctx is not None:
            err_console.print(ctx.get_usage())  # what the command takes, as click prints it
            err_console.print(f"error: {_one_line(err.format_message())} (nfstudy {ctx.info_name} --help: "
                              "every option, with examples)")
            return 2
        err_console.print(f"error: {_one_line(err.format_message())}")
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
