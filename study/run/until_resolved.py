"""``nfstudy run STUDY --until-resolved``: after the planned seeds, add one paired seed at a
time to the cells that an unresolved paper claim needs, until every claim is resolved or
cannot be by more seeds, or the cells have ``--max-seeds`` seeds.

Each round asks :func:`analysis.sequential.claim_status` (anytime-valid confidence
sequences, so looking after every round keeps each verdict's 95% guarantee) which cells its
open comparisons need, plans the next seed (one above every seed so far) for exactly those
cells (both sides of each comparison, so they stay paired) and trains them through the
study's queue like any run. The configs of the existing seeds are untouched (a seed is
one more value of the study's ``seeds`` axis), so their hashes and results stay.

Resumable: each round is decided from the runs of the seeds before it alone, and runs are
cached by config hash, so rerunning the same command after a crash replays the finished
rounds without training and continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from study.config.expand import PlannedRun, plan
from study.config.study_file import StudySpec
from study.errors import ConfigError

DEFAULT_MAX_SEEDS = 10
"""Seeds per cell at most, planned ones included, unless ``--max-seeds`` says otherwise."""


@dataclass
class Outcome:
    """Where ``--until-resolved`` stopped: each claim's status, the seeds the study's cells
    reached, and the runs that failed in the last round (it stops there)."""

    status: list
    seeds: list[int]
    failed: list[str]


def check(spec: StudySpec, max_seeds: int) -> None:
    """Raises ConfigError unless the study has paper claims to resolve and ``max_seeds`` is
    at least its planned seeds."""
    if not spec.paper:
        raise ConfigError(f"--until-resolved: {spec.name} has no 'paper:' key, so no claims to resolve")
    if spec.search is not None:
        raise ConfigError(f"--until-resolved: {spec.name} is a search; seeds are added to grid studies only")
    if max_seeds < len(spec.seeds):
        raise ConfigError(f"--max-seeds {max_seeds}: below the {len(spec.seeds)} seeds {spec.name} plans "
                          f"({', '.join(map(str, spec.seeds))}); give at least {len(spec.seeds)}")


def _matches(run: PlannedRun, cell) -> bool:
    """Whether a planned run sits in a cell of the report (its arm and grid values)."""
    return run.arm == cell.arm and all(_same(run.point.get(key), value) for key, value in cell.point)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b or str(a) == str(b)


def statuses(spec: StudySpec, frame: pd.DataFrame):
    """:func:`analysis.sequential.claim_status` of the study's claims on ``frame``."""
    from analysis.sequential import claim_status

    return claim_status(frame, spec.paper, grid_keys=tuple(spec.grid), select_metric=spec.metric)


def resolve(spec: StudySpec, runs: list[PlannedRun], *, preset: str | None, overrides: dict,
            load: Callable[[set[str]], pd.DataFrame], train: Callable[[list[PlannedRun]], list[str]],
            max_seeds: int = DEFAULT_MAX_SEEDS, say: Callable[[str], None] = print) -> Outcome:
    """Add seeds round by round (the module text) and return the claims' final status.

    Args:
        spec: the study.
        runs: its planned runs, trained already.
        preset, overrides: the scale they were planned at (the added seeds share it).
        load: the study's result runs restricted to the given config hashes.
        train: trains the given runs (those FINISHED already are skipped) and returns a line
            per run that failed.
        max_seeds: seeds per cell at most.
        say: prints one line.

    Returns:
        The :class:`analysis.sequential.ClaimStatus` of every claim after the last round,
        the seeds and the failures that stopped it (if any).
    """
    scheduled, seeds = list(runs), list(spec.seeds)
    while True:
        status = statuses(spec, load({run.config_hash for run in scheduled}))
        open_ = [s for s in status if not s.resolved and not s.blocked]
        for s in status:
            say(f"  {s.claim}: {s.verdict.verdict}; {s.pairs} pairs; {s.text()}")
        if not open_:
            say(f"{spec.name}: every claim is resolved or cannot be by more seeds ({len(seeds)} seeds)")
            return Outcome(status, seeds, [])
        if len(seeds) >= max_seeds:
            say(f"{spec.name}: stopped at --max-seeds {max_seeds} with {len(open_)} claim(s) not resolved: "
                + ", ".join(s.claim for s in open_))
            return Outcome(status, seeds, [])
        seed = max(seeds) + 1
        seeds.append(seed)
        needs = {cell for s in open_ for cell in s.needs}
        widened = spec.model_copy(update={"seeds": [seed]})
        added = [run for run in plan(widened, preset=preset, overrides=overrides)
                 if any(_matches(run, cell) for cell in needs)]
        say(f"round {len(seeds) - len(spec.seeds)}: seed {seed} for {len(added)} run(s) in "
            f"{', '.join(sorted(c.text() for c in needs))} (needed by {', '.join(s.claim for s in open_)})")
        scheduled += added
        failed = train(scheduled)
        if failed:
            return Outcome(status, seeds, failed)


def resolve_study(spec: StudySpec, runs: list[PlannedRun], *, preset: str | None, overrides: dict,
                  tracking_uri: str, execute_runs: Callable[[list[PlannedRun]], object],
                  max_seeds: int = DEFAULT_MAX_SEEDS, say: Callable[[str], None] = print) -> Outcome:
    """:func:`resolve` on the study's MLflow runs, training through ``execute_runs`` (which
    returns a :class:`study.run.coordinator.Summary`).

    Raises:
        KeyboardInterrupt: a round was interrupted (Ctrl-C, SIGTERM); the next run resumes it.
    """
    from analysis.runs import load_runs, results

    def load(hashes: set[str]) -> pd.DataFrame:
        recorded = load_runs(spec.name, tracking_uri)
        return results(recorded[recorded["config_hash"].isin(hashes)])

    def train(scheduled: list[PlannedRun]) -> list[str]:
        summary = execute_runs(scheduled)
        say(f"  trained {summary.completed + summary.diverged} ({summary.diverged} diverged), "
            f"{summary.done_before} were already done")
        if summary.interrupted:
            raise KeyboardInterrupt
        return list(summary.failed)

    say(f"{spec.name}: --until-resolved, up to {max_seeds} seeds per cell")
    return resolve(spec, runs, preset=preset, overrides=overrides, load=load, train=train, max_seeds=max_seeds,
                   say=say)


def recorded_seed_hashes(spec: StudySpec, preset: str | None, overrides: dict, recorded: pd.DataFrame) -> set[str]:
    """The config hashes of recorded runs that are seeds ``--until-resolved`` added to the
    study at this scale (its cells, another seed), for the report to count them in."""
    if recorded.empty or "seed" not in recorded.columns:
        return set()
    extra = sorted({int(s) for s in pd.to_numeric(recorded["seed"], errors="coerce").dropna()} - set(spec.seeds))
    if not extra:
        return set()
    widened = spec.model_copy(update={"seeds": extra})
    return {run.config_hash for run in plan(widened, preset=preset, overrides=overrides)} & set(recorded["config_hash"])
