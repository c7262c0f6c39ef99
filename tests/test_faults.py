"""Fault tests of the execution engine: kill -9 of a worker and of the
coordinator, two kills in one grid, 8 workers on a fresh store, a run that raises, a run
that diverges, Ctrl-C. Each ends with every config FINISHED exactly once in MLflow,
nothing lost, and no run left RUNNING. Real processes, real stores, smoke-sized runs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from study.errors import TrackingError
from study.run.queue import RunQueue

REPO = Path(__file__).resolve().parents[1]


def grid_study(study_file, name: str, clippings: int, seeds: int = 2, steps: int | None = None) -> Path:
    values = ", ".join(str(0.01 * (i + 1)) for i in range(clippings))
    fixed = f"fixed: {{train.steps: {steps}}}\n" if steps else ""
    return study_file(f"name: {name}\nbase: presets/smoke.yaml\n{fixed}grid:\n  agc.clipping: [{values}]\n"
                      f"seeds: {list(range(seeds))}\n", name=f"{name}.yaml")


def start(*args: str) -> subprocess.Popen:
    """``nfstudy ARGS`` as a subprocess (its own session, so a test can signal it alone)."""
    return subprocess.Popen([sys.executable, "-m", "study", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def running_trials(study: str, timeout: float = 180, at_least: int = 1) -> list:
    """Wait until ``at_least`` trials of the study's queue are RUNNING with an MLflow run
    (mid-run); return them."""
    deadline = time.monotonic() + timeout
    queue = None
    while time.monotonic() < deadline:
        try:
            queue = queue or RunQueue(study)
            trials = [t for t in queue.trials([TrialState.RUNNING]) if "mlflow_run_id" in t.user_attrs]
            if len(trials) >= at_least:
                return trials
        except TrackingError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING trial in {timeout}s")


def child_runs(tracking_uri: str, study: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id], filter_string="tags.`nfstudy.role` = 'child'",
                              max_results=5000)


def assert_exactly_once(tracking_uri: str, study: str, expected: int) -> list:
    """Every config FINISHED exactly once, none RUNNING; returns the child runs."""
    runs = child_runs(tracking_uri, study)
    finished = Counter(r.data.tags["nfstudy.config_hash"] for r in runs if r.info.status == "FINISHED")
    assert len(finished) == expected, f"{len(finished)} configs finished, expected {expected}"
    assert set(finished.values()) == {1}, f"a config finished twice: {finished.most_common(2)}"
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    return runs


def local_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.slow
def test_kill_9_of_a_worker_mid_run_is_recovered(study_file, nfstudy_home):
    path = grid_study(study_file, "kill-worker", clippings=2)
    coordinator = start("run", str(path), "--workers", "2")
    victim = running_trials("kill-worker")[0]
    os.kill(victim.system_attrs["nfstudy:owner"]["pid"], signal.SIGKILL)
    code, out = finish(coordinator)
    assert code == 0, out
    runs = assert_exactly_once(local_uri(nfstudy_home), "kill-worker", 4)
    killed = [r for r in runs if r.data.tags.get("nfstudy.queue_trial", "").endswith(f"#{victim._trial_id}")]
    assert [r.info.status for r in killed] == ["KILLED"]
    assert "worker lost" in killed[0].data.tags["nfstudy.error"]


@pytest.mark.slow
def test_kill_9_of_the_coordinator_then_run_again(study_file, nfstudy_home):
    path = grid_study(study_file, "kill-coordinator", clippings=2)
    coordinator = start("run", str(path), "--workers", "2")
    owners = {t.system_attrs["nfstudy:owner"]["pid"] for t in running_trials("kill-coordinator")}
    os.kill(coordinator.pid, signal.SIGKILL)
    coordinator.wait()
    # Orphaned workers notice their coordinator is gone, close their run and stop.
    deadline = time.monotonic() + 60
    while not all(process_gone(pid) for pid in owners):
        assert time.monotonic() < deadline, "workers outlived their coordinator"
        time.sleep(0.2)
    code, out = finish(start("run", str(path), "--workers", "2"))
    assert code == 0, out
    runs = assert_exactly_once(local_uri(nfstudy_home), "kill-coordinator", 4)
    assert any(r.info.status == "KILLED" for r in runs)


@pytest.mark.slow
def test_grid_of_24_survives_two_random_kill_9s(study_file, nfstudy_home):
    """The bar: 24 digits runs, --workers 2, two kill -9s at random points."""
    path = grid_study(study_file, "two-kills", clippings=12)
    rng = random.Random(7)
    coordinator = start("run", str(path), "--workers", "2")
    killed = []
    for _ in range(2):
        time.sleep(rng.uniform(0.0, 6.0))
        victim = running_trials("two-kills")[0]
        pid = victim.system_attrs["nfstudy:owner"]["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(victim._trial_id)
        while not process_gone(pid):
            time.sleep(0.1)
    code, out = finish(coordinator, timeout=900)
    assert code == 0, out
    runs = assert_exactly_once(local_uri(nfstudy_home), "two-kills", 24)
    queue = RunQueue("two-kills")
    assert not queue.trials([TrialState.WAITING, TrialState.RUNNING])
    lost = [r for r in runs if r.info.status == "KILLED"]
    assert len(lost) == 2, [r.data.tags.get("nfstudy.error") for r in lost]


@pytest.mark.slow
def test_eight_workers_on_a_fresh_store(study_file, nfstudy_home):
    path = grid_study(study_file, "eight", clippings=4)
    assert not nfstudy_home.exists()
    code, out = finish(start("run", str(path), "--workers", "8"))
    assert code == 0, out
    assert_exactly_once(local_uri(nfstudy_home), "eight", 8)
    client = MlflowClient(local_uri(nfstudy_home))
    assert [e.name for e in client.search_experiments()].count("eight") == 1
    parents = client.search_runs([client.get_experiment_by_name("eight").experiment_id],
                                 filter_string="tags.`nfstudy.role` = 'parent'")
    assert len(parents) == 1


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(study_file, nfstudy_home):
    # Runs of a few seconds each, so the signal lands mid-run even on a fast, idle machine.
    path = grid_study(study_file, "ctrl-c", clippings=2, steps=200)
    coordinator = start("run", str(path), "--workers", "2")
    running_trials("ctrl-c")
    coordinator.send_signal(signal.SIGINT)
    code, out = finish(coordinator, timeout=120)
    assert code == 130, out
    runs = child_runs(local_uri(nfstudy_home), "ctrl-c")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert any(r.info.status == "KILLED" for r in runs)
    code, out = finish(start("run", str(path), "--workers", "2"))
    assert code == 0, out
    assert_exactly_once(local_uri(nfstudy_home), "ctrl-c", 4)


def test_a_run_that_raises_is_failed_and_retried_by_the_next_run(study_file, nfstudy_home, tmp_path):
    from study.cli import main

    empty = tmp_path / "torn-cifar"  # the files preflight looks for, torn: reading them in train raises
    batches = empty / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        (batches / name).write_bytes(b"torn")
    path = study_file(f"name: raises\nbase: presets/smoke.yaml\narms:\n  ok: {{}}\n"
                      f"  broken: {{data.name: cifar10, data.root: '{empty}'}}\nseeds: [0]\n")
    assert main(["run", str(path)]) == 1
    runs = child_runs(local_uri(nfstudy_home), "raises")
    status = {r.data.tags["nfstudy.arm"]: r.info.status for r in runs}
    assert status == {"ok": "FINISHED", "broken": "FAILED"}
    queue = RunQueue("raises")
    assert [t.state for t in queue.trials() if t.user_attrs["arm"] == "broken"] == [TrialState.FAIL]
    assert main(["run", str(path)]) == 1  # re-queued, fails again; ok is not trained again
    assert [t.state for t in queue.trials() if t.user_attrs["arm"] == "broken"] == [TrialState.FAIL] * 2
    assert_exactly_once(local_uri(nfstudy_home), "raises", 1)


def test_a_diverged_run_is_a_finished_result_and_the_grid_goes_on(study_file, nfstudy_home):
    from study.cli import main

    path = study_file("name: diverges\nbase: presets/smoke.yaml\narms:\n  ok: {}\n"
                      "  huge-lr: {optim.lr: 1.0e+6, agc.clipping: null}\nseeds: [0]\n")
    assert main(["run", str(path)]) == 0
    runs = assert_exactly_once(local_uri(nfstudy_home), "diverges", 2)
    outcome = {r.data.tags["nfstudy.arm"]: r.data.tags["nfstudy.outcome"] for r in runs}
    assert outcome == {"ok": "completed", "huge-lr": "diverged"}


@pytest.mark.slow
def test_kill_9_of_a_search_then_search_again_marks_the_lost_trial(study_file, nfstudy_home, capsys):
    import optuna

    from study import paths
    from study.cli import main

    path = study_file("name: lost-search\nbase: presets/smoke.yaml\nfixed: {train.steps: 300}\nseeds: [0]\n"
                      "search:\n  agc.clipping: {low: 0.001, high: 1.0, log: true}\n  pruner: none\n",
                      name="lost-search.yaml")
    search = start("search", str(path), "--trials", "1")
    deadline, running = time.monotonic() + 180, []
    while not running:
        assert time.monotonic() < deadline and search.poll() is None, "no RUNNING trial with an MLflow run"
        time.sleep(0.2)
        names = [n for n in optuna.get_all_study_names(paths.optuna_storage()) if "lost-search" in n] \
            if (nfstudy_home / "optuna.db").exists() else []
        if names:
            study = optuna.load_study(study_name=names[0], storage=paths.optuna_storage())
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "mlflow_run_id" in t.user_attrs]
    os.kill(search.pid, signal.SIGKILL)
    search.wait()

    assert main(["search", str(path), "--trials", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "1 trials existed (1 left RUNNING by a dead search process, now FAIL), 1 added" in out
    lost = study.trials[running[0].number]
    assert lost.state == TrialState.FAIL and lost.user_attrs["outcome"] == "lost"
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    run = MlflowClient(local_uri(nfstudy_home)).get_run(lost.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and f"pid {search.pid}" in run.data.tags["nfstudy.error"]
