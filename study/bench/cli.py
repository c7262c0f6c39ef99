"""The command line's figures of ``nfstudy bench``: how fast ``nfstudy list`` and ``nfstudy
show quickstart`` answer on a warm store of 1,000 finished runs, against ``nfstudy --version``
(the interpreter and the CLI's own start) measured in the same rounds.

The store is a real MLflow SQLite file: MLflow creates it and one child run of quickstart;
that run's rows are then copied (new ids; quickstart's copies carry its plan's hashes, the
other studies' new ones) to 1,000 runs over the built-in studies, because creating them one by one through MLflow
would take minutes. "Warm": each command has run once before the rounds (its plan cached).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from study.bench.harness import Result, Settings, interleaved, judge
from study.record.tags import CODE, HASH, ROLE

#: The answer time the command line aims at, in seconds.
ANSWER_TARGET_S = 1.5
RUNS = 1000


def cli_figures(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    """``cli_list_s`` and ``cli_show_s``: seconds to answer, judged on the value (≤ 1.5 s),
    each beside its ratio to ``nfstudy --version``."""
    runs = 50 if settings.quick else RUNS
    with tempfile.TemporaryDirectory(prefix="nfstudy-bench-cli-") as home:
        log(f"cli: a store of {runs} finished runs")
        _fill_store(Path(home), runs)
        env = {**os.environ, "NFSTUDY_HOME": home, "PYTHONPATH": _package_root(), "COLUMNS": "200"}
        env.pop("MLFLOW_TRACKING_URI", None)
        commands = {"version": ["--version"], "list": ["list"], "show": ["show", "quickstart"]}
        timers = {name: _timer(args, env) for name, args in commands.items()}
        for timer in timers.values():
            timer()  # warm: plans cached, files in the page cache
        rounds = interleaved({name: lambda t=t: {"s": t()} for name, t in timers.items()},
                             1 if settings.quick else 5)
    seconds = {name: [r["s"] for r in values] for name, values in rounds.items()}
    note = f"{runs} finished runs; baseline: nfstudy --version (interpreter and CLI start)"
    return [judge(f"cli_{name}_s", seconds[name], seconds["version"], "s", target=ANSWER_TARGET_S, on="value",
                  note=note) for name in ("list", "show")]


def _timer(args: list[str], env: dict[str, str]) -> Callable[[], float]:
    def measure() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "study", *args], env=env, check=True, capture_output=True, timeout=300)
        return time.perf_counter() - start

    return measure


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _fill_store(home: Path, runs: int) -> None:
    """An MLflow SQLite store under ``home`` with ``runs`` FINISHED child runs of 8 studies."""
    from study.config.code_fingerprint import code_fingerprint
    from study.config.expand import plan
    from study.config.study_file import list_studies, load_study
    from study.record.tracking import Tracking

    tracking = Tracking(f"sqlite:///{home}/mlflow.db")
    studies = list_studies()
    experiments = {name: tracking.ensure_study(name, "")[0] for name in studies}
    hashes = [r.config_hash for r in plan(load_study("quickstart"))]
    client = tracking.client
    seed_run = client.create_run(experiments["quickstart"], tags={ROLE: "child", HASH: hashes[0],
                                                                  CODE: code_fingerprint()})
    client.log_param(seed_run.info.run_id, "agc.clipping", "0.01")
    client.log_metric(seed_run.info.run_id, "val/top1", 0.9)
    client.set_terminated(seed_run.info.run_id, "FINISHED")
    with sqlite3.connect(home / "mlflow.db") as db:
        columns = [row[1] for row in db.execute("pragma table_info(runs)")]
        template = db.execute(f"select {', '.join(columns)} from runs where run_uuid = ?",
                              (seed_run.info.run_id,)).fetchone()
        tags = db.execute("select key, value from tags where run_uuid = ?", (seed_run.info.run_id,)).fetchall()
        for i in range(runs - 1):
            run_id = uuid.uuid4().hex
            study = studies[i % len(studies)]
            row = dict(zip(columns, template), run_uuid=run_id, experiment_id=experiments[study])
            db.execute(f"insert into runs ({', '.join(columns)}) values ({', '.join('?' * len(columns))})",
                       [row[c] for c in columns])
            config_hash = hashes[i % len(hashes)] if study == "quickstart" else uuid.uuid4().hex[:12]
            db.executemany("insert into tags (key, value, run_uuid) values (?, ?, ?)",
                           [(k, config_hash if k == HASH else v, run_id) for k, v in tags])
