"""What ``nfstudy list`` and ``show`` read of a SQLite tracking store, without MLflow.

``import mlflow`` alone takes seconds; these commands only count FINISHED child runs by
config hash and code, so they read MLflow's tables (``runs``, ``tags``, ``experiments``)
directly, in one read-only query. Any other store (a server, PostgreSQL), or a SQLite file
whose schema this does not know, is read through MLflow as before (:func:`finished_runs`
returns ``None``).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path

from study.record.tags import CODE, HASH, ROLE

QUERY = f"""
SELECT r.run_uuid, e.name, e.lifecycle_stage, h.value, c.value
FROM runs r
JOIN experiments e ON e.experiment_id = r.experiment_id
JOIN tags role ON role.run_uuid = r.run_uuid AND role.key = '{ROLE}' AND role.value = 'child'
LEFT JOIN tags h ON h.run_uuid = r.run_uuid AND h.key = '{HASH}'
LEFT JOIN tags c ON c.run_uuid = r.run_uuid AND c.key = '{CODE}'
WHERE r.status = 'FINISHED' AND r.lifecycle_stage = 'active'
"""


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI, else ``None``."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def finished_runs(uri: str):
    """``{experiment name: [Recorded, ...]}`` of the FINISHED child runs in a SQLite store
    (deleted runs left out; runs of deleted experiments under the key ``(name, "deleted")``
    so that only a study's own lookup sees them, as MLflow's search does); ``{}`` for a file
    that does not exist; ``None`` when ``uri`` is not such a store or cannot be read so."""
    from study.run.run_cache import Recorded

    path = sqlite_path(uri)
    if path is None:
        return None
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            rows = db.execute(QUERY).fetchall()
    except sqlite3.Error:
        return None
    found: dict = defaultdict(list)
    for run_id, experiment, stage, config_hash, code in rows:
        found[experiment if stage == "active" else (experiment, "deleted")].append(Recorded(run_id, config_hash,
                                                                                             code))
    return found


def survey_sqlite(uri: str, study: str, runs, policy=None, recorded=None):
    """:func:`study.run.run_cache.survey` of a SQLite store without MLflow (``recorded``:
    what :func:`finished_runs` returned, to survey many studies from one read); ``None``
    when the store must be read through MLflow."""
    from study.cli.plan_cache import code_fingerprint
    from study.run.run_cache import Stale, classify

    found = finished_runs(uri) if recorded is None else recorded
    if found is None:
        return None
    ours = found.get(study, []) + found.get((study, "deleted"), [])
    others = [run for name, recorded in found.items() if isinstance(name, str) and name != study
              for run in recorded]
    return classify(ours, lambda: others, runs, policy or Stale.STOP, code_fingerprint())
