"""Safe by default: safe YAML and checkpoint loading, no code run from data files,
file names confined to $NFSTUDY_HOME, and credentials never written to MLflow or printed."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from servers import mlflow_server

from study import paths
from study.cli import main
from study.errors import DataError
from study.redaction import redact

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("study", "analysis", "scripts") for p in (REPO / d).rglob("*.py"))


def test_yaml_is_only_ever_safe_loaded():
    unsafe = [f"{p.relative_to(REPO)}:{n}" for p in SOURCES for n, line in enumerate(p.read_text().splitlines(), 1)
              if re.search(r"yaml\.(load|unsafe_load|full_load|load_all)\(|Loader=yaml\.(Unsafe|Full)?Loader", line)]
    assert SOURCES and unsafe == []


def test_torch_load_and_pickle_are_never_unrestricted():
    calls = [(p, line) for p in SOURCES for line in p.read_text().splitlines()
             if re.search(r"\btorch\.load\(|\bpickle\.loads?\(", line) and not line.lstrip().startswith("#")]
    assert calls, "expected the checkpoint loader"
    for path, line in calls:
        assert "torch.load(" in line and "weights_only=True" in line, f"{path.relative_to(REPO)}: {line.strip()}"


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_cifar_file_cannot_run_code(tmp_path):
    from study.data.cifar import load_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system"):
        load_cifar("cifar10", tmp_path, False, "cpu")
    assert not marker.exists()


def test_names_with_path_separators_stay_inside_home(nfstudy_home, study_file, capsys):
    for hostile in ("../../etc/passwd", "/etc/passwd", "..", "a/../../b", "~root"):
        path = paths.confined("reports", hostile)
        assert path.resolve().is_relative_to(nfstudy_home) and path.parent == nfstudy_home / "reports"
        assert "/" not in paths.safe_name(hostile) and paths.safe_name(hostile) not in ("", ".", "..")
    code = main(["run", str(study_file("name: ../../evil\n"))])
    err = capsys.readouterr().err
    assert code == 2 and "study name '../../evil' must be lower-case letters, digits, '-' or '_'" in err
    assert not nfstudy_home.exists()


@pytest.mark.parametrize("text,shown", [
    ("postgresql://alice:s3cret@db:5432/nf", "postgresql://alice:***@db:5432/nf"),
    ("postgresql+psycopg2://alice:p%40ss@127.0.0.1/nf", "postgresql+psycopg2://alice:***@127.0.0.1/nf"),
    ("error at http://bob:tok:en@host:5000 and mysql://c:d@e/f", "error at http://bob:***@host:5000 and mysql://c:***@e/f"),
    ("http://host:5000/path", "http://host:5000/path"),
    ("sqlite:////home/u/.nfstudy/mlflow.db", "sqlite:////home/u/.nfstudy/mlflow.db"),
])
def test_redact_hides_passwords_and_nothing_else(text, shown):
    assert redact(text) == shown


@pytest.mark.slow
def test_credentials_and_environment_never_reach_mlflow_or_the_terminal(tmp_path, nfstudy_home):
    experiments = tmp_path / "experiments"
    (experiments / "presets").mkdir(parents=True)
    (experiments / "presets" / "smoke.yaml").write_text((REPO / "experiments/presets/smoke.yaml").read_text())
    (experiments / "tiny.yaml").write_text("name: tiny\nbase: presets/smoke.yaml\nfixed: {train.steps: 2}\n")
    with mlflow_server() as uri:
        secret_uri = uri.replace("http://", "http://alice:s3cret-pw@")
        env = {**os.environ, "NFSTUDY_HOME": str(nfstudy_home), "NFSTUDY_EXPERIMENTS": str(experiments),
               "NFSTUDY_TEST_TOKEN": "tok-9f8e7d6c5b", "MLFLOW_TRACKING_URI": secret_uri}
        done = subprocess.run([sys.executable, "-m", "study", "run", "tiny"], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        unreachable = subprocess.run(
            [sys.executable, "-m", "study", "run", "tiny", "--storage", "postgresql://alice:s3cret-pw@127.0.0.1:1/q"],
            env=env, capture_output=True, text=True, timeout=120)
        assert unreachable.returncode == 2 and "alice:***@" in unreachable.stderr
        client = MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert len(runs) == 2  # parent and child
        written = [*(v for r in runs for v in r.data.params.values()), *(v for r in runs for v in r.data.tags.values()),
                   *(k for r in runs for k in r.data.params), *(k for r in runs for k in r.data.tags)]
    printed = done.stdout + done.stderr + unreachable.stdout + unreachable.stderr
    for secret in ("s3cret-pw", "tok-9f8e7d6c5b"):
        assert secret not in printed
        assert not [v for v in written if secret in v]
    logs = [p.read_text(errors="replace") for p in nfstudy_home.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl", ".md", ".html")]
    assert not [text for text in logs if "s3cret-pw" in text]


def test_local_workers_get_storage_and_tracking_uri_in_their_environment_not_their_command_line(
        tmp_path, monkeypatch):
    """Command lines are world-readable (``ps``); a password in a URL must not be in one."""
    from study.record.tracking import Tracking
    from study.run.coordinator import worker_process
    from study.run.queue import RunQueue, storage_url

    queue = RunQueue("secrets", str(tmp_path / "queue.journal"), create=True)
    tracking = Tracking("http://alice:s3cret-pw@127.0.0.1:9/")  # nothing listens: never contacted
    command, env = worker_process(0, 2, [], queue, tracking)
    assert not [arg for arg in command if "s3cret-pw" in arg or str(tmp_path) in arg]
    assert env["MLFLOW_TRACKING_URI"] == tracking.uri and "s3cret-pw" in env["MLFLOW_TRACKING_URI"]
    assert env["NFSTUDY_STORAGE"] == queue.url
    for key in ("NFSTUDY_STORAGE", "MLFLOW_TRACKING_URI"):  # ...and the worker reads them there
        monkeypatch.setenv(key, env[key])
    assert Tracking().uri == tracking.uri and storage_url(None) == queue.url
