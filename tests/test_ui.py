"""`nfstudy ui`: the real MLflow server on a home with a finished smoke run and its report.

The server is started as a user would (``python -m study ui``), read through the MLflow
REST API, checked to listen on 127.0.0.1 only, and stopped with SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from processes import children, cmdline, group
from servers import free_port

from study.cli import main

REPO = Path(__file__).resolve().parent.parent
STUDY = """\
name: ui-demo
description: One smoke run, to browse in the MLflow UI.
base: presets/smoke.yaml
fixed: {train.steps: 2}
arms:
  nf: {model.norm: nf}
seeds: [0]
figures:
  - {kind: bar, x: arm, y: test/top1}
"""


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory):
    """A home with the study's finished run and `nfstudy report` done; env for subprocesses."""
    root = tmp_path_factory.mktemp("ui")
    experiments = root / "experiments"
    (experiments / "presets").mkdir(parents=True)
    (experiments / "ui-demo.yaml").write_text(STUDY)
    (experiments / "presets" / "smoke.yaml").write_text((REPO / "experiments/presets/smoke.yaml").read_text())
    env = {"NFSTUDY_HOME": str(root / "home"), "NFSTUDY_EXPERIMENTS": str(experiments)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["run", "ui-demo"]) == 0
        assert main(["report", "ui-demo"]) == 0
    clean = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "NFSTUDY_STORAGE")}
    return {**clean, **env, "PYTHONUNBUFFERED": "1"}


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        body = answer.read()
        return answer.status, body


def _api(base: str, endpoint: str, **query):
    status, body = _get(f"{base}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}")
    assert status == 200
    return json.loads(body)


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* write them) of sockets LISTENing on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, local_port = fields[1].rsplit(":", 1)
            if int(local_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


def start_ui(env: dict, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "study", "ui", "--port", str(port), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if _get(f"http://127.0.0.1:{port}/health", timeout=2)[0] == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"nfstudy ui did not answer on port {port}: {proc.communicate()}")


def stop_ui(proc: subprocess.Popen) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_ui_serves_the_study_on_loopback_and_stops_on_ctrl_c(ui_home):
    port = free_port()
    proc = start_ui(ui_home, port)
    try:
        base = f"http://127.0.0.1:{port}"
        status, page = _get(base + "/")
        assert status == 200 and b"<html" in page.lower()

        experiment = _api(base, "experiments/get-by-name", experiment_name="ui-demo")["experiment"]
        kind = {t["key"]: t["value"] for t in experiment.get("tags", [])}.get("mlflow.experimentKind")
        assert kind == "custom_model_development"  # the UI opens on the runs, not GenAI traces
        runs = json.loads(urllib.request.urlopen(urllib.request.Request(
            base + "/api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode()), timeout=10).read())["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
        children = [r for r, t in zip(runs, tags) if t.get("nfstudy.role") == "child"]
        parents = [(r, t) for r, t in zip(runs, tags) if t.get("nfstudy.role") == "parent"]
        assert [c["info"]["status"] for c in children] == ["FINISHED"]
        assert len(parents) == 1
        parent, parent_tags = parents[0]
        assert parent_tags["mlflow.note.content"].startswith("One smoke run")

        # The report's figures are artifacts of the parent run, so the UI alone tells the story.
        listed = _api(base, "artifacts/list", run_id=parent["info"]["run_id"])
        assert "report" in [f["path"] for f in listed.get("files", [])]
        report = _api(base, "artifacts/list", run_id=parent["info"]["run_id"], path="report")
        names = [f["path"] for f in report["files"]]
        assert any(n.endswith(".png") for n in names) and any(n.endswith("report.html") for n in names)

        listening = _listeners(port)
        assert listening and set(listening) == {"0100007F"}, listening  # 127.0.0.1, not 0.0.0.0 or ::
    finally:
        code, out, err = stop_ui(proc)
    assert f"MLflow UI: http://127.0.0.1:{port}" in out
    assert code == 130 and "Traceback" not in err
    assert _listeners(port) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_ui_warns_before_binding_beyond_loopback(capsys):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["ui", "--host", "0.0.0.0", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert "warning: --host 0.0.0.0 makes the UI reachable from the network" in err
    assert f"--port {port}: cannot listen there" in err


def test_ui_on_a_tracking_server_only_prints_its_url(capsys, nfstudy_home):
    code = main(["ui", "--tracking-uri", "http://alice:s3cret@127.0.0.1:5999"])
    out = capsys.readouterr().out
    assert code == 0
    assert "MLflow UI: http://alice:***@127.0.0.1:5999" in out and "s3cret" not in out
    assert not nfstudy_home.exists()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")
def test_screenshot_of_the_experiment_page_shows_the_runs(ui_home, tmp_path):
    from PIL import Image

    sys.path.insert(0, str(REPO / "scripts"))
    from screenshot_ui import main as screenshot_main

    port = free_port()
    proc = start_ui(ui_home, port)
    png = Path(os.environ.get("NFSTUDY_UI_SCREENSHOT", tmp_path / "ui.png"))
    try:
        assert screenshot_main([f"http://127.0.0.1:{port}", "ui-demo", str(png)]) == 0
    finally:
        stop_ui(proc)
    image = Image.open(png).convert("L")
    assert image.size == (1400, 900)
    # A rendered page, not a blank one: many distinct grey levels (text, table lines, logo).
    assert len(image.getcolors(256)) > 20  # (count, grey level) pairs, one per level used


@pytest.mark.slow
def test_kill_9_of_ui_stops_its_servers_and_frees_the_port(ui_home):
    port = free_port()
    proc = start_ui(ui_home, port)
    servers = [pid for pid in children(proc.pid) if b"mlflow" in cmdline(pid)]
    assert servers, "no mlflow server among the children of nfstudy ui"
    pgid = os.getpgid(servers[0])
    proc.kill()  # SIGKILL: nfstudy ui cannot stop anything itself
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 60
    while _listeners(port) or group(pgid):
        assert time.monotonic() < deadline, f"the server outlived nfstudy ui: port {port} {_listeners(port)}"
        time.sleep(0.5)
