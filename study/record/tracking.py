"""MLflow tracking: the experiments, parent and child runs nfstudy records (README, "Where
results live").

One experiment per study (named after it), one parent run per study (reused by later
invocations), one child run per RunConfig. The coordinator creates the database, the
experiment and the parent before any run starts; workers get ids and never create them.
Everything goes through an explicit :class:`MlflowClient` and run ids (no fluent
active-run stack). Metrics are logged asynchronously in batches, flushed at the run's end.

Nothing is lost when a tracking server goes away: a child run whose call fails while the
server does not answer goes on, writing to the local spool (:mod:`study.record.spool`), and
``nfstudy sync`` (or the next ``nfstudy run``, or the worker itself once the server is
back) uploads it. HTTP calls are bounded (:data:`study.record.stores.HTTP_CLIENT_ENV`) so a
dead server costs seconds, not minutes; a server that answers but fails for a while (its
database restarting) is retried for up to :func:`study.record.outage.outage_s`.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from study import paths
from study.config.code_fingerprint import code_tags
from study.config.run_config import run_params
from study.errors import TrackingError
from study.record import outage, stores
from study.record.optuna_storage import lock_beside
from study.record.spool import SpoolWriter, finished as spool_finished
from study.record.tags import (
    ARM,
    CODE,
    COMPLETED,
    COPIED_FROM,
    DIVERGED,
    ERROR,
    EXPERIMENT_KIND,
    HASH,
    HOST,
    MODEL,
    NOTE,
    OUTCOME,
    PARENT_ID,
    ROLE,
    RUN_NAME,
    STUDY,
    TAG_PREFIX,
)
from study.redaction import first_line, redact

SPOOL_PREFIX = stores.SPOOL_URI
"""Spool-only experiment and parent ids start with it (see :meth:`Tracking.ensure_study`)."""


def param_value(value: Any) -> str:
    """How a config value is stored as an MLflow param (lists as JSON, None as ``None``)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


class Tracking:
    """The MLflow side of a study: experiment, parent run, child runs.

    Args:
        uri: tracking URI; ``None`` = :func:`study.paths.tracking_uri`.
    """

    def __init__(self, uri: str | None = None):
        self.uri = stores.database_url(paths.tracking_uri(uri))
        if self.uri.startswith(("http://", "https://")):
            stores.configure_http_client()
        self.spool_only = self.uri == stores.SPOOL_URI
        """``--tracking-uri spool:``: no store at all; every run goes to the spool."""
        if self.spool_only:
            self.client = None
        elif self.uri.startswith("sqlite:///"):
            # MLflow creates (or migrates) a SQLite store's tables when it opens it: one
            # process at a time, so two `nfstudy run` started together do not both try.
            with lock_beside(Path(self.uri.removeprefix("sqlite:///")), "schema").held():
                self.client = MlflowClient(self.uri)
                self.client.search_experiments(max_results=1)
        else:
            self.client = MlflowClient(self.uri)
        self.offline = self.spool_only
        """True once a call failed because the server did not answer (runs go to the spool)."""
        self.spooled = False
        """True once a run of this process went to the spool (``nfstudy sync`` has work)."""
        self._studies: dict[str, dict[str, Any]] = {}
        """``{experiment id: {experiment name, description, parent tags}}`` as
        :meth:`ensure_study` made them: what the spool needs to find them again on upload."""
        self._known: dict[str, dict[str, str]] = {}
        """``{experiment id: {config hash: outcome}}`` FINISHED as last seen or recorded here,
        so a summary made while offline still counts what finished before the server went."""

    def reachable(self) -> bool:
        """Whether the tracking server answers now (stores that are not servers: always;
        the spool-only mode: never)."""
        if self.spool_only:
            return False
        if not self.uri.startswith(("http://", "https://")):
            return True
        try:
            stores.check_tracking(self.uri)
        except Exception:  # noqa: BLE001 - any failure of the probe means: not now
            return False
        return True

    def retry(self, call):
        """``call()`` through a transient failure of the tracking store (its database
        restarting), for up to :func:`study.record.outage.outage_s`; a server that stops
        answering altogether raises at once (the caller spools)."""
        return outage.retry(call, f"tracking store '{redact(self.uri)}'", give_up=lambda err: not self.reachable())

    def _online(self) -> bool:
        """Not offline, or offline but the server answers again (then online again)."""
        if self.offline and self.reachable():
            self.offline = False
        return not self.offline

    def _real_id(self, experiment_id: str) -> str | None:
        """A spool-only placeholder id (a queue filled with ``--tracking-uri spool:``) as the
        id of the experiment of that name in this store (``None``: not synced yet)."""
        if self.spool_only or not experiment_id.startswith(SPOOL_PREFIX):
            return experiment_id
        found = self.retry(lambda: self.client.get_experiment_by_name(experiment_id.removeprefix(SPOOL_PREFIX)))
        return found.experiment_id if found is not None else None

    def finished_run_id(self, experiment_id: str, config_hash: str) -> str | None:
        """The id of a FINISHED child run of ``config_hash``, else ``None``. While the server
        does not answer: ``"spool"`` for a run waiting in the local spool for ``nfstudy sync``,
        ``"seen"`` for one this process saw FINISHED before the server went away."""
        if self._online():
            try:
                real = self._real_id(experiment_id)
                runs = [] if real is None else self.retry(lambda: self.client.search_runs(
                    [real], max_results=1,
                    filter_string=f"tags.`{HASH}` = '{config_hash}' and tags.`{ROLE}` = 'child' "
                                  "and attributes.status = 'FINISHED'"))
                if runs:
                    return runs[0].info.run_id
            except Exception:
                if self.reachable():
                    raise
                self.offline = True
        if config_hash in spool_finished(experiment_id):
            return "spool"
        return "seen" if config_hash in self._known.get(experiment_id, {}) else None

    def finished_outcomes(self, experiment_id: str) -> dict[str, str]:
        """``{config hash: outcome}`` of the FINISHED child runs, in MLflow or in the spool."""
        known = self._known.setdefault(experiment_id, {})
        outcomes = {**known, **spool_finished(experiment_id)}
        if self._online():
            try:
                real = self._real_id(experiment_id)
                known.update({} if real is None else self.retry(
                    lambda: {run.data.tags.get(HASH, ""): run.data.tags.get(OUTCOME, COMPLETED)
                             for run in self.finished_runs([real])}))
                outcomes.update(known)
            except Exception:
                if self.reachable():
                    raise
                self.offline = True
        return outcomes

    def ensure_study(self, name: str, description: str = "", *,
                     parent: dict[str, str] | None = None) -> tuple[str, str]:
        """Get or create the study's experiment and parent run; returns their ids.

        ``parent`` (tags, optional) picks one of several parents in the experiment, and is
        set on it when created; its ``mlflow.runName`` names it (a search keeps one parent
        per Optuna study in one experiment).

        Spool-only, the ids are placeholders made of the names (``spool:<experiment>``):
        ``nfstudy sync`` finds or creates the real experiment and parent by name."""
        if self.spool_only:
            tags = json.dumps(parent, sort_keys=True) if parent else ""
            experiment_id, parent_id = f"{SPOOL_PREFIX}{name}", f"{SPOOL_PREFIX}{name}{tags}"
            self._studies[experiment_id] = {"experiment": name, "description": description,
                                            "parent_tags": dict(parent or {})}
            return experiment_id, parent_id
        try:
            experiment_id, parent_id = self.retry(lambda: self._ensure_study(name, description, dict(parent or {})))
        except TrackingError:
            raise
        except Exception as err:  # MLflow raises many types for an unusable store
            raise TrackingError(f"tracking store '{redact(self.uri)}' is not usable: {first_line(err)}") from None
        self._studies[experiment_id] = {"experiment": name, "description": description, "parent_tags": dict(parent or {})}
        return experiment_id, parent_id

    def _ensure_study(self, name: str, description: str, tags: dict[str, str]) -> tuple[str, str]:
        """Create-or-get, safe when several processes do it at once: a lost race to create
        the experiment reads the winner's; of parents created at once, all keep the oldest
        and the others delete their own."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if self.uri.startswith("sqlite:") or self.uri.startswith("file:"):
                location = f"{paths.artifact_root()}/{paths.safe_name(name)}"
            try:
                # Tagged as model training, so the MLflow UI opens on its runs (not GenAI traces).
                experiment_id = self.client.create_experiment(name, artifact_location=location,
                                                              tags={EXPERIMENT_KIND: "custom_model_development"})
            except Exception as err:
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise err from None
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        selected = "".join(f" and tags.`{k}` = '{v}'" for k, v in tags.items() if k != RUN_NAME)

        def parents() -> list:
            found = self.client.search_runs([experiment_id], filter_string=f"tags.`{ROLE}` = 'parent'{selected}",
                                            max_results=100)
            return sorted(found, key=lambda run: (run.info.start_time, run.info.run_id))

        found = parents()
        if found:
            return experiment_id, found[0].info.run_id
        mine = self.client.create_run(experiment_id, run_name=tags.pop(RUN_NAME, name),
                                      tags={ROLE: "parent", STUDY: name, NOTE: description, **tags}).info.run_id
        self.client.set_terminated(mine, "FINISHED")
        oldest = parents()[0].info.run_id
        if oldest != mine:  # another process created one at the same moment: keep one
            self.client.delete_run(mine)
        return experiment_id, oldest

    def finished_runs(self, experiment_ids: list[str]):
        """The FINISHED child runs of the experiments, page by page (the results; none
        spool-only: the queue knows what finished)."""
        if self.spool_only:
            return
        token = None
        while True:
            page = self.client.search_runs(
                experiment_ids,
                filter_string=f"tags.`{ROLE}` = 'child' and attributes.status = 'FINISHED'",
                max_results=1000, page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    def finished_hashes(self, experiment_id: str) -> dict[str, str]:
        """``{config hash: run id}`` of the FINISHED child runs (the results)."""
        done: dict[str, str] = {}
        known = self._known.setdefault(experiment_id, {})
        for run in self.finished_runs([experiment_id]):
            done.setdefault(run.data.tags.get(HASH, ""), run.info.run_id)
            known[run.data.tags.get(HASH, "")] = run.data.tags.get(OUTCOME, COMPLETED)
        return done

    def adopt_finished(self, experiment_id: str, parent_id: str, study: str,
                       wanted: dict[str, tuple[str, str]], code: str | None = None) -> int:
        """Copy into this study the FINISHED runs other studies already made of the same
        configs, so a config hash is trained once whichever study asks for it.

        Args:
            wanted: ``{config hash: (arm, run name)}`` of this study's unfinished runs.
            code: copy only runs of this code fingerprint (``None``: stale runs too).

        Returns:
            How many runs were copied (params, tags, full metric histories; the copy is
            tagged ``nfstudy.copied_from`` with the source run id).
        """
        if self.spool_only or not wanted:
            return 0
        others = [e.experiment_id for e in self.client.search_experiments()
                  if e.experiment_id != experiment_id]
        if not others:
            return 0
        copied = 0
        for run in self.finished_runs(others):
            config_hash = run.data.tags.get(HASH)
            if config_hash not in wanted or (code is not None and run.data.tags.get(CODE) != code):
                continue
            arm, run_name = wanted.pop(config_hash)
            tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            tags.update({PARENT_ID: parent_id, STUDY: study, ARM: arm,
                         COPIED_FROM: run.info.run_id})
            copy = self.client.create_run(experiment_id, start_time=run.info.start_time,
                                          run_name=run_name, tags=tags)
            params = [Param(k, v) for k, v in run.data.params.items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(copy.info.run_id, params=params[i:i + 100])
            history = [m for key in run.data.metrics
                       for m in self.client.get_metric_history(run.info.run_id, key)]
            for i in range(0, len(history), 1000):
                self.client.log_batch(copy.info.run_id, metrics=history[i:i + 1000])
            self.client.set_terminated(copy.info.run_id, "FINISHED", end_time=run.info.end_time)
            copied += 1
        return copied

    def start_child(self, experiment_id: str, parent_id: str, study: str, arm: str,
                    run_name: str, config_hash: str, params: dict[str, Any],
                    tags: dict[str, str] | None = None) -> ChildRun:
        """Create a RUNNING child run with its params and tags (``tags`` adds more, set in
        the same call that creates the run, e.g. the queue trial that owns it).

        While the server does not answer, the child run is spooled (:mod:`study.record.spool`)."""
        params = run_params(params)
        tags = {
            PARENT_ID: parent_id, ROLE: "child", STUDY: study, ARM: arm, HASH: config_hash,
            **code_tags(), HOST: socket.gethostname(),
            **(tags or {}),
        }
        # A worker gets the ids from the queue; spool-only, the experiment's name is in its id.
        known = self._studies.get(experiment_id) or (
            {"experiment": experiment_id.removeprefix(SPOOL_PREFIX), "description": ""}
            if experiment_id.startswith(SPOOL_PREFIX) else {"description": ""})
        header = {"study": study, **known,
                  "experiment_id": experiment_id, "parent_id": parent_id, "run_name": run_name,
                  "tags": tags, "params": {k: param_value(v) for k, v in params.items()},
                  "start_time": int(time.time() * 1000)}
        if self._online():
            try:
                run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
            except Exception as err:
                if not self.reachable():
                    self.offline = True
                elif not outage.is_transient(err):
                    raise
            else:
                child = ChildRun(self.client, run.info.run_id, tracking=self, header=header)
                child.log_params(params)
                return child
        child = ChildRun(self.client, None, tracking=self, header=header)
        child.spool = SpoolWriter({**header, "run_id": None})
        self.spooled = True
        return child


class ChildRun:
    """One child run. ``log_metrics`` is asynchronous; :meth:`finish` flushes and closes.

    Given its ``tracking`` and spool ``header`` (as :meth:`Tracking.start_child` does), a
    call that fails while the server does not answer, or answers with a transient failure
    (:func:`study.record.outage.is_transient`), moves the run to the local spool for the
    rest of its life (``self.spool``); any other failure raises as usual.
    """

    def __init__(self, client: MlflowClient, run_id: str | None, *, tracking: Tracking | None = None,
                 header: dict[str, Any] | None = None):
        self.client, self.run_id = client, run_id
        self._pending: list[tuple[Any, list[Metric]]] = []
        # One background thread per run: MLflow's own async queue polls with a 1 s timeout,
        # which set_terminated waits out (~0.7 s per run, measured by ``nfstudy bench``).
        self._logger: ThreadPoolExecutor | None = None
        self._tracking, self._header = tracking, header
        self.spool: SpoolWriter | None = None

    def _to_spool(self, err: Exception) -> SpoolWriter:
        """The spool, opened on the first failure while the server is unreachable or failing
        for now; ``err`` is raised again when it is something else."""
        if self.spool is None:
            if self._tracking is None or self._header is None:
                raise err
            if self._tracking.reachable():
                if not outage.is_transient(err):
                    raise err
            else:
                self._tracking.offline = True
            self._tracking.spooled = True
            self.spool = SpoolWriter({**self._header, "run_id": self.run_id})
        return self.spool

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags on the run (into the spool while the server does not answer)."""
        if self.spool is None:
            try:
                self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
                return
            except Exception as err:
                self._to_spool(err)
        self.spool.tags({k: str(v) for k, v in tags.items()})

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, param_value(v)) for k, v in params.items()]
        if self.spool is not None:
            self.spool.append({"kind": "params", "params": {p.key: p.value for p in items}})
            return
        try:
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=items[i:i + 100])
        except Exception as err:
            self._to_spool(err).append({"kind": "params", "params": {p.key: p.value for p in items}})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if self.spool is not None:
            self.spool.metrics(batch)
            return
        try:
            if self._logger is None:
                self._logger = ThreadPoolExecutor(1, thread_name_prefix="nfstudy-metrics")
            self._pending.append((self._logger.submit(self.client.log_batch, self.run_id, metrics=batch), batch))
        except Exception as err:
            self._to_spool(err).metrics(batch)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for operation, batch in pending:
            try:
                operation.result()
            except Exception as err:
                self._to_spool(err).metrics(batch)
        if self._logger is not None:
            self._logger.shutdown()
            self._logger = None

    def log_dataset(self, name: str, digest: str, source: str, profile: dict[str, Any]) -> None:
        """``train.log_dataset``: the data set as the run's training input (MLflow's
        ``log_inputs``: the UI's "Datasets used"), named ``name``, identified by ``digest``
        (``data.id``), read from ``source``; ``profile``: its shape facts. Nothing while spooled."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        if self.spool is not None or self.run_id is None:
            return
        dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
                          profile=json.dumps(profile))
        try:
            self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
        except Exception as err:  # noqa: BLE001 - the result matters more than its provenance
            if not outage.is_transient(err) and self._tracking is not None and self._tracking.reachable():
                raise

    def log_state_dict(self, state: dict[str, Any]) -> None:
        """``train.log_model``: the trained weights as artifact ``model/state_dict.pt`` (read
        back with ``torch.load(path, weights_only=True)``). A run in the spool (its server
        away) keeps no weights: tag ``nfstudy.model`` says so."""
        import tempfile

        import torch

        if self.spool is None and self.run_id is not None:
            with tempfile.TemporaryDirectory(prefix="nfstudy-model-") as folder:
                path = Path(folder) / "state_dict.pt"
                torch.save(state, path)
                try:
                    self.client.log_artifact(self.run_id, str(path), "model")
                    return
                except Exception as err:  # noqa: BLE001 - the result matters more than its weights
                    if not outage.is_transient(err) and self._tracking is not None and self._tracking.reachable():
                        raise
        away = "tracking went to the spool only" if self._tracking and self._tracking.spool_only \
            else "the tracking server was away"
        self.set_tags({MODEL: f"not logged: {away}"})

    def finish(self, result: dict[str, Any]) -> None:
        """Log the final metrics (``test/*``, ``time/*``, ``final/*`` copies), the outcome
        tag and the result's ``nfstudy.*`` entries as tags, then mark the run FINISHED.

        Per-epoch keys (``val/*``, ``train/*``) are not logged again, so learning curves
        keep one point per epoch, except for a diverged run, whose chance-level result is
        logged one step after its last epoch."""
        self.flush()
        outcome = str(result.get("outcome", COMPLETED))
        numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        finals = {k: v for k, v in numbers.items()
                  if outcome == DIVERGED or not k.startswith(("val/", "train/"))}
        finals.update({f"final/{k}": v for k, v in numbers.items() if k.startswith(("val/", "train/"))})
        now = int(time.time() * 1000)
        step = int(result.get("epochs", 0))
        metrics = [Metric(k, float(v), now, step) for k, v in finals.items()]
        # The trainer's own tags (``nfstudy.agc_floor_bound``) ride in the result.
        tags = {OUTCOME: outcome, **{k: str(v) for k, v in result.items() if k.startswith(TAG_PREFIX)}}
        if self.spool is None:
            try:
                self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
            except Exception as err:
                self._to_spool(err)
        if self.spool is not None:
            self.spool.metrics(metrics)
            self.spool.tags(tags)
        self._terminate("FINISHED")
        if self._tracking is not None and self._header is not None:
            self._tracking._known.setdefault(self._header["experiment_id"], {})[
                self._header["tags"][HASH]] = outcome

    def _terminate(self, status: str) -> None:
        if self.spool is None:
            try:
                self.client.set_terminated(self.run_id, status)
                return
            except Exception as err:
                self._to_spool(err)
        self.spool.end(status)

    def end(self, status: str, reason: str = "", tags: dict[str, str] | None = None) -> None:
        """Close the run as FAILED or KILLED (not a result; the next ``run`` retries it),
        with ``reason`` as its ``nfstudy.error`` tag and any other ``tags``."""
        assert status in ("FAILED", "KILLED"), status
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - the run is failing already; keep the first error
            pass
        tags = {**(tags or {}), **({ERROR: reason[:5000]} if reason else {})}
        if tags:
            self.set_tags(tags)
        self._terminate(RunStatus.to_string(RunStatus.from_string(status)))
