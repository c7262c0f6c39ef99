"""``nfstudy launch slurm``: a study's queue trained by a Slurm job array of ``nfstudy
worker`` tasks, re-submitted while configs are left. Slurm places the tasks; the queue
(:mod:`study.run.queue`) stays the one record of what is left to train.

Two generated ``sbatch`` scripts per round:

- the **array** of ``min(workers, configs left)`` tasks, each ``exec nfstudy worker`` (so
  the worker is the job's main process and gets Slurm's signals: SIGTERM on ``scancel``, a
  time limit or a preemption, and with a long ``--time`` a SIGUSR1 :data:`WARN_S` seconds
  before the limit, ``#SBATCH --signal=B:USR1@…``). The worker closes its run KILLED and
  puts the config back in the queue; with ``train.checkpoint_every`` the next worker resumes
  from the checkpoint under ``$NFSTUDY_HOME/checkpoints`` (on the shared filesystem).
- the **follow-up**, a one-CPU job that starts when the array has ended
  (``--dependency=afterany``): it runs the same ``nfstudy launch slurm`` again, which fills
  the queue again (exactly once: finished configs are skipped) and submits a new round when
  configs are left, up to ``--rounds`` rounds in all.

The storage URL and tracking URI travel in the job's environment (``sbatch`` exports the
submitting one), never in a script or a command line.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import TrialState

from study import paths
from study.errors import ConfigError, NfstudyError
from study.record.tracking import Tracking
from study.run.liveness import DEFAULT_STALE_AFTER_S, LOOK_S
from study.run.queue import RunQueue
from study.run.worker import recover_lost

#: Seconds before a time limit at which Slurm warns a task (SIGUSR1), when ``--time`` is at
#: least :data:`WARN_MIN_S`; shorter jobs rely on the SIGTERM Slurm sends at the limit.
WARN_S = 120
WARN_MIN_S = 600
#: Rounds (array + follow-up) one ``nfstudy launch slurm`` may chain by default.
ROUNDS = 3


@dataclass
class SlurmOptions:
    """What a user asks of Slurm (``nfstudy launch slurm``'s options)."""

    workers: int
    gpus_per_worker: int = 0
    cpus_per_worker: int | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    rounds: int = ROUNDS
    extra: list[str] = field(default_factory=list)
    """More ``#SBATCH`` options, as typed (``--sbatch=--qos=high``)."""


def time_limit_s(text: str) -> int:
    """Seconds of a Slurm time limit (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``).

    Raises:
        ConfigError: not a Slurm time.
    """
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in [*parts, *([days] if days else [])]) or len(parts) > 3:
        raise ConfigError(f"--time {text}: not a Slurm time limit; use HH:MM:SS (or D-HH:MM:SS)")
    numbers = [int(p) for p in parts]
    if days:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    else:  # MM, MM:SS or HH:MM:SS
        hours, minutes, seconds = ([0] * (3 - len(numbers)) + numbers) if len(numbers) == 3 else \
            (0, numbers[0], numbers[1] if len(numbers) == 2 else 0)
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def _sbatch_lines(options: SlurmOptions, job_name: str, log: Path) -> list[str]:
    lines = [f"#SBATCH --job-name={job_name}", f"#SBATCH --output={log}"]
    if options.partition:
        lines.append(f"#SBATCH --partition={options.partition}")
    if options.account:
        lines.append(f"#SBATCH --account={options.account}")
    return lines


def worker_script(study: str, options: SlurmOptions, tasks: int, log_dir: Path) -> str:
    """The job array's script: ``tasks`` tasks, each one ``nfstudy worker`` on the queue."""
    lines = ["#!/bin/bash", *_sbatch_lines(options, f"nfstudy-{study}", log_dir / "slurm-%A_%a.out"),
             f"#SBATCH --array=1-{tasks}", "#SBATCH --ntasks=1"]
    if options.time:
        lines.append(f"#SBATCH --time={options.time}")
        if time_limit_s(options.time) >= WARN_MIN_S:
            lines.append(f"#SBATCH --signal=B:USR1@{WARN_S}")
    if options.gpus_per_worker:
        lines.append(f"#SBATCH --gres=gpu:{options.gpus_per_worker}")
    if options.cpus_per_worker:
        lines.append(f"#SBATCH --cpus-per-task={options.cpus_per_worker}")
    lines += [f"#SBATCH {extra}" for extra in options.extra]
    command = [sys.executable, "-m", "study", "worker", "--study", study,
               "--nproc-per-node", str(max(1, options.gpus_per_worker))]
    lines += ["# NFSTUDY_HOME, NFSTUDY_STORAGE and MLFLOW_TRACKING_URI come from the submitting shell (sbatch",
              "# exports its environment): the URLs never appear in a script or a command line.",
              'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
              "exec " + shlex.join(command), ""]
    return "\n".join(lines)


def follow_up_script(study: str, options: SlurmOptions, launch: list[str], log_dir: Path) -> str:
    """The follow-up job's script: ``launch`` (the ``nfstudy launch slurm`` command of the
    next round) once the array has ended."""
    lines = ["#!/bin/bash", *_sbatch_lines(options, f"nfstudy-{study}-next", log_dir / "slurm-%j-next.out"),
             "#SBATCH --ntasks=1", "#SBATCH --cpus-per-task=1", "#SBATCH --time=00:30:00",
             "# Starts when the array has ended; submits the next round when configs are left.",
             "exec " + shlex.join(launch), ""]
    return "\n".join(lines)


def sbatch_binary() -> str:
    """``sbatch`` on ``$PATH``.

    Raises:
        NfstudyError: Slurm's client commands are not installed here.
    """
    found = shutil.which("sbatch")
    if found is None:
        raise NfstudyError("nfstudy launch slurm: `sbatch` is not on $PATH; run it on a Slurm login node "
                           "(or use --dry-run to see the scripts)")
    return found


def submit(script: str, path: Path, env: dict[str, str], dependency: str | None = None) -> str:
    """Write ``script`` to ``path`` and submit it; the job id.

    Raises:
        NfstudyError: sbatch refused it (its message is in the error).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    command = [sbatch_binary(), "--parsable", *([f"--dependency=afterany:{dependency}"] if dependency else []),
               str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        raise NfstudyError(f"sbatch refused {path.name}: {' '.join(done.stderr.split())}")
    return done.stdout.strip().split(";")[0]


def settle_running(queue: RunQueue, tracking: Tracking, hashes: set[str], say: Callable[[str], None]) -> None:
    """In a follow-up job (the array has ended): wait until no config of ``hashes`` is
    RUNNING, recovering those whose worker died without closing them (a task killed
    outright, a node lost), so they count as left. At most a stale heartbeat's bound."""
    deadline = time.monotonic() + DEFAULT_STALE_AFTER_S + 2 * LOOK_S
    while True:
        recovered = recover_lost(queue, tracking)
        if recovered:
            say(f"{recovered} runs of dead workers put back in the queue")
        running = [t for t in queue.trials([TrialState.RUNNING]) if t.user_attrs.get("config_hash") in hashes]
        if not running or time.monotonic() > deadline:
            return
        time.sleep(LOOK_S)


def waiting(queue: RunQueue, hashes: set[str]) -> int:
    """How many configs of ``hashes`` are WAITING in the queue."""
    return len({t.user_attrs.get("config_hash") for t in queue.trials([TrialState.WAITING])} & hashes)


def job_env(queue: RunQueue, tracking: Tracking) -> dict[str, str]:
    """The environment ``sbatch`` exports to the jobs: this one, with the queue's storage,
    the tracking URI and ``$NFSTUDY_HOME`` pinned (a worker must find the same ones)."""
    return {**os.environ, "NFSTUDY_STORAGE": queue.url, "MLFLOW_TRACKING_URI": tracking.uri,
            "NFSTUDY_HOME": str(paths.home())}


def scripts_dir(study: str) -> Path:
    """Where the generated scripts and the tasks' logs go: ``$NFSTUDY_HOME/logs/<study>/slurm``."""
    return paths.confined("logs", study) / "slurm"
