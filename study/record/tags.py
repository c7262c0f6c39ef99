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
"""The queue trial that owns a child run: ``<queue name>@<queue uid>#<trial id>``."""

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
"""System attr of a RUNNING trial on a journal file: the owner's last heartbeat (Unix time)."""
ENDED_ATTR = "ended"
"""User attr of a FAIL queue trial: why it ended (``study.run.queue.EndKind``)."""
