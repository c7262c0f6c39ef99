"""``study.run_study``: ``nfstudy run`` from Python (a notebook), returning the results.

Example (a Jupyter cell)::

    import study

    frame = study.run_study("quickstart", preset="smoke", seeds="0-1")
    frame.groupby("arm")["test/top1"].mean()

Progress is the command's: rich bars in Jupyter and at a terminal, timestamped lines in a
log. Bad input raises :class:`study.NfstudyError` (one message naming the problem) before
anything is written; failed runs raise it after the others have run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from study.errors import NfstudyError

if TYPE_CHECKING:
    import pandas as pd


def run_study(study: str, *, preset: str | None = None, set: list[str] | None = None,  # noqa: A002 - the CLI's
              sweep: list[str] | None = None, seeds: str | None = None, add_seeds: int = 0,
              only: list[str] | None = None, workers: int = 1, tracking_uri: str | None = None,
              storage: str | None = None) -> pd.DataFrame:
    """Train what is not finished of ``study`` (a name or a study file), as ``nfstudy run``
    with the same options, and return its results.

    Args:
        study: a study name or the path of a study YAML file.
        preset, set, sweep, seeds, add_seeds, only, workers, tracking_uri, storage: the
            options of ``nfstudy run`` (``set=["agc.clipping=0.02"]``, ``sweep=["optim.lr=0.1,0.2"]``,
            ``seeds="0-4"``).

    Returns:
        The tidy frame of the plan's results (:func:`analysis.runs.results`): one row per
        FINISHED run (completed or diverged), with ``arm``, ``config_hash``, every config
        key as a column (``agc.clipping``, ``seed``…) and every metric (``val/top1``,
        ``test/top1``…).

    Raises:
        NfstudyError: bad input, or runs that failed.
        KeyboardInterrupt: interrupted; calling it again resumes.
    """
    from analysis.runs import load_runs, results
    from study import paths
    from study.cli.app import _plan, run

    try:
        run(study, preset=preset, set_=set, sweep=sweep, seeds=seeds, add_seeds=add_seeds, only=only, force=False,
            imports=None, dry_run=False, tracking_uri=tracking_uri, workers=workers, storage=storage,
            nproc_per_node=1, reuse_stale=False, rerun_stale=False)
    except typer.Exit as err:
        if err.exit_code:
            raise NfstudyError(f"{study}: runs failed (see the lines above); the others are recorded") from None
    spec, runs = _plan(study, preset, set, sweep, seeds, add_seeds)
    frame = results(load_runs(spec.name, paths.tracking_uri(tracking_uri)))
    return frame[frame["config_hash"].isin({r.config_hash for r in runs})].reset_index(drop=True)
