"""Every name nfstudy writes into MLflow and Optuna: run tags, trial attrs, outcomes.

One home for each name, importing nothing, so the recorder, the queue, the search and the
report (which reads MLflow) spell them the same way.
"""

# -- MLflow tags of every run nfstudy creates ----------------------------------------------
TAG_PREFIX = "nfstudy."
"""Every nfstudy tag starts so; a training result's entries that do are written as tags."""
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
"""The git commit of the code that ran, for information (identity is :data:`CODE`)."""
GIT_DIRTY = "nfstudy.git_dirty"
"""``true`` when the work tree had uncommitted changes, ``false``, or ``unknown``."""
CODE = "nfstudy.code"
"""Fingerprint of the source that trains (``study.config.code_fingerprint``). A FINISHED run
with another fingerprint than the running code is *stale*: never reused silently."""
SUPERSEDED = "superseded"
"""Value of :data:`ROLE` on a stale child run retrained by ``nfstudy run --rerun-stale``: kept
for its history, no longer a child run (no query for results sees it)."""
HOST = "nfstudy.host"
COPIED_FROM = "nfstudy.copied_from"
"""Run id of the FINISHED run (of another study) that a copied run was made from."""
SPOOL_ID = "nfstudy.spool_id"
"""Id of the spool file a run was uploaded from by ``nfstudy sync``."""
QUEUE_TRIAL = "nfstudy.queue_trial"
"""The queue trial that owns a child run: ``<queue name>@<queue uid>#<trial id>``."""
MODEL = "nfstudy.model"
"""Why a run with ``train.log_model`` has no ``model/state_dict.pt`` artifact."""

AGC_FLOOR_BOUND = "nfstudy.agc_floor_bound"
"""``true`` on a child run whose SkipInit gains never left AGC's ε floor (a small multiple
of ``agc.eps``), else ``false``; written by the trainer from its AGC telemetry. A report reads
it as the run's floor-bound flag (``analysis.floor``)."""
VERDICT_PREFIX = "nfstudy.verdict."
"""``nfstudy.verdict.<claim>`` (``nfstudy.verdict.<scale>.<claim>`` for another scale's runs)
on a study's parent run: the verdict ``nfstudy report`` reached, e.g. ``supported; 3 pairs;
resolved``."""

FLOOR_GAIN = 0.1
"""A run whose |SkipInit gains| never exceed this (100 × AGC's default ε = 10⁻³) is floor-bound:
a branch then adds at most α·gain = 0.2 × 0.1 = 2% of the signal it joins. The trainer's tag
:data:`AGC_FLOOR_BOUND` and the report (``analysis.floor``) use this one threshold."""

# -- MLflow metrics nfstudy writes besides the trainer's scores --------------------------------
AGC_MAX_SKIPINIT_GAIN = "agc/max_skipinit_gain"
"""The largest |SkipInit gain| of a child run's net so far in the run (logged per epoch, so its
last value is the run's largest; per step under AGC, at epoch ends without it)."""
AGC_CLIPPED_FRACTION = "agc/clipped_fraction"
"""The fraction of AGC's units clipped, over the epoch's steps; ``agc/clipped_fraction/<group>``
per group of parameters (``stem``, ``stage<k>``, ``classifier``, ...)."""
AGC_GROUP_PREFIX = AGC_CLIPPED_FRACTION + "/"
AGC_RATIO_QUANTILES = {"agc/grad_weight_ratio_p50": 0.5, "agc/grad_weight_ratio_p90": 0.9,
                       "agc/grad_weight_ratio_max": 1.0}
"""Quantiles over AGC's units of each unit's mean ‖G_i‖/max(‖W_i‖, ε) over the epoch."""
CLASSIFIER_ROW_NORM_MAX = "classifier/row_norm_max"
CLASSIFIER_ROW_NORM_MEAN = "classifier/row_norm_mean"
"""The classifier weight's row norms (one row per class) at the epoch's end."""
TELEMETRY_METRICS = (AGC_MAX_SKIPINIT_GAIN, AGC_CLIPPED_FRACTION, *AGC_RATIO_QUANTILES, CLASSIFIER_ROW_NORM_MAX,
                     CLASSIFIER_ROW_NORM_MEAN)
"""Logged after every epoch (the AGC ones only with ``agc.clipping`` set, the gain only for nets
with SkipInit gains), besides the per-group ``agc/clipped_fraction/<group>``."""
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

# -- metrics of a child run: what the trainer records, and all a report or search may read --
EPOCH_METRICS = ("train/loss", "val/loss", "val/top1", "val/top1_ema")
"""Scores logged after every epoch (``step`` = epoch; ``val/top1_ema`` with ``optim.ema_decay``):
what a search's pruner can watch."""
EPOCH_TIMINGS = ("time/epoch_s", "time/images_per_s", "lr")
"""Also logged after every epoch."""
FINAL_METRICS = ("test/top1", "test/loss", "test/top1_ema", "test/loss_ema", "time/step_ms", "time/total_s", "epochs",
                 "steps")
"""Logged once, when the run ends (the test split is evaluated only then; ``*_ema`` with
``optim.ema_decay``)."""
METRICS = (EPOCH_METRICS + EPOCH_TIMINGS + FINAL_METRICS + tuple(f"final/{name}" for name in EPOCH_METRICS)
           + TELEMETRY_METRICS)
"""Every metric name a child run can carry (besides ``agc/clipped_fraction/<group>``): ``final/*``
copy the last epoch's scores. A study's ``metric``, its figures' ``y`` and the report's claims are
checked against this list."""

# -- Optuna trial attrs ----------------------------------------------------------------------------
OWNER_ATTR = "nfstudy:owner"
"""System attr of a RUNNING trial: the process that runs it."""
HEARTBEAT_ATTR = "nfstudy:heartbeat"
"""System attr of a RUNNING trial on a journal file: the owner's last heartbeat (Unix time)."""
ENDED_ATTR = "ended"
"""User attr of a FAIL queue trial: why it ended (``study.run.queue.EndKind``)."""
