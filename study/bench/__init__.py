"""``nfstudy bench``: what the framework costs, each figure against a baseline in the same run.

Every figure compares a candidate with its baseline, both measured in this process on the
same model, data and batch, round-robin (:func:`~study.bench.harness.interleaved`: every
round calls each measurement once, starting one place later than the round before). A
figure's ``ratio`` is the median of the per-round ratios (each round's candidate over that
round's baseline), and its spread ``low``–``high`` an interval of order statistics holding
that median with ≥ 90% probability (min–max over up to 5 rounds). The bench takes 5 rounds
(3 on a GPU) and adds rounds, up to 11, until every judged figure's spread is narrower than
its target's tolerance (:data:`~study.bench.harness.TARGETS`); a figure still wider is
marked unresolved. The training runs of all the step figures share one round-robin, so one
baseline run serves every ratio against it. On a CPU the clock is this process's CPU time
(all its threads), so other jobs on a shared machine do not inflate one side; on a GPU it is
wall time with ``torch.cuda.synchronize`` around each call. Step times of the framework
figures are read at each epoch's end through :func:`study.train.trainer.train`'s
``on_epoch`` (epochs after the first, so set-up and compilation are left out; each epoch's
validation pass is in, and the bare loop runs the same pass); the GPU throughput figures
count the training loop alone (``time/images_per_s``, before the epoch's evaluation), as
the bare timm loop does. ``framework_cost_per_run`` is wall time: it is a latency.

Framework figures (``--only framework``; the default small net on digits, batch 128 at 16
px, as the digits preset):

- ``trainer_overhead``: a step of :func:`~study.train.trainer.train` (tracking off) / a hand-written
  PyTorch loop with the same model, optimizer, data loader and batch.
- ``agc_vectorised_vs_loop``: :class:`~study.optim.agc.AGC` / timm's per-parameter loop
  (``timm.utils.agc.adaptive_clip_grad``, re-typed here) on the model's parameters with fixed
  gradients, each measurement many calls long (0.2 s); ``agc_vectorised_vs_loop/nfnet_f0`` the
  same on NFNet-F0's 68M clipped values (not ``--quick``), with ``agc_read_floor/nfnet_f0``:
  one read of every weight and gradient against the loop, the least memory traffic an exact
  AGC needs.
- ``agc_step_overhead``, ``sam_fraction``, ``sam_full``: a training step with AGC (λ = 0.01),
  SAM on 20% of the batch, full SAM / the same step without.
- ``tracking_overhead``: a whole training run logging to MLflow (a SQLite store in a temp
  directory) / the same run logging nowhere (the ``trainer_overhead`` runs).
- ``framework_cost_per_run``: seconds from a study spec to a FINISHED MLflow child run of one
  training step (plan, experiment and parent, child run with params, data, model, the step,
  evaluation, final metrics) / a bare first step (data, model, optimizer, one step).
  Without MLflow installed these two are left out.
- ``channels_last`` (not ``--quick``): steps with ``train.channels_last`` against NCHW;
  ``compile`` (only with ``--compile``: a minute of compilation on a small CPU): steps with
  ``train.compile`` against eager ones.

GPU figures (``--device cuda``, ``--only gpu``): NFNet-F0 at 192 px in bf16 on random data:
images/s of NHWC against NCHW, compiled against eager, the model FLOP utilisation (training
FLOPs ≈ 6 × MACs per image, against the GPU's dense bf16 peak, looked up by its exact name in
:mod:`study.bench.peaks`), and, when timm is installed (extra ``bench``), our NFNet-F0
against timm's ``dm_nfnet_f0`` in a bare loop, like for like (layout, SGD with weight decay,
dropout, stochastic depth, AGC without the classifier weight). Then the ``cifar10`` preset
(``--only cifar``): ``cifar10_images_per_s`` (bf16 against fp32, FakeData of CIFAR's shape)
and, with a local CIFAR-10 copy, ``cifar10_seconds_to_94``: seconds from the call to the
first epoch at 94% validation top-1, against the whole run's seconds.
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
GROUPS = ("framework", "gpu", "cifar")


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
            and ``cifar`` need CUDA).

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
        groups = ["framework"]
    for group in groups:
        if group not in GROUPS or (group != "framework" and device == "cpu"):
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
        host["wall_s"] = round(time.perf_counter() - start, 1)
        host["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    finally:
        torch.set_num_threads(before)
    return {"device": str(settings.device), "host": host, "quick": quick,
            "results": [asdict(r) for r in results]}
