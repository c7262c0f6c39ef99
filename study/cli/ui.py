"""``nfstudy ui``: the MLflow UI (and optuna-dashboard) on the stores ``nfstudy run`` uses.

Servers bind to 127.0.0.1 unless ``--host`` says otherwise (with a warning: this server has
no login). Each server runs in its own process group (:mod:`study.children`), so stopping
``nfstudy ui`` (Ctrl-C, SIGTERM, even ``kill -9``) stops it and all the processes it forked,
and frees the port.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from study import paths
from study.children import start_group, stop_group
from study.errors import ConfigError, TrackingError
from study.record import optuna_storage as optuna_storage_module, stores
from study.redaction import redact

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Seconds a server may take to answer before ``ui`` gives up.
START_TIMEOUT_S = 120.0
#: Seconds a server gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 10.0


def mlflow_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """``mlflow server`` on ``tracking_uri`` with nfstudy's artifact root."""
    artifacts = str(paths.home() / "artifacts")
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", stores.database_url(tracking_uri),
            "--default-artifact-root", paths.artifact_root(), "--artifacts-destination", artifacts,
            "--host", host, "--port", str(port), "--workers", "1"]


def dashboard_command(storage: str, host: str, port: int) -> list[str]:
    """``optuna-dashboard`` on the Optuna storage."""
    executable = Path(sys.executable).with_name("optuna-dashboard")
    url = stores.database_url(storage) if "://" in storage else storage
    return [str(executable), url, "--host", host, "--port", str(port)]


def check_port(host: str, port: int) -> None:
    """Raise when ``host:port`` cannot be bound (in use, or not an address of this machine).

    Raises:
        ConfigError: naming the port and what to do.
    """
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be between 1 and 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({err.strerror}); "
                              "pick another --port") from None


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def start(command: list[str], log: Path) -> subprocess.Popen:
    """Start a server in its own process group, which dies with this process; output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return start_group(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           cwd=paths.home())


def wait_ready(name: str, proc: subprocess.Popen, url: str, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until ``url`` answers HTTP 200.

    Raises:
        TrackingError: the server exited or did not answer in time (last log line shown).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrackingError(f"{name} exited ({proc.returncode}): {_last_line(log)} (log: {log})")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.3)
    raise TrackingError(f"{name} at {url} did not answer within {timeout_s:.0f} s (log: {log})")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's group, then SIGKILL after :data:`STOP_TIMEOUT_S`."""
    stop_group(proc, STOP_TIMEOUT_S)


def serve(tracking_uri: str, host: str, port: int, optuna_storage: str | None, dashboard_port: int,
          say: Callable[[str], None]) -> int:
    """Run the MLflow UI (and optuna-dashboard) until Ctrl-C or until a server exits.

    Args:
        tracking_uri: the tracking store (a database; a server's URL is only printed).
        host: interface to bind (127.0.0.1 unless asked otherwise).
        port: the MLflow UI's port.
        optuna_storage: also serve optuna-dashboard on this storage; ``None``: not.
        dashboard_port: optuna-dashboard's port.
        say: prints one line for the user.

    Returns:
        The exit code: 0 when a server stopped on its own terms, else that of the server.

    Raises:
        KeyboardInterrupt: after Ctrl-C (or SIGTERM), once the servers are stopped.
        ConfigError: a port that cannot be bound.
        TrackingError: a server that does not start.
    """
    if tracking_uri.startswith(("http://", "https://")):
        say(f"MLflow UI: {redact(tracking_uri)} (the tracking server itself; nothing to start)")
        return 0
    check_port(host, port)
    if optuna_storage:
        check_port(host, dashboard_port)
    logs = paths.confined("logs")
    servers: list[subprocess.Popen] = []
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        mlflow_log = logs / "mlflow-ui.log"
        servers.append(start(mlflow_command(tracking_uri, host, port), mlflow_log))
        if optuna_storage:
            # Created here, under nfstudy's lock, so the dashboard never races a search that
            # is creating the same tables.
            optuna_storage_module.open_storage(optuna_storage, create=True)
            dashboard_log = logs / "optuna-dashboard.log"
            servers.append(start(dashboard_command(optuna_storage, host, dashboard_port), dashboard_log))
            wait_ready("optuna-dashboard", servers[1], url_of(host, dashboard_port), dashboard_log)
        wait_ready("mlflow server", servers[0], url_of(host, port) + "/health", mlflow_log)
        say(f"MLflow UI: {url_of(host, port)}  (tracking store {redact(tracking_uri)})")
        if optuna_storage:
            say(f"Optuna dashboard: {url_of(host, dashboard_port)}  (storage {redact(optuna_storage)})")
        say("Ctrl-C stops.")
        while all(s.poll() is None for s in servers):
            time.sleep(0.5)
        return next(s.returncode for s in servers if s.returncode is not None)
    finally:
        for server in servers:
            stop(server)
        signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    return redact(lines[-1][:300]) if lines else "no output"
