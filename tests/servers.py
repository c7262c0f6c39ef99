"""Throwaway servers for tests: a PostgreSQL cluster and an ``mlflow server``, on 127.0.0.1.

Both are real servers started as subprocesses on a free port, with their data in a fresh
temporary directory, and are stopped and deleted when the ``with`` block ends::

    from servers import mlflow_server, postgres_server   # tests/ is on sys.path under pytest

    with postgres_server() as pg:                       # initdb + pg_ctl start
        optuna_url = pg.create_database("queue")       # postgresql://postgres@127.0.0.1:P/queue
        with mlflow_server(pg.create_database("mlflow")) as tracking_uri:
            ...                                        # tracking_uri = "http://127.0.0.1:Q"

    with mlflow_server() as tracking_uri:              # SQLite backend in a temp dir
        ...

PostgreSQL refuses to run as root: as root, the cluster runs as the system user
``nfstudy-pg`` (created with ``useradd`` when missing) through ``runuser``; otherwise as the
current user. The binaries are found on ``$PATH``, in ``/usr/local/bin`` or in
``/usr/lib/postgresql/*/bin``; as root on Debian they are installed with
``apt-get install postgresql`` when missing. Authentication is ``trust`` for
``127.0.0.1`` only (user ``postgres``), which is right for a throwaway test cluster and
nothing else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "nfstudy-pg"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)):
        if os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    return None


def pg_binaries() -> tuple[str, str]:
    """Paths of ``initdb`` and ``pg_ctl``, installing Debian's ``postgresql`` when missing
    (as root with ``apt-get`` only).

    Raises:
        RuntimeError: PostgreSQL is not installed and cannot be installed here.
    """
    if not (_pg_binary("initdb") and _pg_binary("pg_ctl")):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("PostgreSQL (initdb, pg_ctl) is not installed; install Debian's 'postgresql'")
    return initdb, pg_ctl


def _as_pg_user(command: list[str]) -> list[str]:
    """``command`` run as the unprivileged cluster owner (the server refuses root)."""
    if os.geteuid() != 0:
        return command
    if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", PG_USER, "--", *command]


@dataclass
class PostgresServer:
    """A running throwaway cluster: connect as ``postgres`` to 127.0.0.1:``port``."""

    port: int
    data_dir: Path
    options: str
    """``pg_ctl -o`` options of the server (port, socket directory, settings)."""

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` in the README's form, ``postgresql://USER@HOST:PORT/DB``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (if missing) and return its URL (:meth:`url`)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self, down_s: float) -> None:
        """Stop the server (``-m fast``: connections are cut), wait ``down_s``, start it again."""
        pg_ctl = pg_binaries()[1]
        subprocess.run(_as_pg_user([pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]),
                       check=True, capture_output=True, timeout=60)
        time.sleep(down_s)
        subprocess.run(_as_pg_user([pg_ctl, "-D", str(self.data_dir), "-l", str(self.data_dir.parent / "server.log"),
                                    "-o", self.options, "-w", "-t", "60", "start"]),
                       check=True, capture_output=True, timeout=90)

    def connections(self) -> int:
        """Client connections open now (``pg_stat_activity``, this one not counted)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres") as connection:
            return connection.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = "
                                      "'client backend'").fetchone()[0]


@contextlib.contextmanager
def postgres_server(timeout_s: float = 60.0) -> Iterator[PostgresServer]:
    """Start a fresh PostgreSQL cluster on 127.0.0.1 and a free port; stop and delete it after.

    Args:
        timeout_s: how long ``pg_ctl start`` may take.

    Returns:
        A context manager yielding a :class:`PostgresServer`.

    Raises:
        RuntimeError: PostgreSQL is missing, or the cluster does not start (its log is in
            the message).
    """
    initdb, pg_ctl = pg_binaries()
    # Not under pytest's tmp_path: its parents are private to root, the cluster owner is not.
    root = Path(tempfile.mkdtemp(prefix="nfstudy-pg-"))
    data_dir, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        _as_pg_user(["true"])  # creates the user
        shutil.chown(root, user=PG_USER)
    port = free_port()
    try:
        subprocess.run(_as_pg_user([initdb, "-D", str(data_dir), "-U", "postgres", "--auth=trust",
                                    "--encoding=UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=timeout_s)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir} -c fsync=off -c max_connections=200"
        started = subprocess.run(_as_pg_user([pg_ctl, "-D", str(data_dir), "-l", str(log), "-o", options,
                                              "-w", "-t", str(int(timeout_s)), "start"]),
                                 capture_output=True, text=True)
        if started.returncode != 0:
            text = log.read_text() if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start: {text[-2000:]}")
        try:
            yield PostgresServer(port=port, data_dir=data_dir, options=options)
        finally:
            subprocess.run(_as_pg_user([pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str | None = None, timeout_s: float = 120.0, *, port: int | None = None,
                  auth: tuple[str, str] | None = None) -> Iterator[str]:
    """Start ``mlflow server`` on 127.0.0.1 and a free port; stop it after.

    Args:
        backend_store_uri: the server's store, e.g. ``PostgresServer.create_database(...)``
            (the README's ``postgresql://`` form, passed as it is); ``None`` = a fresh
            SQLite file in a temporary directory.
        timeout_s: how long the server may take to answer ``/health``.
        port: listen there (e.g. to restart a server where its clients look); default: a free port.
        auth: ``(user, password)``: the README's secure recipe, MLflow's ``basic-auth`` app
            with that admin and ``--allowed-hosts`` for this address only.

    Returns:
        A context manager yielding the tracking URI, ``http://127.0.0.1:PORT``.

    Raises:
        RuntimeError: the server exits or does not answer in time (its output is in the
            message).
    """
    with tempfile.TemporaryDirectory(prefix="nfstudy-mlflow-") as tmp:
        backend = backend_store_uri or f"sqlite:///{tmp}/mlflow.db"
        port = port or free_port()
        log_path = Path(tmp) / "server.log"
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                   "--artifacts-destination", f"{tmp}/artifacts", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1"]
        env = dict(os.environ)
        if auth:
            command += ["--app-name", "basic-auth", "--allowed-hosts", f"127.0.0.1:{port}"]
            env.update(MLFLOW_AUTH_ADMIN_USERNAME=auth[0], MLFLOW_AUTH_ADMIN_PASSWORD=auth[1],
                       MLFLOW_FLASK_SERVER_SECRET_KEY=os.urandom(16).hex())
        with open(log_path, "wb") as log:
            server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      cwd=tmp, env=env)
        uri = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"mlflow server exited ({server.returncode}): {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not answer in {timeout_s}s: {log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            yield uri
        finally:
            # The server forks workers: stop its whole session, not only the parent.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, 15)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, 9)
                server.wait()
