"""Two machines, played by processes, set up as the README's "Many workers and machines"
says: a PostgreSQL queue, an ``mlflow server`` on PostgreSQL with logins (``--app-name
basic-auth``, ``--allowed-hosts``), a coordinator (``nfstudy run --storage --tracking-uri``)
and two ``nfstudy worker`` processes that join with nothing but the study name, the two
URLs and the credentials in their environment. Every config ends FINISHED exactly once;
the workers exit 0 when the queue is empty; a client without credentials is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from servers import mlflow_server, postgres_server

from study.errors import TrackingError
from study.run.queue import RunQueue

REPO = Path(__file__).resolve().parents[1]


USER, PASSWORD = "nfstudy", "s3cret-for-the-fleet"
#: The workers' credentials: in the environment, never on a command line.
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}


def nfstudy(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "study", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **CREDENTIALS})


def refused_without_credentials(tracking_uri: str) -> bool:
    try:
        urllib.request.urlopen(f"{tracking_uri}/api/2.0/mlflow/experiments/search?max_results=10", timeout=10)
    except urllib.error.HTTPError as err:
        return err.code == 401
    return False


@pytest.mark.slow
def test_two_workers_on_other_machines_share_a_postgresql_queue(study_file, tmp_path, monkeypatch):
    path = study_file("name: two-machines\nbase: presets/smoke.yaml\n"
                      "grid:\n  agc.clipping: [0.01, 0.02, 0.04]\nseeds: [0, 1]\n")
    machine_b = tmp_path / "machine-b"  # no study file, no experiments/ directory there
    machine_b.mkdir()
    with postgres_server() as pg:
        queue_url = pg.create_database("nfstudy")
        with mlflow_server(pg.create_database("mlflow"), auth=(USER, PASSWORD)) as tracking_uri:
            coordinator = nfstudy("run", str(path), "--storage", queue_url, "--tracking-uri", tracking_uri,
                                  cwd=REPO)
            deadline = time.monotonic() + 180
            while True:  # the workers join once the coordinator has filled the queue
                try:
                    if RunQueue("two-machines", queue_url).trials():
                        break
                except TrackingError:
                    pass
                assert time.monotonic() < deadline and coordinator.poll() is None, coordinator.stdout.read()
                time.sleep(0.3)
            workers = [nfstudy("worker", "--study", "two-machines", "--storage", queue_url,
                               "--tracking-uri", tracking_uri, cwd=machine_b) for _ in range(2)]
            assert refused_without_credentials(tracking_uri)  # while the workers log
            outputs = [proc.communicate(timeout=600)[0] for proc in [coordinator, *workers]]
            codes = [proc.returncode for proc in [coordinator, *workers]]
            assert codes == [0, 0, 0], outputs

            for key, value in CREDENTIALS.items():
                monkeypatch.setenv(key, value)  # this test's own reads, as a user with a login
            client = MlflowClient(tracking_uri)
            experiment = client.get_experiment_by_name("two-machines")
            runs = client.search_runs([experiment.experiment_id], "tags.`nfstudy.role` = 'child'")
            finished = Counter(r.data.tags["nfstudy.config_hash"] for r in runs if r.info.status == "FINISHED")
            assert len(finished) == 6 and set(finished.values()) == {1}
            assert not [r for r in runs if r.info.status == "RUNNING"]
            trials = RunQueue("two-machines", queue_url).trials()
            assert {t.state for t in trials} == {TrialState.COMPLETE}
            owners = Counter(t.system_attrs["nfstudy:owner"]["pid"] for t in trials)
            worker_pids = {proc.pid for proc in workers}
            assert worker_pids & set(owners), f"no run by an `nfstudy worker`: {owners}"
            assert all("queue empty" in out for out in outputs[1:]), outputs
            assert refused_without_credentials(tracking_uri)
            assert not [out for out in outputs if PASSWORD in out]
