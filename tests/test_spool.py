"""Nothing lost when tracking fails: the spool (study/record/spool.py), the ChildRun fallback to it,
and `nfstudy sync` (idempotent, one FINISHED run per config hash)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import free_port, mlflow_server

from study.cli import main
from study.record import spool
from study.record.tags import HASH, OUTCOME, PARENT_ID, ROLE
from study.record.tracking import ChildRun, Tracking

REPO = Path(__file__).resolve().parent.parent


def header(experiment_id: str, parent_id: str, config_hash: str, run_id: str | None = None) -> dict:
    return {"study": "s", "description": "d", "experiment_id": experiment_id, "parent_id": parent_id,
            "run_id": run_id, "run_name": f"seed={config_hash}",
            "tags": {PARENT_ID: parent_id, ROLE: "child", HASH: config_hash, "nfstudy.study": "s"},
            "params": {"agc.clipping": "0.01", "seed": "0"}, "start_time": 1_700_000_000_000}


def spool_finished_run(experiment_id: str, parent_id: str, config_hash: str) -> Path:
    writer = spool.SpoolWriter(header(experiment_id, parent_id, config_hash))
    writer.append({"kind": "metrics", "metrics": [["val/top1", 0.5, 1, 0], ["val/top1", 0.75, 2, 1]]})
    writer.tags({OUTCOME: "completed"})
    writer.end("FINISHED")
    return writer.path


def finished_children(client: MlflowClient, experiment_id: str):
    return client.search_runs([experiment_id], filter_string=f"tags.`{ROLE}` = 'child' and "
                              "attributes.status = 'FINISHED'")


def test_a_spooled_run_is_uploaded_once_with_everything(nfstudy_home):
    tracking = Tracking()
    experiment_id, parent_id = tracking.ensure_study("s", "d")
    path = spool_finished_run(experiment_id, parent_id, "abc123")

    first = spool.sync(tracking)
    second = spool.sync(tracking)

    assert (first.uploaded, second.uploaded) == (1, 0)
    [run] = finished_children(tracking.client, experiment_id)
    assert run.data.params == {"agc.clipping": "0.01", "seed": "0"}
    assert run.data.tags[OUTCOME] == "completed" and run.data.tags[PARENT_ID] == parent_id
    assert run.data.tags[spool.SPOOL_ID] == path.stem
    history = tracking.client.get_metric_history(run.info.run_id, "val/top1")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.75)]
    assert not path.exists() and (path.parent / "uploaded" / path.name).exists()


def test_a_config_already_finished_is_not_recorded_twice(nfstudy_home):
    tracking = Tracking()
    experiment_id, parent_id = tracking.ensure_study("s", "d")
    spool_finished_run(experiment_id, parent_id, "abc123")
    spool.sync(tracking)
    spool_finished_run(experiment_id, parent_id, "abc123")  # the same config, spooled again

    summary = spool.sync(tracking)

    assert (summary.uploaded, summary.duplicates) == (0, 1)
    assert len(finished_children(tracking.client, experiment_id)) == 1
    assert spool.pending() == []


def test_a_run_being_written_waits_and_a_dead_writer_is_uploaded_killed(nfstudy_home):
    tracking = Tracking()
    experiment_id, parent_id = tracking.ensure_study("s", "d")
    writer = spool.SpoolWriter(header(experiment_id, parent_id, "def456"))
    writer.append({"kind": "metrics", "metrics": [["train/loss", 2.0, 1, 0]]})
    assert spool.pending() == []  # its writer holds the lock
    writer.close()  # the process "died": no end record
    with open(writer.path, "a") as torn:
        torn.write('{"kind": "metrics", "metr')  # a line cut short by the crash

    summary = spool.sync(tracking)

    assert summary.uploaded == 1
    [run] = tracking.client.search_runs([experiment_id], filter_string=f"tags.`{HASH}` = 'def456'")
    assert run.info.status == "KILLED" and "died" in run.data.tags["nfstudy.error"]
    assert run.data.metrics == {"train/loss": 2.0}


def test_child_run_falls_back_to_the_spool_when_the_server_is_gone(nfstudy_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracking = Tracking(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    child = ChildRun(tracking.client, "run-created-before", tracking=tracking, header=header("7", "p", "aaa111"))

    child.log_metrics({"val/top1": 0.25}, step=0)
    child.finish({"outcome": "completed", "val/top1": 0.5, "epochs": 1})

    assert tracking.offline
    [spooled] = spool.pending()
    assert spooled.header["run_id"] == "run-created-before" and spooled.status == "FINISHED"
    assert spooled.tags[OUTCOME] == "completed"
    assert ["val/top1", 0.25, spooled.metrics[0][2], 0] == spooled.metrics[0]
    assert {m[0] for m in spooled.metrics} >= {"val/top1", "final/val/top1", "epochs"}
    assert tracking.finished_run_id("7", "aaa111") == "spool"
    assert tracking.finished_outcomes("7") == {"aaa111": "completed"}

    later = tracking.start_child("7", "p", "s", "", "seed=1", "bbb222", {"seed": 1})
    later.finish({"outcome": "diverged", "epochs": 1})
    assert later.run_id is None
    assert tracking.finished_outcomes("7") == {"aaa111": "completed", "bbb222": "diverged"}


def test_sync_with_nothing_spooled_touches_nothing(nfstudy_home, capsys):
    assert main(["sync"]) == 0
    assert "nothing spooled" in capsys.readouterr().out
    assert not nfstudy_home.exists()


STUDY = """\
name: offline
base: presets/smoke.yaml
fixed: {train.steps: 25}
seeds: [0, 1, 2, 3]
"""


def register(tmp_path: Path, monkeypatch, name: str, text: str) -> None:
    """Make study ``name`` a registered study (``$NFSTUDY_EXPERIMENTS``), on the smoke preset."""
    experiments = tmp_path / "experiments"
    (experiments / "presets").mkdir(parents=True)
    (experiments / f"{name}.yaml").write_text(text)
    (experiments / "presets" / "smoke.yaml").write_text((REPO / "experiments/presets/smoke.yaml").read_text())
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(experiments))


def run_while_the_server_dies(backend: str, experiment: str, *args: str) -> str:
    """``nfstudy ARGS --tracking-uri`` against an ``mlflow server`` on ``backend``, killed as
    soon as the first child run of ``experiment`` is FINISHED; the command's output."""
    with contextlib.ExitStack() as server:
        uri = server.enter_context(mlflow_server(backend))
        proc = subprocess.Popen([sys.executable, "-m", "study", *args, "--tracking-uri", uri],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        client, deadline = MlflowClient(uri), time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            found = client.get_experiment_by_name(experiment)
            if found and finished_children(client, found.experiment_id):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the command ended before the server could be killed"
        # Leaving the stack kills the server (its whole session) while runs are left to do.
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    return output


@pytest.mark.slow
def test_tracking_server_killed_mid_run_loses_nothing(tmp_path, nfstudy_home, monkeypatch):
    register(tmp_path, monkeypatch, "offline", STUDY)
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    run_while_the_server_dies(backend, "offline", "run", "offline")
    spooled = spool.pending()
    assert spooled, "nothing was spooled: the server died after the study"

    with mlflow_server(backend) as uri:  # the same database behind a new port
        assert main(["sync", "--tracking-uri", uri]) == 0
        assert main(["sync", "--tracking-uri", uri]) == 0  # idempotent
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("offline").experiment_id
        hashes = [r.data.tags[HASH] for r in finished_children(client, experiment_id)]
        assert len(hashes) == 4 and len(set(hashes)) == 4  # exactly one FINISHED run per config
        for run_info in finished_children(client, experiment_id):
            assert run_info.data.params["seed"] in {"0", "1", "2", "3"}
            assert "test/top1" in run_info.data.metrics
            assert client.get_metric_history(run_info.info.run_id, "val/top1")
        # The next run finds everything done and trains nothing.
        done = subprocess.run([sys.executable, "-m", "study", "run", "offline", "--tracking-uri", uri],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "4 done, 0 to run" in done.stdout, done.stdout + done.stderr
        assert len(finished_children(client, experiment_id)) == 4
    assert spool.pending() == []
    assert all(json.loads(p.read_text().splitlines()[0])["kind"] == "run"
               for p in (nfstudy_home / "spool" / "uploaded").glob("*.jsonl"))


SEARCH = """\
name: offline-search
base: presets/smoke.yaml
fixed: {train.steps: 25}
seeds: [0]
search:
  agc.clipping: {low: 0.001, high: 1.0, log: true}
  pruner: none
"""


@pytest.mark.slow
def test_a_search_whose_tracking_server_goes_away_spools_its_trials_like_a_grid(tmp_path, nfstudy_home, monkeypatch):
    register(tmp_path, monkeypatch, "offline-search", SEARCH)
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    output = run_while_the_server_dies(backend, "search:offline-search", "search", "offline-search", "--trials", "4")
    assert "4 added" in " ".join(output.split())
    spooled = spool.pending()
    assert spooled and all(run.tags["optuna.trial_number"] for run in spooled)

    with mlflow_server(backend) as uri:
        assert main(["sync", "--tracking-uri", uri]) == 0
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("search:offline-search").experiment_id
        runs = finished_children(client, experiment_id)
        assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == [0, 1, 2, 3]
        assert len({r.data.tags["nfstudy.optuna_study"] for r in runs}) == 1
        assert all(r.data.tags["nfstudy.outcome"] == "completed" and "test/top1" in r.data.metrics for r in runs)
