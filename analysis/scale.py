"""The scales of a study's runs: what each was trained at, said from the recorded configs,
what a verdict at that scale can and cannot show, and which scales have runs at all.

A report never describes its runs from what a preset usually does: :func:`describe` reads
the params every run records (data set, image size, models, steps, learning-rate mapping,
real batch, precision), so a report of an 8-px, 250-step study says so. A study's runs can
sit at several scales (``--preset smoke``, ``--set data.image_size=8``):
:func:`recorded_scales` finds each one that has runs, so ``nfstudy report NAME`` reports
what exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import yaml

from analysis import roles
from analysis.runs import results
from analysis.stats import missing

NATIVE_SIZE = {"digits": 8, "cifar10": 32, "cifar100": 32}
"""The pixel size each built-in data set is stored at."""
DEFAULT_SIZE = {"digits": 16}
"""``data.image_size`` None trains at this size (``study.data``); other data sets: native."""

DIGITS_NOTE = (
    "The embedded `digits` set has 1,400 training images of 8×8 handwritten digits; the models are "
    "small NF-ResNets and their BN twins, trained for hundreds of steps, not NFNet-F0…F6 on ImageNet for "
    "360 epochs. What this scale can show: unclipped NF-ResNets break as the learning rate grows while "
    "BN does not; AGC restores training; the best λ falls as the learning rate grows; a large λ diverges "
    "at the largest. It needs the paper's learning rate for the paper's batch size at a fixed step "
    "budget, so presets map the paper's batch sizes to a smaller real one (the captions say so): a "
    "\"batch size\" here is a learning rate at a fixed real batch, not the gradient noise of a large "
    "batch. At a few hundred steps AGC's ε floor keeps SkipInit gains near 0 where lr·λ is small "
    "(*floor-bound* cells, drawn hollow; claims leave them out): there the small-λ penalty measures the "
    "budget, not clipping. What it cannot show: ImageNet accuracy levels, gaps of a few tenths of a point "
    "(one seed moves digits accuracy by more), regularisation effects of long training, and accelerator "
    "step times (CPU timings of tiny models say little about them).")
"""What the digits scale can and cannot show (the README's scale presets)."""

GENERAL_NOTE = "A verdict here is about this scale only: the paper's results are for NFNets on ImageNet."


def _values(frame: pd.DataFrame, key: str) -> list:
    if key not in frame.columns:
        return []
    found = {str(v): v for v in frame[key] if not missing(v)}
    return [found[k] for k in sorted(found)]


def _data_text(frame: pd.DataFrame) -> str:
    texts = []
    for name in _values(frame, "data.name") or ["digits"]:
        rows = frame[frame["data.name"] == name] if "data.name" in frame.columns else frame
        native = NATIVE_SIZE.get(name)
        sizes = _values(rows, "data.image_size") if "data.image_size" in rows.columns else []
        if "data.image_size" in rows.columns and rows["data.image_size"].map(missing).any():
            sizes = sorted({*sizes, DEFAULT_SIZE.get(name, native)} - {None})
        parts = []
        for size in sizes:
            if size == native:
                parts.append(f"{size}×{size} px (native)")
            elif native is not None:
                parts.append(f"{native}×{native} px upsampled to {size}×{size}")
            else:
                parts.append(f"{size}×{size} px")
        texts.append(f"`{name}`" + (f" at {' and '.join(parts)}" if parts else ""))
    return ", ".join(texts)


def _model_text(frame: pd.DataFrame) -> str:
    if roles.MODEL not in frame.columns:
        return ""
    kinds = roles.norm_kind(frame)
    pairs = sorted({(str(name), str(kind)) for name, kind in zip(frame[roles.MODEL], kinds)})
    names = sorted({name for name, _ in pairs})
    return "; ".join(f"`{name}` ({', '.join(kind for n, kind in pairs if n == name)})" for name in names)


def _length_text(frame: pd.DataFrame) -> str:
    steps = _values(frame, roles.STEPS)
    if steps:
        return ", ".join(f"{int(s):,}" for s in steps) + " steps"
    epochs = _values(frame, "train.epochs")
    return ", ".join(f"{int(e)}" for e in epochs) + " epochs" if epochs else ""


def describe(frame: pd.DataFrame) -> str:
    """One paragraph of what ran, from the runs' params.

    Example:
        >>> describe(results(load_runs("quickstart", uri)))
        'Data: `digits` at 8×8 px (native). Models: `nf_resnet_small` (bn, nf). Length: 250 steps.
        Learning rate: at lr 0.1·B/256 (paper batch B: 4096 → lr 1.6), real batch 128. Precision: fp32.'
    """
    parts = [("Data", _data_text(frame)), ("Models", _model_text(frame)), ("Length", _length_text(frame)),
             ("Learning rate", roles.mapping_caption(frame, steps=False) or ""),
             ("Precision", ", ".join(map(str, _values(frame, "train.precision"))))]
    return " ".join(f"{label}: {text}." for label, text in parts if text)


def note(frame: pd.DataFrame) -> list[str]:
    """The Scale section: what ran, and what such a scale can show."""
    names = _values(frame, "data.name") or ["digits"]
    return [describe(frame), *([DIGITS_NOTE] if "digits" in names else []), GENERAL_NOTE]


# -- which scales of a study have runs --------------------------------------------------

@dataclass(frozen=True)
class RecordedScale:
    """One scale of a study that has finished runs: the ``--preset`` (None: the study's own
    base) and ``--set`` items that plan its runs again, and how many of them finished."""

    preset: str | None
    sets: tuple[str, ...]
    finished: int
    planned: int | None
    """Runs the study plans at this preset; None for a scale found only from its runs' params."""

    def label(self) -> str:
        """``base``, ``preset smoke``, ``--set data.image_size=8``…"""
        parts = ([f"preset {self.preset}"] if self.preset else []) + [f"--set {item}" for item in self.sets]
        return " ".join(parts) or "base"


def set_item(key: str, item) -> str:
    """``key=value`` as ``--set`` reads it back (YAML): ``data.image_size=8``, ``agc.clipping=null``,
    ``optim.lr=1.0e-05``, a string that YAML would read as something else quoted."""
    if item is None or isinstance(item, (bool, list, dict)):
        return f"{key}={json.dumps(item)}"
    if isinstance(item, float):
        text = repr(item)
        mantissa, e, exponent = text.partition("e")
        return f"{key}={mantissa if '.' in mantissa else mantissa + '.0'}{e}{exponent}"
    text = str(item)
    return f"{key}={text if yaml.safe_load(text) == item else json.dumps(text)}"


def _common(configs: list[dict], varied: set[str]) -> dict:
    """The params every config shares, the varied keys left out."""
    keys = set.intersection(*(set(c) for c in configs)) - varied if configs else set()
    first = configs[0] if configs else {}
    return {k: first[k] for k in keys if all(c[k] == first[k] for c in configs)}


def recorded_scales(runs: pd.DataFrame, plans: dict[str | None, dict[str, dict]],
                    varied: set[str]) -> list[RecordedScale]:
    """The scales of a study that have finished result runs.

    Args:
        runs: the study's runs (:func:`analysis.runs.load_runs`).
        plans: for each preset the study can be planned at (None: its own base), its planned
            runs as ``{config hash: flat config}``.
        varied: the keys the study varies itself (its arm and grid keys, ``seed``).

    Returns:
        The presets with finished runs, the base first, each with its planned count; then one
        scale per group of the other runs that share every param outside ``varied`` (runs made
        with ``--set``), named by the preset they are closest to and the params they differ in.
    """
    done = results(runs) if len(runs) else runs
    hashes = set(done["config_hash"]) if len(done) else set()
    found, covered, seen = [], set(), []
    for preset, planned in plans.items():
        if set(planned) in seen:  # a preset that plans the same runs as one before it (the base) is that one
            continue
        seen.append(set(planned))
        if count := len(hashes & set(planned)):
            found.append(RecordedScale(preset, (), count, len(planned)))
        covered |= set(planned)
    others = done[~done["config_hash"].isin(covered)] if len(done) else done
    if others.empty:
        return found
    commons = {preset: _common(list(planned.values()), varied) for preset, planned in plans.items() if planned}
    params = sorted(set().union(*map(set, commons.values())) & set(others.columns))
    for _, rows in others.groupby(others[params].map(repr).agg("|".join, axis=1), sort=False):
        run = rows.iloc[0]
        differences = {preset: {k: run[k] for k, v in common.items() if k in run and not _same(run[k], v)}
                       for preset, common in commons.items()}
        preset = min(differences, key=lambda p: (len(differences[p]), p is not None, str(p)))
        sets = tuple(set_item(k, v) for k, v in sorted(differences[preset].items()))
        found.append(RecordedScale(preset, sets, len(rows), None))
    return found


def _same(recorded, planned) -> bool:
    """A recorded param against a planned value (None and NaN are both "absent")."""
    if missing(recorded) and missing(planned):
        return True
    try:
        return bool(recorded == planned) or float(recorded) == float(planned)
    except (TypeError, ValueError):
        return False
