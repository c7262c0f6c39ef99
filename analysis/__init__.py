"""Analysis of nfstudy runs: MLflow and Optuna → pandas → statistics → figures → report.

``analysis`` reads the MLflow store that ``study.record.tracking`` writes and the Optuna
storage that ``nfstudy search`` writes, and never imports the training framework (only
``study.errors`` and the record names of ``study.record.tags``). Modules, in the order data
flows: :mod:`analysis.runs` (MLflow → one row per run), :mod:`analysis.trials` (Optuna → one
row per trial), :mod:`analysis.stats` (means, 95% CIs, paired Δ), :mod:`analysis.formats`
(how values and intervals are written), :mod:`analysis.roles` (sides of a paper comparison,
read from params), :mod:`analysis.rules` (verdicts of a claim), :mod:`analysis.reference`
(one entry per paper result: claims, figures, needs, search recommendation),
:mod:`analysis.figures` and :mod:`analysis.search_figures`, :mod:`analysis.document`
(Markdown/HTML), :mod:`analysis.report` and :mod:`analysis.search_report`.
"""

from analysis.runs import load_history, load_runs, results

__all__ = ["load_history", "load_runs", "results"]
