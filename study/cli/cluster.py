"""Commands for a cluster: ``nfstudy enqueue`` (fill a study's queue, train nothing),
``nfstudy launch slurm`` (enqueue, then a Slurm job array of workers, re-submitted while
configs are left) and ``nfstudy status`` (where each config stands)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from study.cli.common import (
    PresetOpt,
    QueueOpt,
    SetOpt,
    StudyArg,
    TrackingOpt,
    console,
    err_console,
    notes,
    plan_runs,
    preflight_checks,
)
from study.cli.examples import epilog
from study.errors import NfstudyError

launch_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Train a study on a cluster's scheduler (workers as scheduler jobs).")


def enqueue_study(name: str, preset: Optional[str], set_: Optional[list[str]], tracking_uri: Optional[str],
                  storage: Optional[str]):
    """What ``nfstudy enqueue`` does (and ``launch`` first): the MLflow experiment and parent
    run, the study's plan on the parent, and one queue entry per config not FINISHED.

    Returns:
        ``(spec, runs, queue, tracking, prepared)``.
    """
    from study import paths
    from study.record.study_parent import record_study
    from study.record.tracking import Tracking
    from study.run.coordinator import prepare
    from study.run.queue import RunQueue

    spec, runs = plan_runs(name, preset, set_)
    preflight_checks(runs, tracking_uri, storage, spool_ok=True)
    notes(spec, runs, preset)
    tracking = Tracking(tracking_uri)
    queue = RunQueue(spec.name, storage, create=True)
    prepared = prepare(spec, runs, tracking, queue)
    if tracking.spool_only:  # no parent run to log on: `nfstudy sync` creates it, without the plan
        return spec, runs, queue, tracking, prepared
    try:
        record_study(tracking, prepared.parent_id, spec, runs, paths.scale_name(preset, set_))
    except Exception as err:  # noqa: BLE001 - the runs matter more than their summary
        err_console.print(f"warning: the study file and plan were not logged on the parent run: {err}")
    return spec, runs, queue, tracking, prepared


def enqueue(
    name: StudyArg,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    tracking_uri: TrackingOpt = None,
    storage: QueueOpt = None,
) -> None:
    """Fill a study's queue with every config not finished; train nothing (idempotent).

    Creates the MLflow experiment and parent run first, so `nfstudy worker --study NAME`
    processes (anywhere that reaches both stores) can start right after."""
    from study.redaction import redact
    from study.run import slurm

    spec, runs, queue, _, prepared = enqueue_study(name, preset, set_, tracking_uri, storage)
    plan = {run.config_hash for run in runs}
    console.print(f"{spec.name}: {len(plan)} configs, {len(prepared.done_before)} finished, "
                  f"{slurm.waiting(queue, plan)} waiting in the queue {redact(queue.url)} "
                  f"(start workers: nfstudy worker --study {spec.name})")


def _study_arg(name: str) -> str:
    """The study as a follow-up job names it: a file by its absolute path."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.suffix in (".yaml", ".yml") and path.is_file() else name


def _dry_run(name, preset, set_, tracking_uri, storage, options) -> None:
    from study import paths
    from study.run import slurm
    from study.run.run_cache import open_tracking, survey

    spec, runs = plan_runs(name, preset, set_)
    preflight_checks(runs, tracking_uri, storage, spool_ok=True)
    found = survey(open_tracking(paths.tracking_uri(tracking_uri)), spec.name, runs)
    left = len({run.config_hash for run in runs} - set(found.kept))
    logs = slurm.scripts_dir(spec.name)
    console.print(f"# {spec.name}: {left} of {len(runs)} configs to train (dry run: nothing queued or submitted)")
    if not left:
        return
    console.print(f"# {logs / 'workers.sbatch'}")
    console.print(slurm.worker_script(spec.name, options, min(options.workers, left), logs))
    console.print(f"# {logs / 'next.sbatch'} (sbatch --dependency=afterany:ARRAY_JOB_ID)")
    console.print(slurm.follow_up_script(spec.name, options, _follow_up_command(name, options, preset, set_, 2), logs))


@launch_app.command("slurm", epilog=epilog("launch slurm"))
def launch_slurm(
    name: StudyArg,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Array tasks, each one `nfstudy worker` (fewer "
                                         "when fewer configs are left).")] = 1,
    gpus_per_worker: Annotated[int, typer.Option("--gpus-per-worker", min=0, help="GPUs per task (--gres=gpu:G); "
                                                 "above 1 each run is one torchrun DDP job on that node.")] = 0,
    cpus_per_worker: Annotated[Optional[int], typer.Option("--cpus-per-worker", min=1, help="CPU cores per "
                                                           "task (--cpus-per-task).")] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="Time limit of each task, HH:MM:SS; a task that "
                                                "reaches it puts its run back in the queue.")] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", help="Slurm partition.")] = None,
    account: Annotated[Optional[str], typer.Option("--account", help="Slurm account.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Arrays submitted in all: after each, a follow-up "
                                        "job submits the next while configs are left.")] = 3,
    sbatch: Annotated[Optional[list[str]], typer.Option("--sbatch", help="Another #SBATCH option for the tasks, "
                                                        "e.g. --sbatch=--qos=long (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the sbatch scripts; queue and submit "
                                          "nothing.")] = False,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    tracking_uri: TrackingOpt = None,
    storage: QueueOpt = None,
    round_: Annotated[int, typer.Option("--round", hidden=True, help="This launch's round (follow-up jobs).")] = 1,
) -> None:
    """Enqueue a study, then train it with a Slurm job array of `nfstudy worker` tasks.

    A task cancelled (scancel), preempted or at its time limit closes its run KILLED and
    puts the config back in the queue; with train.checkpoint_every the next worker resumes
    from the checkpoint. When the array ends and configs are left, a follow-up job submits
    another array (up to --rounds). Running it again submits only what is left."""
    from study.run import slurm

    options = slurm.SlurmOptions(workers, gpus_per_worker, cpus_per_worker, time, partition, account, rounds,
                                 list(sbatch or []))
    if time is not None:
        slurm.time_limit_s(time)  # a bad --time is one line before anything is written
    if dry_run:
        _dry_run(name, preset, set_, tracking_uri, storage, options)
        return
    slurm.sbatch_binary()  # no Slurm here: one line before anything is written
    spec, runs, queue, tracking, _ = enqueue_study(name, preset, set_, tracking_uri, storage)
    hashes = {run.config_hash for run in runs}
    if round_ > 1:  # a follow-up job: the array has ended, its runs are over one way or another
        slurm.settle_running(queue, tracking, hashes, lambda line: console.print(f"{spec.name}: {line}"))
    left = slurm.waiting(queue, hashes)
    status = _status_command(name, preset, set_)
    if left == 0:
        console.print(f"{spec.name}: nothing to submit (no config of its {len(hashes)} is waiting); see: {status}")
        return
    if round_ > rounds:
        err_console.print(f"{spec.name}: {left} configs still waiting after {rounds} rounds; not submitting "
                          f"again. See `{status}`, then run `nfstudy launch slurm` again to go on.")
        raise typer.Exit(1)
    tasks, logs = min(workers, left), slurm.scripts_dir(spec.name)
    env = slurm.job_env(queue, tracking)
    array = slurm.submit(slurm.worker_script(spec.name, options, tasks, logs), logs / "workers.sbatch", env)
    follow = _follow_up_command(name, options, preset, set_, round_ + 1)
    after = slurm.submit(slurm.follow_up_script(spec.name, options, follow, logs), logs / "next.sbatch", env,
                         dependency=array)
    console.print(f"{spec.name}: submitted job array {array} ({tasks} workers) for {left} waiting configs; "
                  f"job {after} submits what is left when it ends (round {round_} of {rounds})")
    console.print(f"follow progress: {status}   (Slurm: squeue -j {array},{after}; logs: {logs})")
    console.print(f"cancel: scancel {array} {after}   (runs in progress go back to the queue)")


def _follow_up_command(name: str, options, preset, set_, next_round: int) -> list[str]:
    """The follow-up job's ``nfstudy launch slurm`` (the URLs come from its environment)."""
    command = [sys.executable, "-m", "study", "launch", "slurm", _study_arg(name), "--workers", str(options.workers),
               "--gpus-per-worker", str(options.gpus_per_worker), "--rounds", str(options.rounds),
               "--round", str(next_round)]
    for flag, value in (("--cpus-per-worker", options.cpus_per_worker), ("--time", options.time),
                        ("--partition", options.partition), ("--account", options.account), ("--preset", preset)):
        if value is not None:
            command += [flag, str(value)]
    command += [f"--sbatch={extra}" for extra in options.extra]
    for item in set_ or []:
        command += ["--set", item]
    return command


def _status_command(name: str, preset, set_) -> str:
    return shlex.join(["nfstudy", "status", name, *(["--preset", preset] if preset else []),
                       *[part for item in set_ or [] for part in ("--set", item)]])


def status(
    name: StudyArg,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    tracking_uri: TrackingOpt = None,
    storage: QueueOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object: counts and every config's state.")] = False,
) -> None:
    """Where each config of a study stands: finished, diverged, running (host, Slurm job,
    age), waiting, failed (with the reason), from the queue and MLflow."""
    from study import paths
    from study.record import stores  # not study.cli.preflight, which imports torch for the data checks
    from study.run.queue import RunQueue, storage_url
    from study.run.run_cache import open_tracking
    from study.run.status import study_status

    try:
        spec, runs = plan_runs(name, preset, set_)
        study, plan = spec.name, {run.config_hash: run.name for run in runs}
    except NfstudyError:
        if preset or set_:
            raise
        study, plan = name, None  # a queue whose study file is elsewhere: every config it holds
    uri = paths.tracking_uri(tracking_uri)
    stores.check_storage(storage_url(storage))
    stores.check_tracking(uri)
    found = study_status(RunQueue(study, storage), open_tracking(uri), plan)
    if json_:
        print(json.dumps(found.as_json()))
        return
    counts = found.counts()
    console.print(f"{study}: {len(found.configs)} configs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for config in found.configs:
        if config.state == "running":
            where = " ".join(part for part in (config.host, f"job {config.job}" if config.job else "") if part)
            console.print(f"  running  {config.run_name} [{config.config_hash}] on {where}, "
                          f"{_age(config.age_s)}, attempt {config.attempt}")
    for config in found.configs:
        if config.state == "failed":
            console.print(f"  failed   {config.run_name} [{config.config_hash}]: {config.reason}")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "just claimed"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
