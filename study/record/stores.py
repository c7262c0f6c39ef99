"""Where runs and queues are stored, reached safely: one URL normaliser for every opener
(queue, search, preflight, tracking, ``nfstudy ui``'s server), bounded HTTP clients and
database connections, and probes that answer in seconds (never hang) before anything is
written.

Messages show URLs redacted.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from study.errors import ConfigError, TrackingError
from study.redaction import first_line, redact

#: Seconds a probe of a tracking server or database may take.
PROBE_TIMEOUT_S = 5
#: MLflow's HTTP client defaults (7 retries with exponential backoff, 120 s timeout) make a
#: dead server hang a command for minutes; these bound one call to about 20 s, and keep
#: run URLs (with their credentials) off stdout. Values already in the environment win.
HTTP_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    # MLflow 3 prints "View run … at: URL" on stdout, credentials included.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
_SCHEMES = "sqlite:///PATH, http(s)://HOST:PORT, postgresql://USER@HOST:PORT/DB, mysql://…, file:///PATH, spool:"

SPOOL_URI = "spool:"
"""The tracking URI of workers that contact no store: each run goes to the spool under
``$NFSTUDY_HOME/spool`` only, and ``nfstudy sync --tracking-uri STORE`` uploads them later."""


#: Seconds to open one database connection (PostgreSQL), so a host that does not answer
#: costs seconds, not the operating system's TCP timeout.
CONNECT_TIMEOUT_S = 10
#: Milliseconds one PostgreSQL statement, or one wait for a row lock, may take.
STATEMENT_TIMEOUT_MS = 60_000


def database_url(url: str) -> str:
    """The SQLAlchemy URL of a database store, as every opener uses it.

    ``postgres://`` and ``postgresql://`` name psycopg 3 explicitly (a dependency; SQLAlchemy
    2.0 would pick psycopg2), and a PostgreSQL URL gets a connect timeout and statement and
    lock timeouts unless it sets its own. Other URLs are returned unchanged.

    Example::

        database_url("postgresql://nfstudy@db:5432/nfstudy")
        # 'postgresql+psycopg://nfstudy@db:5432/nfstudy?connect_timeout=10&options=-c+statement_timeout...'
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+psycopg"
    elif not scheme.startswith("postgresql+"):
        return url
    query = dict(parse_qsl(parts.query))
    query.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    query.setdefault("options", f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS}")
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def configure_http_client() -> None:
    """Bound MLflow's HTTP retries and timeout (:data:`HTTP_CLIENT_ENV`) in this process."""
    for name, value in HTTP_CLIENT_ENV.items():
        os.environ.setdefault(name, value)


def check_tracking(uri: str, *, spool_ok: bool = False) -> None:
    """The tracking URI is well formed and its server or database answers (nothing created).
    ``spool:`` (:data:`SPOOL_URI`) only where ``spool_ok``: for the commands that only
    record (``worker``, ``enqueue``, ``launch slurm``), not for those that read or upload.

    Raises:
        ConfigError: a malformed URI or an unsupported scheme.
        TrackingError: the server or database does not answer within :data:`PROBE_TIMEOUT_S`.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigError(f"--tracking-uri '{redact(uri)}': no host; expected http://HOST:PORT")
        _probe_http(uri)
    elif scheme in ("postgresql", "mysql", "mssql"):
        if not parts.hostname:
            raise ConfigError(f"--tracking-uri '{redact(uri)}': no host; expected {scheme}://USER@HOST:PORT/DB")
        check_database(uri, "--tracking-uri")
    elif scheme == "spool":
        if uri != SPOOL_URI:
            raise ConfigError(f"--tracking-uri '{redact(uri)}': expected exactly '{SPOOL_URI}' (the spool under "
                              "$NFSTUDY_HOME/spool; nfstudy sync uploads it)")
        if not spool_ok:
            raise ConfigError(f"--tracking-uri {SPOOL_URI} only records (nfstudy worker, enqueue, launch slurm); "
                              "this command needs a store: nfstudy sync --tracking-uri sqlite:///PATH.db uploads "
                              "the spool into one")
    elif scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            raise ConfigError(f"--tracking-uri '{redact(uri)}': expected sqlite:///ABSOLUTE/PATH.db")
    elif scheme not in ("file", "") and not (len(scheme) == 1 and os.name == "nt"):
        raise ConfigError(f"--tracking-uri '{redact(uri)}': unsupported scheme '{scheme}'; allowed: {_SCHEMES}")


def check_database(url: str, option: str) -> None:
    """Connect to a PostgreSQL/MySQL URL once, with a timeout.

    Raises:
        TrackingError: naming ``option`` and the redacted URL.
    """
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(database_url(url), connect_args={"connect_timeout": PROBE_TIMEOUT_S})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # noqa: BLE001 - drivers raise many types for a dead server
        raise TrackingError(f"{option} '{redact(url)}' is unreachable: {first_line(err)}") from None


def check_storage(url: str | None) -> None:
    """A database queue storage (``--storage postgresql://…``) answers; journal files and
    SQLite need no probe.

    Raises:
        TrackingError: the database does not answer.
    """
    if url and urlsplit(url).scheme.split("+")[0].lower() in ("postgresql", "mysql"):
        check_database(url, "--storage")


def _probe_http(uri: str) -> None:
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]  # urllib takes no credentials in the URL
    url = f"{parts.scheme}://{host}{parts.path.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):  # behind authentication: it is there
            return
        raise TrackingError(f"tracking server {redact(uri)} is not an MLflow server: GET /health "
                            f"answered HTTP {err.code}") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"tracking server {redact(uri)} is unreachable ({redact(str(reason))}, "
                            f"{PROBE_TIMEOUT_S} s timeout): start it, e.g. `nfstudy ui`, or pass another "
                            "--tracking-uri") from None
