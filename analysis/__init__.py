"""Analysis of nfstudy runs: MLflow → pandas → statistics → figures → report.

``analysis`` reads the MLflow store that ``study.record.tracking`` writes and never imports the
training framework (only ``study.errors``). Modules: :mod:`analysis.runs` (load runs),
:mod:`analysis.stats` (means, 95% CIs, paired Δ), :mod:`analysis.roles` (sides of a paper
comparison), :mod:`analysis.reference` (the paper's numbers, claims and verdict rules),
:mod:`analysis.figures` and :mod:`analysis.report`.
"""

from analysis.runs import load_history, load_runs, results

__all__ = ["load_history", "load_runs", "results"]
