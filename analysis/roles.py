"""Which side of a paper comparison a run is on, read from its params (never its arm name).

The paper's comparisons are between kinds of run: BN vs NF model, AGC on vs off, unit-
vs layer-wise clipping, classifier clipped or not, SAM off/full/fraction. A study may
name its arms as it likes; these functions label runs from the params that define the
kind (the config keys in the README), so the verdict rules in :mod:`analysis.rules` work
on any study that varies the right keys. The column names analysis reads live here.
"""

from __future__ import annotations

import pandas as pd

from analysis.formats import value
from analysis.stats import group_rows, mean_ci, missing
from study.record.tags import DIVERGED

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


NF_PLAIN = "NF-ResNet without Scaled WS"


def table6_family(frame: pd.DataFrame) -> pd.Series:
    """Table 6's sides (Brock et al. 2021): ``BN-ResNet`` (the BatchNorm twin) against
    ``NF-ResNet`` with Scaled WS; an NF net without weight standardisation is [I]'s control
    (arXiv 2101.08692, §4), not in Table 6, so it is ``NF-ResNet without Scaled WS``, neither side."""
    return norm_kind(frame).map(lambda kind: BN if kind == BN_NORM else NF_PLAIN if kind == PLAIN_NORM else NF)


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


def _base_lr_text(frame: pd.DataFrame) -> str:
    """``optim.lr`` as the lr rule writes it: ``0.1`` (one value) or ``lr`` (several)."""
    lrs = sorted({float(v) for v in frame[LR] if not missing(v)}) if LR in frame.columns else []
    return f"{lrs[0]:g}" if len(lrs) == 1 else "lr"


def real_batches(frame: pd.DataFrame) -> list[int]:
    """The distinct real batches the runs drew per step (:func:`real_batch`)."""
    if BATCH not in frame.columns:
        return []
    caps = frame[DEVICE_BATCH] if DEVICE_BATCH in frame.columns else pd.Series(None, index=frame.index)
    return sorted({int(real_batch(b, d)) for b, d in zip(frame[BATCH], caps) if not missing(b)})


def is_capped(frame: pd.DataFrame) -> bool:
    """Whether some run drew a smaller real batch than its paper batch ``data.batch_size``."""
    if DEVICE_BATCH not in frame.columns or BATCH not in frame.columns:
        return False
    return any(not missing(b) and real_batch(b, d) != b for b, d in zip(frame[BATCH], frame[DEVICE_BATCH]))


def batch_phrase(frame: pd.DataFrame, batch, *, short: bool = False) -> str:
    """How a verdict or caption names one paper batch size B: where the real batch is capped,
    what B set and what ran, ``lr 0.1·4096/256 = 1.6 (paper batch 4096), real batch 128``
    (``short``: ``lr 1.6 (paper batch 4096)``, where the real batch is said once nearby);
    else ``batch 4096``."""
    rows = frame[frame[BATCH] == batch] if BATCH in frame.columns else frame.iloc[0:0]
    if rows.empty or not is_capped(frame):
        return f"batch {value(batch)}"
    lr = next((v for v in rows[LR] if not missing(v)), None) if LR in rows.columns else None
    real = ", ".join(map(str, real_batches(rows)))
    if lr is None:
        return f"paper batch {batch}" + ("" if short else f", real batch {real}")
    if short:
        return f"lr {peak_lr(lr, batch):g} (paper batch {batch})"
    return f"lr {float(lr):g}·{batch}/256 = {peak_lr(lr, batch):g} (paper batch {batch}), real batch {real}"


def mapping_caption(frame: pd.DataFrame, *, steps: bool = True) -> str | None:
    """Say how the paper's batch sizes were mapped to what ran, or None (the scale presets
    of the README keep the paper's learning rate per batch size and a fixed step budget).

    A caption is due when a run's real batch (``data.device_batch_size``) differs from its
    paper batch (``data.batch_size``) or a fixed step budget (``train.steps``) was set.

    Args:
        frame: runs with their params.
        steps: end with the step budget.

    Returns:
        e.g. ``"at lr 0.1·B/256 (paper batch B: 256 → lr 0.1, 4096 → lr 1.6), real batch 128;
        300 steps"``.
    """
    mapped = is_capped(frame)
    budgets = sorted({int(s) for s in frame[STEPS] if not missing(s)}) if STEPS in frame.columns else []
    if not mapped and not budgets:
        return None
    parts = []
    if LR in frame.columns and BATCH in frame.columns:
        pairs = sorted({(int(b), float(lr)) for b, lr in zip(frame[BATCH], frame[LR])
                        if not missing(b) and not missing(lr)})
        each = ", ".join(f"{b} → lr {peak_lr(lr, b):g}" for b, lr in pairs)
        parts.append(f"at lr {_base_lr_text(frame)}·B/256 (paper batch B: {each})")
    if mapped:
        parts.append("real batch " + ", ".join(map(str, real_batches(frame))))
    text = ", ".join(parts)
    if budgets and steps:
        text += ("; " if text else "") + ", ".join(map(str, budgets)) + " steps"
    return text or None


CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "fake": 10}
"""Classes of the built-in data sets, for chance level when no run diverged (a diverged run
records chance itself; an ImageFolder's classes are known only that way)."""


def chance_level(frame: pd.DataFrame, metric: str = TEST_METRIC) -> float | None:
    """The accuracy of guessing: what a diverged run recorded (the trainer writes
    1/classes), else 1/classes of the data set ``data.name`` names, else None."""
    if "outcome" in frame.columns and metric in frame.columns:
        recorded = pd.to_numeric(frame.loc[frame["outcome"] == DIVERGED, metric], errors="coerce").dropna()
        if len(recorded):
            return float(recorded.min())
    names = {str(v) for v in frame.get("data.name", pd.Series(dtype=object)) if not missing(v)}
    classes = {CLASSES.get(name) for name in names}
    return 1.0 / classes.pop() if len(classes) == 1 and None not in classes else None


def headline_metric(frame: pd.DataFrame) -> str:
    """The test metric a report leads with and judges claims on: the EMA weights'
    (:data:`EMA_TEST_METRIC`) when every run evaluated them, as the paper reports its EMA
    weights; else :data:`TEST_METRIC` (a study mixing runs with and without EMA compares
    raw weights with raw weights)."""
    if EMA_TEST_METRIC in frame.columns and len(frame) and frame[EMA_TEST_METRIC].notna().all():
        return EMA_TEST_METRIC
    return TEST_METRIC
