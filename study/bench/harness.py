"""The bench's measuring tools: results judged against targets, round-robin medians, clocks."""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Target:
    """What a figure is judged against: ``limit`` on its ratio (or value), and ``tolerance``,
    how far from its ideal the limit sits (an overhead's ideal is 1.0): the bench adds
    rounds until the figure's spread is narrower than that, or it reaches its last round."""

    limit: float
    tolerance: float


#: The targets of the framework's figures (ratios).
TARGETS = {
    "trainer_overhead": Target(1.05, 0.05),
    "agc_vectorised_vs_loop": Target(0.25, 0.05),
    "agc_step_overhead": Target(1.05, 0.05),
    "agc_telemetry": Target(1.15, 0.1),  # per clip, three vector ops on the norms; per step it is below 1%
    "sam_fraction": Target(1.3, 0.1),  # ideal 1.2: the ascent is a forward and backward on 20%
    "sam_full": Target(2.2, 0.2),  # "about 2": the ascent is a second full forward and backward
    "tracking_overhead": Target(1.02, 0.02),
}
FRAMEWORK_COST_TARGET_S = 1.0
MFU_TARGET = 0.35
#: The confidence of a figure's spread: an interval of order statistics around the median.
CONFIDENCE = 0.9


@dataclass
class Result:
    """One figure. ``value`` and ``baseline`` are medians over the rounds; ``ratio`` is the
    median of the per-round ratios (each round's candidate over the same round's baseline,
    which cancels drift between rounds); ``low``–``high`` is its spread: an interval of
    order statistics that holds the median with probability ``coverage`` (min–max over up
    to 5 rounds). ``resolved``: the spread is narrower than the target's tolerance, so the
    verdict ``ok`` is the data's, not the noise's (``None`` without a tolerance)."""

    name: str
    value: float
    baseline: float
    ratio: float
    unit: str
    better: str = "lower"
    target: str = ""
    ok: bool | None = None
    note: str = ""
    low: float = float("nan")
    high: float = float("nan")
    coverage: float = float("nan")
    rounds: int = 1
    resolved: bool | None = None


@dataclass
class Settings:
    """How much to measure: ``quick`` is a seconds-long smoke mode for tests."""

    device: torch.device
    model: str
    quick: bool
    compile: bool = False

    @property
    def repeats(self) -> int:
        """Rounds at least: 5 on a CPU (min–max is then a 94% interval of the median), 3 on
        a GPU, whose wall time scatters far less than a shared CPU's."""
        return 1 if self.quick else 3 if self.device.type == "cuda" else 5

    @property
    def max_repeats(self) -> int:
        """Rounds at most, while a figure's spread is wider than its tolerance."""
        return 1 if self.quick else 11

    @property
    def warmup(self) -> bool:
        """Warm-up calls for the first figures; later ones run in a warm process, and every
        step time leaves out its run's first epoch anyway."""
        return not self.quick


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(low, high, coverage)``: the order statistics ``x_(k) <= x_(n+1-k)`` with the largest
    ``k`` whose interval still holds the median with probability ``>= confidence`` (binomial,
    distribution-free); min–max (``k = 1``) when ``n`` is too small for that."""
    xs, n = sorted(values), len(values)
    below = [math.comb(n, i) / 2 ** n for i in range(n + 1)]  # P(Binomial(n, 1/2) = i)
    k = 1
    while k < n // 2 and 1 - 2 * sum(below[:k + 1]) >= confidence:
        k += 1
    return xs[k - 1], xs[n - k], 1 - 2 * sum(below[:k])


def ratios(values: Sequence[float], baselines: Sequence[float]) -> list[float]:
    return [v / b if b > 0 else float("nan") for v, b in zip(values, baselines)]


def spread_ok(values: Sequence[float], baselines: Sequence[float], name: str) -> bool:
    """Whether the figure ``name`` (a key of :data:`TARGETS`) is resolved by these rounds."""
    low, high, _ = median_interval(ratios(values, baselines))
    return name not in TARGETS or high - low < TARGETS[name].tolerance


def judge(name: str, values: Sequence[float], baselines: Sequence[float], unit: str, *, better: str = "lower",
          note: str = "", target: float | None = None, on: str = "ratio") -> Result:
    """A :class:`Result` from the rounds of a candidate (``values``) and its baseline, judged
    against ``target`` (default: :data:`TARGETS`) on the median ratio, or on the median value
    when ``on="value"``."""
    per_round = ratios(values, baselines) if on == "ratio" else list(values)
    low, high, coverage = median_interval(per_round)
    ratio = statistics.median(ratios(values, baselines))
    known = TARGETS.get(name)
    limit = known.limit if target is None and known else target
    text, ok, resolved = "", None, None
    if limit is not None:
        measured = ratio if on == "ratio" else statistics.median(values)
        sign = "<=" if better == "lower" else ">="
        ok = measured <= limit if better == "lower" else measured >= limit
        text = f"{'' if on == 'ratio' else 'value '}{sign} {limit:g}" + (" s" if unit == "s" and on == "value" else "")
    if known is not None and target is None:
        resolved = high - low < known.tolerance
        if not resolved:
            note = "; ".join(filter(None, [note, f"unresolved: spread {high - low:.3f} >= tolerance {known.tolerance:g}"]))
    return Result(name, statistics.median(values), statistics.median(baselines), ratio, unit, better, text, ok,
                  note, low, high, coverage, len(per_round), resolved)


def collector(results: list[Result], log: Callable[[str], None]) -> Callable[[Result], None]:
    """Appends a result and logs it at once (a long bench shows its figures as they come)."""

    def add(result: Result) -> None:
        results.append(result)
        log(f"  {result.name}: {result.value:.4g} vs {result.baseline:.4g} {result.unit}, ratio {result.ratio:.3f} "
            f"[{result.low:.3f}–{result.high:.3f}, {result.rounds} rounds] {result.target}")

    return add


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Rounds = dict[str, list[dict[str, float]]]


def interleaved(measures: dict[str, Callable[[], dict[str, float]]], repeats: int, *,
                settled: Callable[[Rounds], bool] | None = None, max_repeats: int = 0) -> Rounds:
    """Measurements taken round-robin, every round of each kept.

    Every round calls each measure once, starting one place later in the list than the
    round before (a, b, c; b, c, a; ...), so drift on a shared machine spreads over all of
    them instead of loading one side; a baseline measured once serves every ratio against it.

    Args:
        measures: name → a call returning named values (e.g. ``{"step": s, "run": s}``).
        repeats: rounds to take at least.
        settled: given the rounds so far, whether they are enough (every judged figure's
            spread under its tolerance); without it, exactly ``repeats`` rounds.
        max_repeats: rounds at most while ``settled`` says no.

    Returns:
        name → the values of each round, in order.
    """
    names = list(measures)
    rounds: Rounds = {name: [] for name in names}
    r = 0
    while r < repeats or (settled is not None and r < max_repeats and not settled(rounds)):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            rounds[name].append(measures[name]())
        r += 1
    return rounds


def column(rounds: Rounds, name: str, key: str) -> list[float]:
    """The values of ``key`` of measure ``name``, one per round."""
    return [values[key] for values in rounds[name]]


def paired(candidate: Callable[[], float], baseline: Callable[[], float], repeats: int,
           *, warmup: bool = True, name: str = "", max_repeats: int = 0) -> tuple[list[float], list[float]]:
    """Two measurements taken alternately (:func:`interleaved` of two).

    Args:
        candidate, baseline: each returns one measurement (e.g. seconds per step).
        repeats: measurements of each at least; the order alternates every repeat.
        warmup: call each once first and discard the result.
        name: the figure (a key of :data:`TARGETS`): rounds are added, up to
            ``max_repeats``, until its spread is under its tolerance.

    Returns:
        ``(candidate's values, baseline's values)``, one per round.
    """
    if warmup:
        candidate(), baseline()
    rounds = interleaved({"candidate": lambda: {"v": candidate()}, "baseline": lambda: {"v": baseline()}},
                         repeats, max_repeats=max_repeats,
                         settled=lambda r: spread_ok(column(r, "candidate", "v"), column(r, "baseline", "v"), name))
    return column(rounds, "candidate", "v"), column(rounds, "baseline", "v")


def timed(fn: Callable[[], Any], device: torch.device, calls: int = 1) -> Callable[[], float]:
    """A measurement: seconds per call of ``fn`` over ``calls`` calls (:func:`clock`), synced."""
    now = clock(device)

    def measure() -> float:
        sync_device(device)
        start = now()
        for _ in range(calls):
            fn()
        sync_device(device)
        return (now() - start) / calls

    return measure


def calls_for(fn: Callable[[], Any], device: torch.device, seconds: float) -> int:
    """How many calls of ``fn`` (once warmed up) take about ``seconds``: one 0.3 ms call of a
    GPU kernel is mostly launch and clock noise, a hundred are a measurement."""
    fn()
    once = timed(fn, device)()
    return max(1, math.ceil(seconds / max(once, 1e-7)))


def clock(device: torch.device) -> Callable[[], float]:
    """CPU seconds of this process on a CPU device (immune to other jobs sharing the
    machine; the logging thread counts too), wall seconds on an accelerator."""
    return time.process_time if device.type == "cpu" else time.perf_counter



def host_info(device: torch.device) -> dict[str, Any]:
    """Where the figures were measured: machine, versions, threads, load, date."""
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


