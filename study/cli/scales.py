"""Which scales of a study have runs: what ``nfstudy report NAME`` reports when no
``--preset``/``--set`` says which.

A scale is the study at its own base preset or at another preset (``--preset smoke``);
each plans to its own config hashes. A scale *has runs* when a FINISHED run of its study
carries one of its hashes. Runs made with ``--set`` overrides belong to no preset: they are
counted, and reported only when asked for with the same ``--set``.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.config.expand import PlannedRun, plan
from study.config.preset import list_presets
from study.config.study_file import StudySpec
from study.errors import NfstudyError


@dataclass(frozen=True)
class Scale:
    """One scale of a study: the preset that makes it (``None``: the study's own base)."""

    preset: str | None
    runs: list[PlannedRun]
    finished: int
    """How many of its planned runs are FINISHED."""

    @property
    def label(self) -> str:
        return f"preset {self.preset}" if self.preset else "base"


def scales_with_runs(spec: StudySpec, finished: set[str]) -> tuple[list[Scale], int]:
    """The scales of ``spec`` that have FINISHED runs among ``finished`` (config hashes),
    the study's own base first, each once (a preset that plans the same runs as the base is
    the base); and how many of ``finished`` belong to no preset scale.

    A preset the study cannot be planned at (e.g. one that needs a ``data.root``) has no runs.
    """
    scales: list[Scale] = []
    seen: list[set[str]] = []
    for preset in [None, *list_presets()]:
        try:
            runs = plan(spec, preset=preset)
        except NfstudyError:
            continue
        hashes = {run.config_hash for run in runs}
        if hashes in seen:
            continue
        seen.append(hashes)
        if count := len(hashes & finished):
            scales.append(Scale(preset, runs, count))
    covered = set().union(*seen) if seen else set()
    return scales, len(finished - covered)
