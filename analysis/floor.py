"""AGC's ε floor and SkipInit: the largest SkipInit gain a run's budget can reach, and which
runs never left the floor (*floor-bound*).

An NF-ResNet's residual branch enters as ``x + α·gain·f(x)`` with a SkipInit gain that
starts at 0. AGC clips every gradient unit to ``λ·max(‖W‖, ε)`` (Brock et al. 2021, §4,
eq. 3; ε = ``agc.eps`` = 10⁻³ as in the official ``nfnets/agc_optax.py``), and a gain is a
unit of its own, so while |gain| < ε its gradient is capped at λ·ε: the gain can only creep
off zero. Until it does, the branches add almost nothing and the net is "stem + classifier".
The official code has the same floor, but at ~10⁵ steps it is left behind within a few
hundred; at a few hundred steps it can decide a whole cell. A verdict drawn from such cells
measures the budget, not the clipping mechanism the paper studies.

**The bound** (:func:`reachable_gain`). Take one gain g_t, its clipped gradient c_t, SGD's
momentum buffer m_t = μ·m_{t−1} + c_t (PyTorch, no dampening) and the update
g_{t+1} = g_t − η_t·(c_t + μ·m_t) under Nesterov momentum (g_t − η_t·m_t without). Gains get no
weight decay. AGC gives |c_t| ≤ λ·max(|g_t|, ε). Define, from a_0 = b_{−1} = 0,

    k_t = λ·max(a_t, ε),   b_t = μ·b_{t−1} + k_t,   a_{t+1} = a_t + η_t·(k_t + μ·b_t).

By induction |g_t| ≤ a_t and |m_t| ≤ b_t for every t (each step of the recursion takes the
largest magnitude each term can have), so a_T is an upper bound on every |gain| after T
steps, whatever the data, SAM or the number of ranks (AGC clips the all-reduced gradient).
Two regimes show in it: on the floor (a_t < ε) the gain grows additively, by at most
≈ η·λ·ε/(1 − μ) = 10·η·λ·ε a step for μ = 0.9 once the buffer has filled; off it, by a
factor ≈ 1 + η·λ/(1 − μ) = 1 + 10·η·λ a step. η_t is the run's schedule: linear warmup to
``optim.lr``·B/256 (B the paper batch), then cosine to 0 (``study.optim.sgd.lr_at``,
restated here because the report reads records, not the framework).

Measured against it (digits 8 px, ``nf_resnet_small``, paper batch 256 → η = 0.1, real
batch 128, the largest |SkipInit gain| of the 6 blocks at the end): at 300 steps the bound is
0.0016 for λ 0.01 (measured 0.0008) and escapes for λ 0.16 (measured 2.52); at 1,200 steps,
0.11 for λ 0.01 (measured 0.014). The bound is 0.061 at (η 0.1, λ 0.04) and at (η 0.4,
λ 0.01), 0.0048 for the ``agc-lambda`` search (η 0.4, λ 0.01, 150 steps) and escapes at
η 1.6 (λ 0.01): the measured accuracies follow it cell by cell.

**Floor-bound** (:func:`floor_bound`): a run whose gains stay ≤ :data:`FLOOR_GAIN`. At 0.1
a branch adds at most α·gain = 0.2 × 0.1 = 2% of the signal it joins (α = 0.2 in every
NF-ResNet here), so the residual branches barely train. The run's own record wins over the
bound: tag ``nfstudy.agc_floor_bound`` when the trainer wrote it, else the logged
``agc/max_skipinit_gain``, else the bound of its config.
"""

from __future__ import annotations

import fnmatch
import math
from functools import lru_cache

import pandas as pd

from analysis import roles
from analysis.runs import FLOOR_TAG_COLUMN
from analysis.stats import missing
from study.record.tags import AGC_CLIPPED_FRACTION, AGC_MAX_SKIPINIT_GAIN, FLOOR_GAIN

ESCAPED = 1e3
"""The bound stops here: a gain that can reach it has left the floor (reported as inf)."""
GAIN_NAME = "blocks.0.skipinit_gain"
"""A SkipInit gain's parameter name, to test ``agc.exclude`` patterns against."""
_DEFAULTS = {"agc.eps": 1e-3, "optim.momentum": 0.9, "optim.nesterov": True, "optim.warmup_fraction": 0.05}


def _lr(step: int, total: int, warmup: int, peak: float) -> float:
    """The trainer's learning rate at ``step``: linear warmup, then cosine to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


@lru_cache(maxsize=4096)
def reachable_gain(peak_lr: float, clipping: float, steps: int, warmup_steps: int, *, eps: float = 1e-3,
                   momentum: float = 0.9, nesterov: bool = True) -> float:
    """The largest |SkipInit gain| a run can reach (the recursion of the module text).

    Example:
        >>> reachable_gain(0.1, 0.01, 300, 15)  # paper batch 256, λ 0.01, the digits preset
        0.00157...

    Args:
        peak_lr: the schedule's peak, ``optim.lr``·B/256.
        clipping: AGC's λ.
        steps: the run's optimizer steps.
        warmup_steps: its linear warmup steps.
        eps: AGC's floor on the weight norm.
        momentum, nesterov: SGD's.

    Returns:
        The bound; ``inf`` once it passes :data:`ESCAPED`.
    """
    gain = buffer = 0.0
    for step in range(steps):
        capped = clipping * max(gain, eps)
        buffer = momentum * buffer + capped
        gain += _lr(step, steps, warmup_steps, peak_lr) * (capped + momentum * buffer if nesterov else buffer)
        if gain > ESCAPED:
            return math.inf
    return gain


def has_clipped_gains(frame: pd.DataFrame) -> pd.Series:
    """Which runs train SkipInit gains under AGC: NF nets (not BN twins) with ``agc.clipping``
    set and no ``agc.exclude`` entry that matches the gains."""
    if roles.CLIPPING not in frame.columns or roles.MODEL not in frame.columns:
        return pd.Series(False, index=frame.index)
    nf = roles.norm_kind(frame) != roles.BN_NORM
    clipped = ~frame[roles.CLIPPING].map(missing).astype(bool)
    excluded = frame.get(roles.AGC_EXCLUDE, pd.Series(None, index=frame.index)).map(
        lambda patterns: isinstance(patterns, (list, tuple))
        and any(fnmatch.fnmatchcase(GAIN_NAME, str(p)) for p in patterns))
    # A run whose AGC telemetry ran (``agc/clipped_fraction`` logged) but logged no SkipInit
    # gain has none to clip: a timm or plugin model, whatever ``model.norm`` defaulted to.
    telemetry = pd.to_numeric(frame.get(AGC_CLIPPED_FRACTION, pd.Series(None, index=frame.index)), errors="coerce")
    gains = pd.to_numeric(frame.get(AGC_MAX_SKIPINIT_GAIN, pd.Series(None, index=frame.index)), errors="coerce")
    no_gains = telemetry.notna() & gains.isna()
    return (nf & clipped & ~excluded.astype(bool) & ~no_gains).astype(bool)


def _setting(run: pd.Series, key: str):
    value = run.get(key)
    return _DEFAULTS[key] if missing(value) else value


def _schedule(run: pd.Series) -> tuple[int, int] | None:
    """The run's ``(steps, warmup steps)`` as the trainer computes them, or None when its
    record does not say (no ``train.steps`` and no logged step count)."""
    steps = run.get(roles.STEPS)
    done, epochs_done = run.get("steps"), run.get("epochs")
    per_epoch = done / epochs_done if not missing(done) and not missing(epochs_done) and epochs_done else None
    if missing(steps):
        epochs = run.get("train.epochs")
        if per_epoch is None or missing(epochs):
            return None
        steps = round(epochs * per_epoch)
    warmup_epochs = run.get("optim.warmup_epochs")
    if missing(warmup_epochs):
        warmup = _setting(run, "optim.warmup_fraction") * steps
    elif per_epoch is not None:
        warmup = warmup_epochs * per_epoch
    else:
        return None
    return int(steps), int(round(warmup))


def _run_bound(run: pd.Series) -> float:
    """:func:`reachable_gain` of a run with clipped gains, from its params (NaN when its
    record does not give its schedule)."""
    schedule = _schedule(run)
    if schedule is None or missing(run.get(roles.LR)) or missing(run.get(roles.BATCH)):
        return math.nan
    return reachable_gain(roles.peak_lr(run[roles.LR], run[roles.BATCH]), float(run[roles.CLIPPING]), *schedule,
                          eps=float(_setting(run, "agc.eps")), momentum=float(_setting(run, "optim.momentum")),
                          nesterov=bool(_setting(run, "optim.nesterov")))


def bounds(frame: pd.DataFrame) -> pd.Series:
    """:func:`reachable_gain` of every run, from its params; NaN for runs without clipped
    SkipInit gains (:func:`has_clipped_gains`) and runs whose record does not give their schedule."""
    eligible = has_clipped_gains(frame)
    return pd.Series([_run_bound(run) if ok else math.nan for ok, (_, run) in zip(eligible, frame.iterrows())],
                     index=frame.index, dtype=float)


def floor_bound(frame: pd.DataFrame) -> pd.Series:
    """Which runs are floor-bound: the tag ``nfstudy.agc_floor_bound`` where recorded, else the
    logged ``agc/max_skipinit_gain`` ≤ :data:`FLOOR_GAIN`, else the bound of the config ≤
    :data:`FLOOR_GAIN`. False for runs without clipped SkipInit gains."""
    bound = bounds(frame) if len(frame) else pd.Series(dtype=float)
    flags = (bound <= FLOOR_GAIN).astype(bool)
    if AGC_MAX_SKIPINIT_GAIN in frame.columns:
        measured = pd.to_numeric(frame[AGC_MAX_SKIPINIT_GAIN], errors="coerce")
        flags = flags.where(measured.isna() | bound.isna(), measured <= FLOOR_GAIN)
    if FLOOR_TAG_COLUMN in frame.columns:
        tagged = frame[FLOOR_TAG_COLUMN].map(lambda v: None if missing(v) else str(v).lower() == "true")
        flags = flags.where(tagged.isna(), tagged)
    return flags.astype(bool)


def gain_text(bound: float) -> str:
    """A bound as a table cell: ``0.0016``, ``escapes`` or empty."""
    if missing(bound):
        return ""
    return "escapes" if math.isinf(bound) else f"{bound:.2g}"

