"""Which side of a paper comparison a run is on, read from its params (never its arm name).

The paper's comparisons are between kinds of run: BN vs NF model, AGC on vs off, unit-
vs layer-wise clipping, classifier clipped or not, SAM off/full/fraction. A study may
name its arms as it likes; these functions label runs from the params that define the
kind (the config keys in the README), so the verdict rules in :mod:`analysis.rules` work
on any study that varies the right keys. The column names analysis reads live here.
"""

from __future__ import annotations

import pandas as pd

from analysis.stats import group_rows, mean_ci, missing

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

VAL_METRIC = "val/top1"
TEST_METRIC = "test/top1"
"""Claims are judged on the held-out test split; selection (best λ) uses validation."""
EMA_TEST_METRIC = "test/top1_ema"
"""The test accuracy of the EMA weights (runs with ``optim.ema_decay``), what the paper reports."""
STEP_MS = "time/step_ms"

SPP_MODEL, SPP_NORM = "model", "norm"
"""The model columns of signal-propagation rows (the registered name and its ``model.norm``)."""
BN_NORM, NF_NORM, PLAIN_NORM = "bn", "nf", "nf_plain"
"""The values of ``model.norm``: BatchNorm twin, Normalizer-Free, NF without weight standardisation."""

BN, NF, NF_AGC = "BN-ResNet", "NF-ResNet", "NF-ResNet + AGC"
CLIPPED, NOT_CLIPPED = "classifier clipped", "classifier not clipped"


def norm_kind(frame: pd.DataFrame, *, name: str = MODEL, norm: str = NORM) -> pd.Series:
    """The normaliser of each row's model: its recorded ``model.norm`` (``bn``, ``nf``,
    ``nf_plain``) or, where none was set because the config named the model directly, what
    the registered name says (``bn_…`` BatchNorm twins, ``…_nows`` NF without weight
    standardisation, any other name NF)."""
    names = frame[name].map(str).str.lower()
    by_name = names.map(lambda text: BN_NORM if text.startswith("bn")
                        else PLAIN_NORM if text.endswith("_nows") else NF_NORM)
    if norm not in frame.columns:
        return by_name
    recorded = frame[norm]
    return recorded.where(~recorded.map(missing).astype(bool), by_name)


def model_family(frame: pd.DataFrame) -> pd.Series:
    """``BN-ResNet`` where the run built a BatchNorm twin (:func:`norm_kind` is ``bn``), else
    ``NF-ResNet`` (weight-standardised or not)."""
    return norm_kind(frame).map(lambda kind: BN if kind == BN_NORM else NF)


def agc_family(frame: pd.DataFrame) -> pd.Series:
    """Fig. 2a's three curves: ``BN-ResNet``, ``NF-ResNet`` (AGC off: ``agc.clipping`` is
    None) and ``NF-ResNet + AGC``. A BN run is ``BN-ResNet`` whatever its clipping."""
    family = model_family(frame)
    if CLIPPING not in frame.columns:
        return family
    clipped = ~frame[CLIPPING].map(missing).astype(bool)
    return family.where((family == BN) | ~clipped, NF_AGC)


def classifier_clipping(frame: pd.DataFrame) -> pd.Series:
    """``classifier clipped`` where ``agc.exclude`` is an empty list (AGC clips every
    parameter, the final linear layer included), else ``classifier not clipped`` (None
    is the default: the classifier weight is excluded, as in the paper, §4.1)."""
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


def real_batch(batch, cap):
    """The batch a run draws per step: its paper batch ``data.batch_size`` capped by
    ``data.device_batch_size`` (None: no cap), as the trainer draws it."""
    return batch if missing(batch) or missing(cap) else min(int(batch), int(cap))


def peak_lr(lr, batch) -> float:
    """The optimizer's peak learning rate: ``optim.lr`` (per 256 images) times the paper batch
    B, lr·B/256 (``lr_scale_by_bs`` in the official ``nfnets/experiment.py``). Runs record the
    two params, not the product, so the report makes it here."""
    return float(lr) * float(batch) / 256


def mapping_caption(frame: pd.DataFrame) -> str | None:
    """Say how the paper's batch sizes were mapped to what ran, or None (the scale presets
    of the README keep the paper's learning rate per batch size and a fixed step budget).

    A caption is due when a run's real batch (``data.device_batch_size``) differs from its
    paper batch (``data.batch_size``) or a fixed step budget (``train.steps``) was set.

    Returns:
        e.g. ``"paper batch → real batch 256 → 64, 4096 → 64; peak lr 0.1, 1.6; 300 steps"``.
    """
    mapped = DEVICE_BATCH in frame.columns and BATCH in frame.columns and any(
        real_batch(b, d) != b for b, d in zip(frame[BATCH], frame[DEVICE_BATCH]))
    steps = frame[STEPS].dropna().unique().tolist() if STEPS in frame.columns else []
    steps = [s for s in steps if not missing(s)]
    if not mapped and not steps:
        return None
    parts = []
    if mapped:
        pairs = dict(group_rows(frame, [BATCH, DEVICE_BATCH])).keys()
        parts.append("paper batch → real batch " + ", ".join(f"{b} → {real_batch(b, d)}" for b, d in pairs))
    if LR in frame.columns and BATCH in frame.columns:
        lrs = sorted({peak_lr(lr, b) for (lr, b), _ in group_rows(frame, [LR, BATCH])})
        parts.append("peak lr " + ", ".join(f"{lr:g}" for lr in lrs))
    if steps:
        parts.append(", ".join(f"{int(s)}" for s in sorted(steps)) + " steps")
    return "; ".join(parts)


def headline_metric(frame: pd.DataFrame) -> str:
    """The test metric a report leads with and judges claims on: the EMA weights'
    (:data:`EMA_TEST_METRIC`) when every run evaluated them, as the paper reports its EMA
    weights; else :data:`TEST_METRIC` (a study mixing runs with and without EMA compares
    raw weights with raw weights)."""
    if EMA_TEST_METRIC in frame.columns and len(frame) and frame[EMA_TEST_METRIC].notna().all():
        return EMA_TEST_METRIC
    return TEST_METRIC
