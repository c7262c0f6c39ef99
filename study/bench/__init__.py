"""``nfstudy bench``: what the framework costs, each figure a ratio against a baseline measured
in the same run. How it measures, what each figure compares and the measured tables are in
docs/BENCHMARKS.md; ``harness`` holds the measuring tools, ``cpu`` and ``gpu`` the figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch

from study.bench.cpu import cpu_figures
from study.bench.gpu import cifar_figures, gpu_figures
from study.bench.harness import Settings, host_info
from study.errors import ConfigError

#: Groups of figures ``--only`` selects.
GROUPS = ("framework", "gpu", "cifar", "cli")


def run_bench(device: str = "cpu", model: str = "nf_resnet_small", quick: bool = False,
              log: Callable[[str], None] = lambda _: None, threads: int | None = None,
              compile: bool = False, cifar_root: str | None = None,
              only: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure every figure; the result is what ``nfstudy bench --json`` prints.

    Args:
        device: ``cpu`` or ``cuda`` (``cuda:N``): where every figure is measured.
        model: the registered model of the training figures (CUDA: of the throughput figures;
            the small net default means NFNet-F0 there).
        quick: a reduced mode (seconds): tiny random images, one repeat, no NFNet-F0, no
            compilation. Its numbers are for smoke tests, not for reading.
        log: receives a line as each figure starts.
        threads: ``torch.set_num_threads`` for the whole bench (restored afterwards); ``None``
            means 1 on a CPU and torch's default on a GPU. CPU figures are ratios of CPU time,
            and with several threads that time counts OpenMP threads spinning at every
            barrier: one thread measures the work (2 threads on 2 cores scattered them ±5%).
        compile: also measure ``train.compile`` on the training figures' model.
        cifar_root: a local CIFAR-10 copy for ``cifar10_seconds_to_94`` (CUDA only; default:
            the ``cifar10`` preset's ``data.root``).
        only: groups of :data:`GROUPS` to measure (default: all that the device has; ``gpu``
            and ``cifar`` need CUDA; ``cli``: how fast ``list`` and ``show`` answer).

    Returns:
        ``{"device", "host", "quick", "results": [{"name", "value", "baseline", "ratio",
        "unit", "better", "target", "ok", "note", "low", "high", "coverage", "rounds",
        "resolved"}]}``; ``host`` has the date, versions, GPU, threads and load at the start,
        the load at the end (``load_average_end``), and ``wall_s``, the bench's own wall time.

    Raises:
        ConfigError: an unknown device, CUDA asked for without a GPU, an unknown model, or
            an unknown group in ``only`` (or a GPU group on a CPU).
    """
    from study.models import list_models

    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"bench --device: got {device!r}; allowed: cpu, cuda, cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"bench --device: got {device!r} but torch sees no CUDA device")
    if model not in list_models():
        raise ConfigError(f"bench --model: got {model!r}; allowed: {', '.join(list_models())}")
    if threads is not None and threads < 1:
        raise ConfigError(f"bench --threads: got {threads}; allowed: an integer >= 1")
    groups = list(GROUPS if only is None else dict.fromkeys(only))
    if only is None and device == "cpu":
        groups = ["framework", "cli"]
    for group in groups:
        if group not in GROUPS or (group in ("gpu", "cifar") and device == "cpu"):
            raise ConfigError(f"bench --only: got {group!r}; allowed: {', '.join(GROUPS)} "
                              "(gpu and cifar with --device cuda)")
    if threads is None and device == "cpu":
        threads = 1
    settings = Settings(torch.device(device), model, quick, compile and not quick)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        host, start = host_info(settings.device), time.perf_counter()
        results = cpu_figures(settings, log) if "framework" in groups else []
        if "gpu" in groups:
            results += gpu_figures(settings, log)
        if "cifar" in groups:
            results += cifar_figures(settings, log, cifar_root)
        if "cli" in groups:
            from study.bench.cli import cli_figures

            results += cli_figures(settings, log)
        host["wall_s"] = round(time.perf_counter() - start, 1)
        host["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    finally:
        torch.set_num_threads(before)
    return {"device": str(settings.device), "host": host, "quick": quick,
            "results": [asdict(r) for r in results]}
