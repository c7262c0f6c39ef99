"""Where runs and queues are stored, reached safely: URL normalisation, bounded HTTP
clients, and probes that answer in seconds (never hang) before anything is written.

Messages show URLs redacted.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from study.errors import ConfigError, TrackingError
from study.redaction import redact

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
_SCHEMES = "sqlite:///PATH, http(s)://HOST:PORT, postgresql://USER@HOST:PORT/DB, mysql://…, file:///PATH"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` with the installed driver: SQLAlchemy 2.1 defaults to psycopg 3,
    this project ships psycopg2."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def configure_http_client() -> None:
    """Bound MLflow's HTTP retries and timeout (:data:`HTTP_CLIENT_ENV`) in this process."""
    for name, value in HTTP_CLIENT_ENV.items():
        os.environ.setdefault(name, value)


def check_tracking(uri: str) -> None:
    """The tracking URI is well formed and its server or database answers (nothing created).

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
        engine = sqlalchemy.create_engine(sqlalchemy_url(url), connect_args={"connect_timeout": PROBE_TIMEOUT_S})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # noqa: BLE001 - drivers raise many types for a dead server
        raise TrackingError(f"{option} '{redact(url)}' is unreachable: {_first_line(err)}") from None


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


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return redact(lines[0][:300]) if lines else type(err).__name__
