"""The bench's measuring tools: results judged against targets, round-robin medians, clocks."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

#: Dense bf16 peak of known GPUs, FLOP/s (vendor data sheets, without sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
#: Targets of the figures (ratios unless the unit says otherwise).
TARGETS = {
    "trainer_overhead": 1.05,
    "agc_vectorised_vs_loop": 0.25,
    "agc_step_overhead": 1.05,
    "sam_fraction": 1.3,
    "sam_full": 2.2,  # "about 2": the ascent is a second full forward and backward
    "tracking_overhead": 1.02,
}
FRAMEWORK_COST_TARGET_S = 1.0
MFU_TARGET = 0.35


@dataclass
class Result:
    """One figure: ``ratio = value / baseline``; ``better`` says which way is good."""

    name: str
    value: float
    baseline: float
    ratio: float
    unit: str
    better: str = "lower"
    target: str = ""
    ok: bool | None = None
    note: str = ""


@dataclass
class Settings:
    """How much to measure: ``quick`` is a seconds-long smoke mode for tests."""

    device: torch.device
    model: str
    quick: bool
    compile: bool = False

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3

    @property
    def warmup(self) -> bool:
        """Warm-up calls for the first figures; later ones run in a warm process, and every
        step time leaves out its run's first epoch anyway."""
        return not self.quick


def judge(name: str, value: float, baseline: float, unit: str, *, better: str = "lower",
            note: str = "", target: float | None = None, on: str = "ratio") -> Result:
    ratio = value / baseline if baseline > 0 else float("nan")
    target = TARGETS.get(name) if target is None else target
    text, ok = "", None
    if target is not None:
        measured = ratio if on == "ratio" else value
        sign = "<=" if better == "lower" else ">="
        ok = measured <= target if better == "lower" else measured >= target
        text = f"{'' if on == 'ratio' else 'value '}{sign} {target:g}" + (" s" if unit == "s" and on == "value" else "")
    return Result(name, value, baseline, ratio, unit, better, text, ok, note)


def collector(results: list[Result], log: Callable[[str], None]) -> Callable[[Result], None]:
    """Appends a result and logs it at once (a long bench shows its figures as they come)."""

    def add(result: Result) -> None:
        results.append(result)
        log(f"  {result.name}: {result.value:.4g} vs {result.baseline:.4g} {result.unit}, "
            f"ratio {result.ratio:.3f} {result.target}")

    return add


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(measures: dict[str, Callable[[], dict[str, float]]], repeats: int
                ) -> dict[str, dict[str, float]]:
    """Medians of several measurements taken round-robin.

    Every repeat calls each measure once, starting one place later in the list than the
    repeat before (a, b, c; b, c, a; ...), so drift on a shared machine spreads over all of
    them instead of loading one side; a baseline measured once serves every ratio against it.

    Args:
        measures: name → a call returning named values (e.g. ``{"step": s, "run": s}``).
        repeats: calls of each measure.

    Returns:
        name → the median of each of its values over the repeats.
    """
    names = list(measures)
    values: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            values[name].append(measures[name]())
    return {name: {key: statistics.median(v[key] for v in vs) for key in vs[0]}
            for name, vs in values.items()}


def paired(candidate: Callable[[], float], baseline: Callable[[], float], repeats: int,
           *, warmup: bool = True) -> tuple[float, float]:
    """Medians of two measurements taken alternately (:func:`interleaved` of two).

    Args:
        candidate, baseline: each returns one measurement (e.g. seconds per step).
        repeats: measurements of each; the order alternates every repeat.
        warmup: call each once first and discard the result.

    Returns:
        ``(median of candidate, median of baseline)``.
    """
    if warmup:
        candidate(), baseline()
    medians = interleaved({"candidate": lambda: {"v": candidate()},
                           "baseline": lambda: {"v": baseline()}}, repeats)
    return medians["candidate"]["v"], medians["baseline"]["v"]


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
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


