"""Fault tests of the execution engine: kill -9 of a worker (here, during a DDP run, and on
another machine) and of the coordinator, two kills in one grid, PostgreSQL and the MLflow
server restarted mid-grid, coordinators started together, many workers on one database, a
run that raises, a run that diverges, Ctrl-C and SIGTERM. Each ends with every config
FINISHED exactly once in MLflow, nothing lost, and no run left RUNNING. Real processes,
real stores (PostgreSQL and ``mlflow server`` from tests/servers.py), smoke-sized runs.
Times to recovery are printed (``pytest -s``)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from processes import children, cmdline, group

from study.errors import TrackingError
from study.run.queue import RunQueue

REPO = Path(__file__).resolve().parents[1]


def grid_study(study_file, name: str, clippings: int, seeds: int = 2, steps: int | None = None) -> Path:
    values = ", ".join(str(0.01 * (i + 1)) for i in range(clippings))
    fixed = f"fixed: {{train.steps: {steps}}}\n" if steps else ""
    return study_file(f"name: {name}\nbase: presets/smoke.yaml\n{fixed}grid:\n  agc.clipping: [{values}]\n"
                      f"seeds: {list(range(seeds))}\n", name=f"{name}.yaml")


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A failed test leaves no nfstudy process behind (each runs in its own session)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``nfstudy ARGS`` as a subprocess (its own session, so a test can signal it alone);
    ``env`` adds to the environment (e.g. another machine's ``NFSTUDY_HOME``)."""
    proc = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    _STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def running_trials(study: str, timeout: float = 180, at_least: int = 1, storage: str | None = None) -> list:
    """Wait until ``at_least`` trials of the study's queue are RUNNING with an MLflow run
    (mid-run); return them."""
    deadline = time.monotonic() + timeout
    queue = None
    while time.monotonic() < deadline:
        try:
            queue = queue or RunQueue(study, storage)
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
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(study_file, nfstudy_home, signum):
    # Runs of a few seconds each, so the signal lands mid-run even on a fast, idle machine.
    path = grid_study(study_file, "ctrl-c", clippings=2, steps=200)
    coordinator = start("run", str(path), "--workers", "2")
    running_trials("ctrl-c")
    coordinator.send_signal(signum)
    code, out = finish(coordinator, timeout=120)
    assert code == 130, out
    assert "not finished (interrupted; the next run resumes)" in " ".join(out.split())
    assert re.search(r"ctrl-c: [0-3]/4 done; run the same command to resume", out), out
    if signum == signal.SIGTERM:  # the resume below is the same after either signal
        assert not [r for r in child_runs(local_uri(nfstudy_home), "ctrl-c") if r.info.status == "RUNNING"]
        return
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

    from study.cli import main
    from study.run.search import open_storage

    path = study_file("name: lost-search\nbase: presets/smoke.yaml\nfixed: {train.steps: 300}\nseeds: [0]\n"
                      "search:\n  agc.clipping: {low: 0.001, high: 1.0, log: true}\n  pruner: none\n",
                      name="lost-search.yaml")
    search = start("search", str(path), "--trials", "1")
    deadline, running = time.monotonic() + 180, []
    while not running:
        assert time.monotonic() < deadline and search.poll() is None, "no RUNNING trial with an MLflow run"
        time.sleep(0.2)
        # Opened as nfstudy opens it (schema creation under a lock): a bare Optuna probe
        # raced the search creating the tables ("table trials already exists").
        store = open_storage() if (nfstudy_home / "optuna.db").exists() else None
        names = [n for n in optuna.get_all_study_names(store) if "lost-search" in n] if store else []
        if names:
            study = optuna.load_study(study_name=names[0], storage=store)
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


# -- many machines: PostgreSQL queue, MLflow server -------------------------------------------


def machine(tmp_path: Path, name: str, **env: str) -> dict[str, str]:
    """The environment of a process "on machine ``name``": its own home (spool, logs)."""
    return {"NFSTUDY_HOME": str(tmp_path / f"machine-{name}"), **env}


def queue_trials(study: str, storage: str, states=None) -> list:
    try:
        return RunQueue(study, storage).trials(states)
    except TrackingError:
        return []


def wait_for(condition, timeout: float, what: str, procs=()) -> float:
    """Poll ``condition()`` until true; return the time it became true (monotonic)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        for proc in procs:
            assert proc.poll() is None, f"{what}: a process exited early: {proc.communicate()[0][-3000:]}"
        time.sleep(0.2)
    return time.monotonic()


def assert_queue_drained(study: str, storage: str) -> None:
    assert not queue_trials(study, storage, [TrialState.WAITING, TrialState.RUNNING]), "work left in the queue"


@pytest.mark.slow
def test_postgresql_restarted_mid_grid_stops_no_process(study_file, tmp_path):
    """PostgreSQL (queue and MLflow's store) stopped for 10 s while a coordinator and two
    `nfstudy worker` "on other machines" train a 12-run grid."""
    from servers import mlflow_server, postgres_server

    path = grid_study(study_file, "pg-restart", clippings=6, steps=20)
    with postgres_server() as pg:
        queue_url = pg.create_database("nfstudy")
        with mlflow_server(pg.create_database("mlflow")) as tracking_uri:
            urls = ("--storage", queue_url, "--tracking-uri", tracking_uri)
            coordinator = start("run", str(path), *urls, env=machine(tmp_path, "a"))
            wait_for(lambda: queue_trials("pg-restart", queue_url), 180, "queue filled", [coordinator])
            workers = [start("worker", "--study", "pg-restart", *urls, env=machine(tmp_path, f"b{i}")) for i in (1, 2)]
            procs = [coordinator, *workers]

            def completed() -> int:
                return len(queue_trials("pg-restart", queue_url, [TrialState.COMPLETE]))

            wait_for(lambda: completed() >= 2, 300, "two runs finished", procs)
            before = completed()
            pg.restart(down_s=10)
            back = time.monotonic()
            recovered = wait_for(lambda: completed() > before, 300, "a run finished after the restart", procs)
            print(f"\nPostgreSQL down 10 s: first run finished {recovered - back:.1f} s after it came back")
            results = [finish(proc, timeout=600) for proc in procs]
            assert [code for code, _ in results] == [0, 0, 0], [out[-3000:] for _, out in results]
            assert not [out for _, out in results if "Traceback" in out]
            assert_exactly_once(tracking_uri, "pg-restart", 12)
            assert_queue_drained("pg-restart", queue_url)


@pytest.mark.slow
def test_mlflow_server_killed_and_restarted_mid_grid_records_everything_once(study_file, tmp_path):
    from servers import free_port, mlflow_server, postgres_server

    path = grid_study(study_file, "server-restart", clippings=2, steps=20)
    backend, port = f"sqlite:///{tmp_path / 'server.db'}", free_port()
    with postgres_server() as pg:
        queue_url = pg.create_database("nfstudy")
        tracking_uri = f"http://127.0.0.1:{port}"
        urls = ("--storage", queue_url, "--tracking-uri", tracking_uri)
        homes = [machine(tmp_path, "a"), machine(tmp_path, "b")]
        with mlflow_server(backend, port=port):
            coordinator = start("run", str(path), *urls, env=homes[0])
            wait_for(lambda: queue_trials("server-restart", queue_url), 180, "queue filled", [coordinator])
            worker = start("worker", "--study", "server-restart", *urls, env=homes[1])
            client = MlflowClient(tracking_uri)
            wait_for(lambda: [r for r in child_runs(tracking_uri, "server-restart") if r.info.status == "FINISHED"],
                     300, "a run finished", [coordinator, worker])
            # Leaving the block kills the server (its whole session) while runs are left to do.
        assert coordinator.poll() is None and worker.poll() is None, "the grid ended before the server was killed"
        time.sleep(10)
        with mlflow_server(backend, port=port):
            back = time.monotonic()
            results = [finish(proc, timeout=600) for proc in (coordinator, worker)]
            assert [code for code, _ in results] == [0, 0], [out[-3000:] for _, out in results]
            # A worker still running when the server came back uploaded its spool itself; one
            # that ended while it was away left it for `nfstudy sync` (a no-op after the first).
            for home in homes:
                code, out = finish(start("sync", "--tracking-uri", tracking_uri, env=home))
                assert code == 0, out
            drained = time.monotonic()
            assert_exactly_once(tracking_uri, "server-restart", 4)
            print(f"\nMLflow server down 10 s: every result in MLflow {drained - back:.1f} s after it came back")
            runs = child_runs(tracking_uri, "server-restart")
            assert all(client.get_metric_history(r.info.run_id, "train/loss")
                       for r in runs if r.info.status == "FINISHED")
        for home in homes:
            assert not list((Path(home["NFSTUDY_HOME"]) / "spool").glob("*.jsonl"))
        assert any((Path(home["NFSTUDY_HOME"]) / "spool" / "uploaded").glob("*.jsonl") for home in homes)
        assert_queue_drained("server-restart", queue_url)


@pytest.mark.slow
def test_a_worker_killed_on_another_machine_is_requeued_by_a_process_that_never_saw_it(study_file, tmp_path):
    from servers import postgres_server

    from study.config.expand import plan
    from study.config.study_file import load_study
    from study.record.tracking import Tracking
    from study.run.coordinator import prepare

    path = grid_study(study_file, "remote-kill", clippings=1, seeds=1, steps=40)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with postgres_server() as pg:
        queue_url = pg.create_database("nfstudy")
        spec = load_study(path)
        prepare(spec, plan(spec), Tracking(tracking_uri), RunQueue(spec.name, queue_url, create=True))
        urls = ("--storage", queue_url, "--tracking-uri", tracking_uri)
        # Machine B beats every 2 s, so its runs are stale after 12 s: whoever looks applies B's bound.
        victim = start("worker", "--study", "remote-kill", *urls,
                       env=machine(tmp_path, "b", NFSTUDY_HOST_ID="machine-b", NFSTUDY_HEARTBEAT_S="2"))
        (trial,) = running_trials("remote-kill", storage=queue_url)
        bound = trial.system_attrs["nfstudy:owner"]["stale_after_s"]
        assert bound == 12
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.wait()
        observer = start("worker", "--study", "remote-kill", *urls, env=machine(tmp_path, "c"))

        def requeued() -> bool:
            return RunQueue("remote-kill", queue_url).trial(trial._trial_id).state == TrialState.FAIL

        found = wait_for(requeued, 4 * bound, "the lost run re-queued", [observer])
        print(f"\nworker on another machine killed: re-queued {found - killed:.1f} s later "
              f"(staleness bound {bound:.0f} s)")
        assert found - killed <= 2 * bound
        code, out = finish(observer)
        assert code == 0, out
        lost = RunQueue("remote-kill", queue_url).trial(trial._trial_id)
        assert lost.user_attrs["ended"] == "lost" and f"pid {victim.pid}" in lost.user_attrs["error"]
        runs = assert_exactly_once(tracking_uri, "remote-kill", 1)
        assert [r.info.status for r in runs].count("KILLED") == 1


@pytest.mark.slow
@pytest.mark.parametrize("same_plan", [True, False], ids=["same-plan", "other-set"])
def test_two_coordinators_started_together_on_a_fresh_store(study_file, nfstudy_home, same_plan):
    path = grid_study(study_file, "together", clippings=2)
    sets = ([], []) if same_plan else (["--set", "train.steps=3"], ["--set", "train.steps=5"])
    assert not nfstudy_home.exists()
    coordinators = [start("run", str(path), *extra) for extra in sets]
    results = [finish(proc) for proc in coordinators]
    assert [code for code, _ in results] == [0, 0], [out[-3000:] for _, out in results]
    runs = assert_exactly_once(local_uri(nfstudy_home), "together", 4 if same_plan else 8)
    client = MlflowClient(local_uri(nfstudy_home))
    experiment_id = client.get_experiment_by_name("together").experiment_id
    assert len(client.search_runs([experiment_id], "tags.`nfstudy.role` = 'parent'")) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == \
        {client.search_runs([experiment_id], "tags.`nfstudy.role` = 'parent'")[0].info.run_id}
    if not same_plan:
        assert sorted(r.data.params["train.steps"] for r in runs) == ["3"] * 4 + ["5"] * 4


#: Workers of the many-workers test: 8 in CI; ``NFSTUDY_TEST_FLEET=32`` for the measurement
#: by hand (32 processes need about 12 GB of memory).
FLEET = int(os.environ.get("NFSTUDY_TEST_FLEET", "8"))


@pytest.mark.slow
def test_many_workers_on_one_postgresql(study_file, tmp_path):
    """Half the fleet are local workers of `nfstudy run`, half `nfstudy worker --workers N`
    on another "machine"; one smoke run per worker."""
    from servers import postgres_server

    path = grid_study(study_file, "fleet", clippings=FLEET // 2)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    half = str(FLEET // 2)
    with postgres_server() as pg:
        queue_url = pg.create_database("nfstudy")
        urls = ("--storage", queue_url, "--tracking-uri", tracking_uri)
        coordinator = start("run", str(path), "--workers", half, *urls, env=machine(tmp_path, "a"))
        wait_for(lambda: queue_trials("fleet", queue_url), 180, "queue filled", [coordinator])
        fleet = start("worker", "--study", "fleet", "--workers", half, *urls, env=machine(tmp_path, "b"))
        peak, started = 0, time.monotonic()
        while coordinator.poll() is None or fleet.poll() is None:
            peak = max(peak, pg.connections())
            time.sleep(0.5)
        wall = time.monotonic() - started
        results = [finish(proc) for proc in (coordinator, fleet)]
        assert [code for code, _ in results] == [0, 0], [out[-3000:] for _, out in results]
        assert_exactly_once(tracking_uri, "fleet", FLEET)
        assert_queue_drained("fleet", queue_url)
        owners = {t.system_attrs["nfstudy:owner"]["pid"] for t in queue_trials("fleet", queue_url)}
        assert len(owners) >= 2  # the work was spread over the fleet
        logs = [log.read_text() for log in tmp_path.glob("machine-*/logs/fleet/worker-*.log")]
        per_run = sorted(float(ms) for text in logs  # workers that trained something
                         for runs, ms in re.findall(r"; (\d+) completed.*per run: queue ([0-9.]+) ms", text)
                         if int(runs))
        print(f"\n{FLEET} workers on one PostgreSQL, {FLEET} runs in {wall:.0f} s: peak {peak} "
              f"connections; queue time per run (median over workers) {per_run[len(per_run) // 2]:.0f} ms")


@pytest.mark.slow
def test_kill_9_of_a_worker_during_a_ddp_run_takes_its_ranks_with_it(study_file, nfstudy_home):
    path = study_file("name: ddp-kill\nbase: presets/smoke.yaml\nfixed: {train.steps: 2000, data.batch_size: 64}\n"
                      "seeds: [0]\n", name="ddp-kill.yaml")
    run = start("run", str(path), "--nproc-per-node", "2")

    def torchrun() -> list[int]:
        return [pid for pid in children(run.pid) if b"torch.distributed.run" in cmdline(pid)]

    wait_for(lambda: torchrun() and len(children(torchrun()[0])) >= 2, 180, "torchrun and two ranks", [run])
    leader = torchrun()[0]
    ranks = children(leader)  # each in a session of its own (torchrun starts them so)
    os.kill(run.pid, signal.SIGKILL)
    killed = time.monotonic()
    run.wait()
    gone = wait_for(lambda: not group(leader) and not [pid for pid in ranks if group(pid)], 60,
                    "torchrun and its ranks gone")
    print(f"\nworker killed during a 2-rank run: its ranks gone {gone - killed:.1f} s later")
