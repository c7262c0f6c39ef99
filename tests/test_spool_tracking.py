"""``--tracking-uri spool:``: workers on a cluster without any server record into the spool on
the shared filesystem only; ``nfstudy sync --tracking-uri STORE`` on the login node uploads
every run once (README, "On a Slurm cluster")."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from test_faults import assert_exactly_once
from test_slurm import REPO, cluster, nfstudy  # noqa: F401 - cluster: the Slurm fixture

GRID = "name: spooled\nbase: presets/smoke.yaml\ngrid:\n  agc.clipping: [0.01, 0.02]\nseeds: [0, 1]\n"


@pytest.mark.slow
def test_two_spool_only_workers_then_one_sync_record_every_run_exactly_once(study_file, nfstudy_home, tmp_path):
    storage = f"journal+nfs://{nfstudy_home / 'queue.journal'}"  # $NFSTUDY_HOME: the shared filesystem
    login = tmp_path / "login"
    login.mkdir()
    target = f"sqlite:///{login / 'mlflow.db'}"
    path = study_file(GRID, name="spooled.yaml")
    code, out = nfstudy("enqueue", str(path), "--storage", storage, "--tracking-uri", "spool:")
    assert code == 0 and "4 waiting" in out, out
    workers = [subprocess.Popen([sys.executable, "-m", "study", "worker", "--study", "spooled", "--storage", storage,
                                 "--tracking-uri", "spool:"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "NFSTUDY_HOST_ID": f"node-{i}"})
               for i in range(2)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    assert sorted(p.name for p in nfstudy_home.iterdir() if p.name.endswith(".db")) == []  # no store touched
    assert len(list((nfstudy_home / "spool").glob("*.jsonl"))) == 4

    code, out = nfstudy("enqueue", str(path), "--storage", storage, "--tracking-uri", "spool:")
    assert code == 0 and "4 finished, 0 waiting" in out, out  # the queue knows what finished: nothing redone

    code, out = nfstudy("sync", "--tracking-uri", target)
    assert code == 0 and "sync: 4 spooled runs uploaded, 0 duplicates dropped" in out, out
    runs = assert_exactly_once(target, "spooled", 4)
    client = MlflowClient(target)
    experiment = client.get_experiment_by_name("spooled")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`nfstudy.role` = 'parent'")
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert all("test/top1" in r.data.metrics for r in runs)

    code, again = nfstudy("sync", "--tracking-uri", target)
    assert code == 0 and "nothing spooled" in again, again
    assert len(client.search_runs([experiment.experiment_id])) == 5  # 4 children and their parent, no more

    code, out = nfstudy("status", str(path), "--storage", storage, "--tracking-uri", target)
    assert code == 0 and "4 configs: 4 finished" in out, out
    code, out = nfstudy("report", str(path), "--tracking-uri", target)
    assert code == 0, out


@pytest.mark.slow
def test_launch_slurm_with_spool_tracking_then_sync(cluster, study_file, nfstudy_home, tmp_path):  # noqa: F811
    """The README's recipe: ``launch slurm … --tracking-uri spool:``, then ``nfstudy sync``."""
    path = study_file("name: slurm-spool\nbase: presets/smoke.yaml\nseeds: [0, 1]\n", name="slurm-spool.yaml")
    code, out = nfstudy("launch", "slurm", str(path), "--workers", "2", "--tracking-uri", "spool:", env=cluster.env)
    assert code == 0 and "(2 workers) for 2 waiting configs" in out, out
    cluster.wait_idle(timeout=600)  # the array, then the follow-up job (which submits nothing)
    logs = nfstudy_home / "logs" / "slurm-spool" / "slurm"
    assert "nothing to submit" in "".join(p.read_text() for p in logs.glob("*-next.out"))
    assert not (nfstudy_home / "mlflow.db").exists()
    target = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out = nfstudy("sync", "--tracking-uri", target)
    assert code == 0 and "sync: 2 spooled runs uploaded" in out, out
    assert_exactly_once(target, "slurm-spool", 2)
    code, out = nfstudy("status", str(path), "--tracking-uri", target)
    assert code == 0 and "2 configs: 2 finished" in out, out


@pytest.mark.parametrize(("command", "uri", "expected"), [
    (["worker", "--study", "spooled"], "spool://nodes", "expected exactly 'spool:'"),
    (["enqueue", "GRID"], "spol:", "unsupported scheme 'spol'"),
    (["status", "spooled"], "spool:", "only records"),
])
def test_a_wrong_spool_uri_or_spool_where_a_store_is_needed_is_one_line(command, uri, expected, study_file,
                                                                         nfstudy_home):
    path = study_file(GRID, name="spooled.yaml")
    args = [str(path) if a == "GRID" else a for a in command]
    storage = f"journal+nfs://{nfstudy_home / 'queue.journal'}"
    code, out = nfstudy(*args, "--storage", storage, "--tracking-uri", uri)
    assert code == 2 and expected in out and len(out.strip().splitlines()) == 1, out
    assert not nfstudy_home.exists() or not list(nfstudy_home.iterdir())  # nothing written
