"""``nfstudy launch slurm``, ``enqueue`` and ``status`` on a real single-node Slurm cluster
(tests/slurm.py: Debian's munge, slurmctld and slurmd), and the NFS-style journal queue.

Every command is typed as the README's "On a Slurm cluster" section types it. Each test
ends with every config FINISHED exactly once in MLflow. Measured times are printed
(``pytest -s``): the per-run overhead under Slurm and the time from a cancelled task to its
config running again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from slurm import slurm_available, slurm_cluster
from test_faults import assert_exactly_once, local_uri

from study.record.tags import OWNER_ATTR
from study.run.queue import RunQueue

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    why = slurm_available()
    if why:
        pytest.skip(why)
    with slurm_cluster() as running:
        yield running


def nfstudy(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, str]:
    """``nfstudy ARGS`` as the user types it; exit code and output."""
    done = subprocess.run([sys.executable, "-m", "study", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def wait_for(what, timeout: float, step: float = 0.5):
    """Poll ``what()`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(step)
    raise TimeoutError(f"not within {timeout} s: {what.__doc__ or what}")


def queue_trials(study: str, states) -> list:
    try:
        return RunQueue(study).trials(states)
    except Exception:  # noqa: BLE001 - not created yet
        return []


@pytest.mark.slow
def test_a_grid_of_six_runs_on_two_array_tasks_finishes_exactly_once(cluster, study_file, nfstudy_home):
    path = study_file("name: six\nbase: presets/smoke.yaml\ngrid:\n  agc.clipping: [0.01, 0.02, 0.03]\n"
                      "seeds: [0, 1]\n", name="six.yaml")
    started = time.time()
    code, out = nfstudy("launch", "slurm", str(path), "--workers", "2", env=cluster.env)
    launched = time.time()
    assert code == 0, out
    assert "submitted job array" in out and "(2 workers) for 6 waiting configs" in out, out
    cluster.wait_idle(timeout=600)  # the array, then the follow-up job (which submits nothing)
    runs = assert_exactly_once(local_uri(nfstudy_home), "six", 6)
    assert {r.info.status for r in runs} == {"FINISHED"}
    trials = queue_trials("six", [TrialState.COMPLETE])
    assert len({t.system_attrs[OWNER_ATTR]["job"] for t in trials}) == 2  # both array tasks trained
    # The follow-up job found nothing left: it said so in its log and submitted nothing.
    logs = nfstudy_home / "logs" / "six" / "slurm"
    assert "nothing to submit" in "".join(p.read_text() for p in logs.glob("*-next.out"))
    code, out = nfstudy("launch", "slurm", str(path), "--workers", "2", env=cluster.env)
    assert code == 0 and "nothing to submit" in out, out
    assert not cluster.jobs()
    code, out = nfstudy("status", str(path), "--json")
    assert code == 0, out
    status = json.loads(out)
    assert status["counts"]["finished"] == 6 and status["counts"]["waiting"] == 0
    by_run = {r.data.tags["nfstudy.config_hash"]: r for r in runs}
    overhead = [(t.datetime_complete - t.datetime_start).total_seconds()
                - by_run[t.user_attrs["config_hash"]].data.metrics["time/total_s"] for t in trials]
    first_claim = min(t.datetime_start.timestamp() for t in trials)
    print(f"\nslurm: the launch command {launched - started:.1f} s (enqueue + sbatch); its start -> first claim "
          f"{first_claim - started:.1f} s; per run, claim -> FINISHED minus training: median "
          f"{sorted(overhead)[len(overhead) // 2]:.2f} s, max {max(overhead):.2f} s")


@pytest.mark.slow
def test_a_cancelled_task_puts_its_run_back_and_another_task_finishes_it(cluster, study_file, nfstudy_home):
    # Runs of tens of seconds (2 images a step, 500 to evaluate each epoch), so scancel lands mid-run.
    path = study_file("name: cancel\nbase: presets/smoke.yaml\nfixed: {data.name: fake, data.num_examples: 64, "
                      "train.steps: 60}\nseeds: [0, 1]\n", name="cancel.yaml")
    code, out = nfstudy("launch", "slurm", str(path), "--workers", "2", env=cluster.env)
    assert code == 0, out

    def both_running():
        trials = [t for t in queue_trials("cancel", [TrialState.RUNNING]) if "mlflow_run_id" in t.user_attrs]
        return trials if len(trials) == 2 else None

    victim = wait_for(both_running, timeout=300)[0]
    code, out = nfstudy("status", str(path))
    assert code == 0 and "2 running" in out and "job " in out, out
    task = victim.system_attrs[OWNER_ATTR]["job"]
    cancelled = time.time()
    cluster.run("scancel", task)

    def successor(state):
        def find():
            return [t for t in queue_trials("cancel", [state]) if t.user_attrs["config_hash"] ==
                    victim.user_attrs["config_hash"] and t.number > victim.number]
        return find

    wait_for(lambda: successor(TrialState.WAITING)() or successor(TrialState.RUNNING)()
             or successor(TrialState.COMPLETE)(), timeout=120, step=0.2)
    requeued = time.time()
    again = wait_for(lambda: successor(TrialState.RUNNING)() or successor(TrialState.COMPLETE)(), timeout=400,
                     step=0.2)[0]
    running_again = again.datetime_start.timestamp()
    cluster.wait_idle(timeout=600)
    runs = assert_exactly_once(local_uri(nfstudy_home), "cancel", 2)
    mine = [r for r in runs if r.data.tags["nfstudy.config_hash"] == victim.user_attrs["config_hash"]]
    assert sorted(r.info.status for r in mine) == ["FINISHED", "KILLED"]
    closed = RunQueue("cancel").trial(victim._trial_id)
    assert closed.state == TrialState.FAIL and closed.user_attrs["ended"] == "interrupted"
    finisher = RunQueue("cancel").trial(again._trial_id).system_attrs[OWNER_ATTR]["job"]
    assert finisher != task  # the other array task took it
    print(f"\nslurm: scancel -> config back in the queue {requeued - cancelled:.1f} s; -> running again "
          f"{running_again - cancelled:.1f} s (the other task finished its own run first)")


@pytest.mark.slow
def test_a_task_at_its_time_limit_resumes_from_its_checkpoint(cluster, study_file, nfstudy_home):
    # Two steps an epoch, a checkpoint after each. Once the first checkpoint is written the
    # worker is stopped (SIGSTOP), as a long epoch would hold it, so the time limit always
    # lands mid-run however fast this machine is; Slurm sends SIGCONT and SIGTERM at the limit.
    path = study_file("name: limit\nbase: presets/smoke.yaml\nfixed: {data.name: fake, data.num_examples: 64, "
                      "train.steps: 16, train.checkpoint_every: 1}\nseeds: [0]\n", name="limit.yaml")
    code, out = nfstudy("launch", "slurm", str(path), "--workers", "1", "--time", "00:01:00", env=cluster.env)
    assert code == 0, out
    trial = wait_for(lambda: queue_trials("limit", [TrialState.RUNNING]), timeout=300)[0]
    config_hash = trial.user_attrs["config_hash"]
    wait_for(lambda: (nfstudy_home / "checkpoints" / config_hash / "last.pt").exists(), timeout=300, step=0.05)
    os.kill(trial.system_attrs[OWNER_ATTR]["pid"], signal.SIGSTOP)
    cluster.wait_idle(timeout=600)  # limit, follow-up, second array, its follow-up
    runs = assert_exactly_once(local_uri(nfstudy_home), "limit", 1)
    killed = [r for r in runs if r.info.status == "KILLED"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(killed) == 1 and len(finished) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(local_uri(nfstudy_home))
    last_killed = max(m.step for m in client.get_metric_history(killed[0].info.run_id, "train/loss"))
    resumed = min(m.step for m in client.get_metric_history(finished[0].info.run_id, "train/loss"))
    assert resumed == last_killed + 1 and resumed > 0  # from the checkpoint, not from epoch 0
    assert finished[0].data.metrics["epochs"] == 8
    # Slurm sent SIGCONT and SIGTERM at the limit: the worker itself closed the run and re-queued it.
    assert RunQueue("limit").trial(trial._trial_id).user_attrs["ended"] == "interrupted"
    logs = "".join(p.read_text() for p in (nfstudy_home / "logs" / "limit" / "slurm").glob("slurm-*"))
    assert "DUE TO TIME LIMIT" in logs
    print(f"\nslurm: killed at its time limit after epoch {last_killed}, resumed at epoch {resumed}")


@pytest.mark.slow
def test_a_task_killed_outright_is_recovered_and_resubmitted_by_the_follow_up_job(cluster, study_file,
                                                                                   nfstudy_home):
    """kill -9 of the only task (no clean stop): the array ends with the config RUNNING; the
    follow-up job recovers it (its worker is gone) and submits the next round."""
    path = study_file("name: killed\nbase: presets/smoke.yaml\nfixed: {data.name: fake, data.num_examples: 64, "
                      "train.steps: 40}\nseeds: [0]\n", name="killed.yaml")
    code, out = nfstudy("launch", "slurm", str(path), "--workers", "1", env=cluster.env)
    assert code == 0, out
    trial = wait_for(lambda: [t for t in queue_trials("killed", [TrialState.RUNNING]) if "mlflow_run_id" in
                              t.user_attrs], timeout=300)[0]
    os.kill(trial.system_attrs[OWNER_ATTR]["pid"], signal.SIGKILL)
    cluster.wait_idle(timeout=600)
    runs = assert_exactly_once(local_uri(nfstudy_home), "killed", 1)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    assert RunQueue("killed").trial(trial._trial_id).user_attrs["ended"] == "lost"
    logs = "".join(p.read_text() for p in (nfstudy_home / "logs" / "killed" / "slurm").glob("*-next.out"))
    assert "round 2 of 3" in logs  # the follow-up job submitted the next round


@pytest.mark.slow
def test_four_workers_share_a_journal_queue_on_a_shared_filesystem(study_file, tmp_path):
    """The ``journal+nfs://`` queue: four worker processes, each with its own home and host
    id (so no pid check applies: liveness by heartbeats only), sharing only the journal."""
    shared = tmp_path / "shared"
    storage = f"journal+nfs://{shared / 'queue.journal'}"
    tracking = f"sqlite:///{shared / 'mlflow.db'}"
    path = study_file("name: nfs\nbase: presets/smoke.yaml\ngrid:\n  agc.clipping: [0.01, 0.02]\n"
                      "seeds: [0, 1]\n", name="nfs.yaml")
    code, out = nfstudy("enqueue", str(path), "--storage", storage, "--tracking-uri", tracking)
    assert code == 0 and "4 waiting" in out, out
    code, again = nfstudy("enqueue", str(path), "--storage", storage, "--tracking-uri", tracking)
    assert code == 0 and "4 waiting" in again, again  # idempotent
    workers = [subprocess.Popen([sys.executable, "-m", "study", "worker", "--study", "nfs", "--storage", storage,
                                 "--tracking-uri", tracking], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "NFSTUDY_HOME": str(tmp_path / f"machine-{i}"),
                                     "NFSTUDY_HOST_ID": f"machine-{i}"})
               for i in range(4)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, outs
    assert_exactly_once(tracking, "nfs", 4)
    trials = RunQueue("nfs", storage).trials([TrialState.COMPLETE])
    assert len(trials) == 4 and len({t.system_attrs[OWNER_ATTR]["host"] for t in trials}) >= 2
    assert not list(shared.glob("queue.journal*.lock"))  # NFS locks exist only while held (no flock files)
    print("\n" + "\n".join(line for out in outs for line in out.splitlines() if "per run:" in line))
    code, out = nfstudy("status", "nfs", "--storage", storage, "--tracking-uri", tracking)
    assert code == 0 and "4 configs: 4 finished" in out, out


def test_launch_without_slurm_or_with_a_bad_time_is_one_line_and_writes_nothing(study_file, nfstudy_home):
    path = study_file("name: nosl\nbase: presets/smoke.yaml\nseeds: [0]\n", name="nosl.yaml")
    code, out = nfstudy("launch", "slurm", str(path), "--time", "ten minutes")
    assert code == 2 and out.strip().startswith("error: --time ten minutes: not a Slurm time limit"), out
    code, out = nfstudy("launch", "slurm", str(path), env={"PATH": "/nonexistent"})
    assert code == 2 and "`sbatch` is not on $PATH" in out and len(out.strip().splitlines()) == 1, out
    assert not nfstudy_home.exists() or not list(nfstudy_home.iterdir())


def test_status_of_a_study_without_a_queue_is_one_line(nfstudy_home):
    code, out = nfstudy("status", "no-such-study")
    assert code == 2 and "no queue" in out and len(out.strip().splitlines()) == 1, out


def test_slurm_time_limits_and_the_scripts_they_make(tmp_path):
    from study.errors import ConfigError
    from study.run.slurm import SlurmOptions, time_limit_s, worker_script

    assert [time_limit_s(t) for t in ("90", "1:30", "04:00:00", "2-0", "1-00:00:01")] == [5400, 90, 14400, 172800,
                                                                                            86401]
    with pytest.raises(ConfigError, match="not a Slurm time limit"):
        time_limit_s("1:2:3:4")
    long = worker_script("s", SlurmOptions(workers=8, gpus_per_worker=2, time="04:00:00", partition="gpu",
                                           extra=["--qos=long"]), 8, tmp_path)
    for line in ("#SBATCH --array=1-8", "#SBATCH --gres=gpu:2", "#SBATCH --signal=B:USR1@120",
                 "#SBATCH --partition=gpu", "#SBATCH --qos=long", "--nproc-per-node 2"):
        assert line in long
    assert "--signal" not in worker_script("s", SlurmOptions(workers=1, time="00:05:00"), 1, tmp_path)


def test_the_nfs_lock_is_exclusive_refreshed_while_held_and_broken_when_abandoned(tmp_path, monkeypatch):
    from study.record import optuna_storage

    monkeypatch.setattr(optuna_storage, "NFS_GRACE_S", 3)
    lock = optuna_storage.lock_beside(tmp_path / "queue.journal", "enqueue", nfs=True)
    path = tmp_path / "queue.journal.enqueue.lock"
    with lock.held():
        os.utime(path, (0, 0))
        time.sleep(2.0)  # the holder touches it every NFS_GRACE_S / 6
        assert path.stat().st_mtime > 0
        other = optuna_storage.lock_beside(tmp_path / "queue.journal", "enqueue", nfs=True)
        assert os.path.exists(path)
    assert not path.exists()  # released: the file exists only while held
    path.write_text("")  # left by a holder that died
    started = time.monotonic()
    with other.held():
        waited = time.monotonic() - started
    assert 3 <= waited < 10


def test_a_queue_in_a_journal_on_a_shared_filesystem(tmp_path):
    from study.run.queue import Job, RunQueue

    url = f"journal+nfs://{tmp_path / 'q.journal'}"
    queue = RunQueue("nfs-unit", url, create=True)
    jobs = [Job(f"h{i}", {}, "nfs-unit", "", f"r{i}", {}, "1", "p") for i in range(3)]
    assert queue.enqueue(jobs) == 3 and queue.enqueue(jobs) == 0
    claim = RunQueue("nfs-unit", url).pop()
    assert claim is not None and claim.job.config_hash == "h0"
    assert len(queue.trials([TrialState.WAITING])) == 2
    assert not list(tmp_path.glob("*.lock"))


def test_the_readme_launch_line_as_a_dry_run(nfstudy_home):
    """The README's "On a Slurm cluster" launch line, with ``--dry-run``: the scripts it would
    submit, with nothing queued, submitted or written."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## On a Slurm cluster", 1)[1].split("\n## ", 1)[0]
    line = next(x for x in section.splitlines() if x.startswith("nfstudy launch slurm"))
    args = line.split("#", 1)[0].split()[1:]
    storage = f"journal+nfs://{nfstudy_home.parent / 'shared' / 'queue.journal'}"
    code, out = nfstudy(*args, "--dry-run", env={"NFSTUDY_STORAGE": storage, "PATH": "/nonexistent"})
    assert code == 0, out
    for expected in ("#SBATCH --array=1-8", "#SBATCH --gres=gpu:1", "#SBATCH --time=04:00:00",
                     "#SBATCH --partition=gpu", "#SBATCH --signal=B:USR1@120", "--dependency=afterany",
                     "worker --study clip-threshold --nproc-per-node 1", "--round 2"):
        assert expected in out, expected
    assert storage not in out  # URLs travel in the environment, never in a script
    assert not (nfstudy_home.parent / "shared").exists() and not (nfstudy_home / "mlflow.db").exists()
