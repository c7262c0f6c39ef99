"""The run cache: what a study's plan finds already recorded, and what is left to train.

A planned run is *done* when its study has a FINISHED child run of the same config hash
trained by the same code (tag ``nfstudy.code``, :mod:`study.config.code_fingerprint`); a
*copy* when only another study has one (it is copied in, tagged ``nfstudy.copied_from``);
*stale* when the only FINISHED runs of its hash were trained by other code, or recorded
before nfstudy fingerprinted code (*unknown*). Stale runs are never reused silently:
``nfstudy run`` stops and asks for ``--reuse-stale`` (count them as done, copy stale runs of
other studies too) or ``--rerun-stale`` (train them again; the stale run stays in MLflow for
its history, re-tagged ``nfstudy.role=superseded``, so no result query sees it).

:func:`survey` only reads, so ``nfstudy run --dry-run`` and ``nfstudy show`` predict what a
real run does from the same answer the coordinator acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from study.config.code_fingerprint import code_fingerprint
from study.config.expand import PlannedRun
from study.errors import NfstudyError
from study.record.tags import CODE, HASH, ROLE, SUPERSEDED

if TYPE_CHECKING:  # MLflow is imported only where a store is opened: `nfstudy show` reads SQLite directly
    from study.record.tracking import Tracking


class Stale(str, Enum):
    """What to do with stale runs: stop (the default), reuse them, or train them again."""

    STOP = "stop"
    REUSE = "reuse"
    RERUN = "rerun"


class StaleRunsError(NfstudyError):
    """FINISHED runs of the plan were trained by other code, and no ``--reuse-stale`` /
    ``--rerun-stale`` says what to do with them."""


@dataclass
class Survey:
    """The plan's runs by state, each ``{config hash: run id}`` (the recorded run it refers to)."""

    total: int
    done: dict[str, str] = field(default_factory=dict)
    """FINISHED in this study by this code (or stale, counted as done with ``--reuse-stale``)."""
    copies: dict[str, str] = field(default_factory=dict)
    """FINISHED in another study (by this code, or any code with ``--reuse-stale``): copied in."""
    stale: dict[str, str] = field(default_factory=dict)
    """FINISHED in this study by other code."""
    unknown: dict[str, str] = field(default_factory=dict)
    """FINISHED in this study before code fingerprints were recorded."""
    policy: Stale = Stale.STOP
    forced: set[str] = field(default_factory=set)
    """``--force``: hashes to train again whatever is recorded (their FINISHED runs superseded)."""

    def forced_again(self) -> Survey:
        """The survey ``--force`` acts on: nothing done, copied or stale; every run recorded
        of the plan is superseded and trained again."""
        return Survey(total=self.total, policy=self.policy, forced={*self.done, *self.stale, *self.unknown})

    @property
    def kept(self) -> set[str]:
        """The hashes that count as done: fresh ones, and stale ones with ``--reuse-stale``."""
        stale = self.stale.keys() | self.unknown.keys() if self.policy == Stale.REUSE else set()
        return set(self.done) | stale

    @property
    def to_train(self) -> int:
        """Runs the workers will train (none of the stale ones until a policy is chosen)."""
        blocked = len(self.stale) + len(self.unknown) if self.policy == Stale.STOP else 0
        return self.total - len(self.kept) - len(self.copies) - blocked

    def summary(self) -> str:
        """``"3 done, 2 stale reused, 4 copied from other studies, 3 to run"``: one line, the
        same from ``--dry-run`` and from the run itself."""
        old = len(self.stale) + len(self.unknown)
        parts = [f"{len(self.done)} done"] + ([f"{len(self.forced)} done but forced (superseded)"]
                                                if self.forced else [])
        if old:
            unknown = f", {len(self.unknown)} of them unfingerprinted" if self.unknown else ""
            verb = {Stale.REUSE: "reused", Stale.RERUN: "superseded", Stale.STOP: "found"}[self.policy]
            parts.append(f"{old} stale {verb} (trained by other code{unknown})")
        if self.copies:
            parts.append(f"{len(self.copies)} copied from other studies")
        parts.append(f"{self.to_train} to run")
        return ", ".join(parts)

    def check(self, study: str) -> None:
        """Raise :class:`StaleRunsError` when stale runs are found and no policy is chosen."""
        old = len(self.stale) + len(self.unknown)
        if old and self.policy == Stale.STOP:
            unknown = (f" ({len(self.unknown)} recorded before nfstudy fingerprinted code)"
                       if self.unknown else "")
            raise StaleRunsError(
                f"{study}: {old} finished runs were trained by other code{unknown}, so their results may not be "
                f"what this code computes: --reuse-stale keeps them, --rerun-stale trains them again "
                f"(nfstudy run {study} --dry-run lists them)")


def open_tracking(uri: str) -> Tracking | None:
    """The tracking store at ``uri`` to read from, or ``None`` when it is a SQLite file that
    does not exist (reading must not create it)."""
    from study.record.tracking import Tracking

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    return Tracking(uri)


@dataclass(frozen=True)
class Recorded:
    """One FINISHED child run as the survey reads it."""

    run_id: str
    config_hash: str | None
    code: str | None


def survey(tracking: Tracking | None, study: str, runs: list[PlannedRun], policy: Stale = Stale.STOP,
           code: str | None = None) -> Survey:
    """Sort a plan's runs by what MLflow holds for them (reads only).

    Args:
        tracking: the store; ``None`` for one that does not exist yet (nothing is done).
        study: the study's name (its MLflow experiment).
        runs: the planned runs.
        policy: what to do with stale runs.
        code: the fingerprint runs must carry to be fresh (default: this process's code).
    """
    found = Survey(total=len({run.config_hash for run in runs}), policy=policy)
    if tracking is None or tracking.spool_only:  # spool-only: the queue knows what finished
        return found
    experiment = tracking.client.get_experiment_by_name(study)
    ours = experiment.experiment_id if experiment is not None else None

    def recorded(experiment_ids: list[str]) -> Iterable[Recorded]:
        return (Recorded(run.info.run_id, run.data.tags.get(HASH), run.data.tags.get(CODE))
                for run in tracking.finished_runs(experiment_ids))

    def others() -> Iterable[Recorded]:
        ids = [e.experiment_id for e in tracking.client.search_experiments() if e.experiment_id != ours]
        return recorded(ids) if ids else []

    return classify(recorded([ours]) if ours is not None else [], others, runs, policy, code)


def classify(ours: Iterable[Recorded], others: Callable[[], Iterable[Recorded]], runs: list[PlannedRun],
             policy: Stale = Stale.STOP, code: str | None = None) -> Survey:
    """Sort a plan's runs by the FINISHED runs of its study (``ours``) and, for what is left,
    of the other studies (``others()``, read only when needed): the rules of :func:`survey`."""
    found = Survey(total=len({run.config_hash for run in runs}), policy=policy)
    code = code or code_fingerprint()
    wanted = {run.config_hash for run in runs}
    for run in ours:
        if run.config_hash not in wanted:
            continue
        if run.code == code:
            found.done[run.config_hash] = run.run_id
        else:
            (found.stale if run.code else found.unknown)[run.config_hash] = run.run_id
    for fresh in list(found.done):  # a fresh run makes older ones of its hash irrelevant
        found.stale.pop(fresh, None)
        found.unknown.pop(fresh, None)
    settled = found.done.keys() if policy == Stale.RERUN else found.done.keys() | found.stale.keys() | found.unknown.keys()
    if wanted - settled:
        for run in others():
            if (run.config_hash in wanted and run.config_hash not in settled and run.config_hash not in found.copies
                    and (policy == Stale.REUSE or run.code == code)):
                found.copies[run.config_hash] = run.run_id
    return found


def supersede(tracking: Tracking, found: Survey, experiment_id: str | None = None) -> int:
    """``--rerun-stale``: re-tag the plan's stale runs ``nfstudy.role=superseded`` so that no
    query for results sees them and their configs are trained again; ``--force``: the same
    for every FINISHED run of the forced hashes in ``experiment_id``. Returns how many."""
    ids = set({**found.stale, **found.unknown}.values()) if found.policy == Stale.RERUN else set()
    if found.forced and experiment_id is not None:
        ids |= {run.info.run_id for run in tracking.finished_runs([experiment_id])
                if run.data.tags.get(HASH) in found.forced}
    for run_id in ids:
        tracking.client.set_tag(run_id, ROLE, SUPERSEDED)
    return len(ids)
