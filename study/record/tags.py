"""Every name nfstudy writes into MLflow and Optuna: run tags, trial attrs, outcomes.

One home for each name, importing nothing, so the recorder, the queue, the search and the
report (which reads MLflow) spell them the same way.
"""

# -- MLflow tags of every run nfstudy creates ----------------------------------------------
ROLE = "nfstudy.role"
"""``parent`` (one per study, or per Optuna study of a search) or ``child`` (one per config)."""
STUDY = "nfstudy.study"
ARM = "nfstudy.arm"
HASH = "nfstudy.config_hash"
OUTCOME = "nfstudy.outcome"
"""A FINISHED child run's result kind: :data:`COMPLETED` or :data:`DIVERGED` (searches also
:data:`PRUNED`)."""
ERROR = "nfstudy.error"
"""Why a run was closed FAILED or KILLED."""
GIT_COMMIT = "nfstudy.git_commit"
HOST = "nfstudy.host"
COPIED_FROM = "nfstudy.copied_from"
"""Run id of the FINISHED run (of another study) that a copied run was made from."""
SPOOL_ID = "nfstudy.spool_id"
"""Id of the spool file a run was uploaded from by ``nfstudy sync``."""
QUEUE_TRIAL = "nfstudy.queue_trial"
"""The queue trial that owns a child run: ``<queue name>#<trial id>``."""

AGC_FLOOR_BOUND = "nfstudy.agc_floor_bound"
"""``true`` on a child run whose SkipInit gains never left AGC's ε floor (a small multiple
of ``agc.eps``), else ``false``; written by the trainer from its AGC telemetry. A report reads
it as the run's floor-bound flag (``analysis.floor``)."""
VERDICT_PREFIX = "nfstudy.verdict."
"""``nfstudy.verdict.<claim>`` (``nfstudy.verdict.<scale>.<claim>`` for another scale's runs)
on a study's parent run: the verdict ``nfstudy report`` reached, e.g. ``supported; 3 pairs;
resolved``."""

# -- MLflow metrics nfstudy writes besides the trainer's scores --------------------------------
AGC_MAX_SKIPINIT_GAIN = "agc/max_skipinit_gain"
"""The largest |SkipInit gain| of a child run's net (AGC telemetry, logged per epoch)."""
SUMMARY_PREFIX = "summary/"
"""Metrics of a study's parent run after ``nfstudy report``: ``summary/[<scale>/]mean/<cell>/<metric>``
(mean over seeds), ``summary/[<scale>/]delta/<comparison>/<metric>`` (mean paired Δ) and
``summary/[<scale>/]runs_missing``, so the runs table answers the question."""

# -- MLflow tags of searches --------------------------------------------------------------------
SEARCH = "nfstudy.search"
OPTUNA_STUDY = "nfstudy.optuna_study"
TRIAL_NUMBER = "optuna.trial_number"
PRUNED_AT_EPOCH = "nfstudy.pruned_at_epoch"
BEST_PARAMS = "nfstudy.best_params"
BEST_TRIAL = "nfstudy.best_trial"
N_TRIALS = "nfstudy.n_trials"

# -- MLflow's own tags ---------------------------------------------------------------------------
PARENT_ID = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
NOTE = "mlflow.note.content"
EXPERIMENT_KIND = "mlflow.experimentKind"

# -- outcomes (tag OUTCOME, trial user attr "outcome") -----------------------------------------
COMPLETED = "completed"
DIVERGED = "diverged"
PRUNED = "pruned"
LOST = "lost"
RESULT_OUTCOMES = (COMPLETED, DIVERGED)
"""Outcomes that are results (a pruned or lost run is not)."""

# -- Optuna trial attrs ----------------------------------------------------------------------------
OWNER_ATTR = "nfstudy:owner"
"""System attr of a RUNNING trial: the process that runs it."""
HEARTBEAT_ATTR = "nfstudy:heartbeat"
