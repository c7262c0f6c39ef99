"""Which side of a paper comparison a run is on, read from its params (never its arm name).

The paper's comparisons are between kinds of run: BN vs NF model, AGC on vs off, unit-
vs layer-wise clipping, classifier clipped or not, SAM off/full/fraction. A study may
name its arms as it likes; these functions label runs from the params that define the
kind (DESIGN.md, "Configuration"), so the verdict rules in :mod:`analysis.reference`
work on any study that varies the right keys.
"""

from __future__ import annotations

import pandas as pd

from analysis.stats import group_rows, mean_ci

MODEL = "model.name"
NORM = "model.norm"
CLIPPING = "agc.clipping"
AGC_MODE = "agc.mode"
AGC_EXCLUDE = "agc.exclude"
SAM_MODE = "sam.mode"
BATCH = "data.batch_size"
DEVICE_BATCH = "data.device_batch_size"
LR = "optim.lr"
STEPS = "train.steps"

BN, NF, NF_AGC = "BN-ResNet", "NF-ResNet", "NF-ResNet + AGC"
CLIPPED, NOT_CLIPPED = "classifier clipped", "classifier not clipped"


def _is_off(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def model_family(frame: pd.DataFrame) -> pd.Series:
    """``BN-ResNet`` where the run built a BatchNorm twin (``model.norm`` is ``bn``, or no
    ``model.norm`` is set and ``model.name`` starts with ``bn``), else ``NF-ResNet``."""
    by_name = frame[MODEL].map(str).str.lower().str.startswith("bn")
    if NORM in frame.columns:
        norm = frame[NORM]
        by_name = norm.map(lambda v: v == "bn").where(~norm.map(_is_off).astype(bool), by_name)
    return by_name.astype(bool).map({True: BN, False: NF})


def agc_family(frame: pd.DataFrame) -> pd.Series:
    """Fig. 2a's three curves: ``BN-ResNet``, ``NF-ResNet`` (AGC off: ``agc.clipping`` is
    None) and ``NF-ResNet + AGC``. A BN run is ``BN-ResNet`` whatever its clipping."""
    family = model_family(frame)
    if CLIPPING not in frame.columns:
        return family
    clipped = ~frame[CLIPPING].map(_is_off).astype(bool)
    return family.where((family == BN) | ~clipped, NF_AGC)


def classifier_clipping(frame: pd.DataFrame) -> pd.Series:
    """``classifier clipped`` where ``agc.exclude`` is an empty list (AGC clips every
    parameter, the final linear layer included), else ``classifier not clipped`` (None
    is the default: the classifier weight is excluded, PAPER.md §4)."""
    return frame[AGC_EXCLUDE].map(
        lambda value: CLIPPED if isinstance(value, (list, tuple)) and len(value) == 0 else NOT_CLIPPED
    )


def best_option(frame: pd.DataFrame, option: str, select_metric: str, by=()) -> pd.DataFrame:
    """Pick, per group of ``by``, the value of ``option`` with the best mean ``select_metric``.

    This is the paper's "best λ per batch size"; selecting on the validation split and
    reporting the test split keeps the selection from inflating the reported number.

    Args:
        frame: result runs.
        option: the column being chosen (e.g. ``agc.clipping``).
        select_metric: the metric maximised on average over seeds (e.g. ``val/top1``).
        by: the columns to choose within (e.g. ``["data.batch_size"]``).

    Returns:
        The rows of ``frame`` that belong to the chosen option of each group (all their
        seeds), with a column ``selected_mean`` holding the winning mean.
    """
    chosen = []
    for _, group in group_rows(frame, by):
        means = [(mean_ci(rows[select_metric])[0], values[0], rows) for values, rows in group_rows(group, [option])]
        means = [entry for entry in means if entry[0] == entry[0]]
        if means:
            best_mean, _, rows = max(means, key=lambda entry: entry[0])
            chosen.append(rows.assign(selected_mean=best_mean))
    return pd.concat(chosen) if chosen else frame.iloc[0:0].assign(selected_mean=[])


def mapping_caption(frame: pd.DataFrame) -> str | None:
    """Say how the paper's batch sizes were mapped to what ran (PAPER.md §8), or None.

    A caption is due when a run's real batch (``data.device_batch_size``) differs from its
    paper batch (``data.batch_size``) or a fixed step budget (``train.steps``) was set.

    Returns:
        e.g. ``"paper batch → real batch 256 → 64, 4096 → 64; peak lr 0.1, 1.6; 300 steps"``.
    """
    mapped = DEVICE_BATCH in frame.columns and BATCH in frame.columns and (
        frame[DEVICE_BATCH].map(str) != frame[BATCH].map(str)
    ).any()
    steps = frame[STEPS].dropna().unique().tolist() if STEPS in frame.columns else []
    steps = [s for s in steps if not _is_off(s)]
    if not mapped and not steps:
        return None
    parts = []
    if mapped:
        pairs = dict(group_rows(frame, [BATCH, DEVICE_BATCH])).keys()
        # The batch drawn per step is the paper batch capped by data.device_batch_size.
        parts.append("paper batch → real batch " + ", ".join(
            f"{b} → {b if _is_off(d) else min(int(b), int(d))}" for b, d in pairs))
    if LR in frame.columns and BATCH in frame.columns:
        # The optimizer's peak lr: optim.lr per 256 images times the paper batch (DESIGN.md).
        lrs = sorted({float(lr) * float(b) / 256 for (lr, b), _ in group_rows(frame, [LR, BATCH])})
        parts.append("peak lr " + ", ".join(f"{lr:g}" for lr in lrs))
    if steps:
        parts.append(", ".join(f"{int(s)}" for s in sorted(steps)) + " steps")
    return "; ".join(parts)
