"""Which GPUs each local worker of ``nfstudy run --workers N --nproc-per-node P`` gets.

Each worker sees its own ``P`` GPUs through ``CUDA_VISIBLE_DEVICES``, and no ordinal is ever
given twice: CUDA exposes *no* device when ``CUDA_VISIBLE_DEVICES`` repeats one (``0,0``),
so a run with ``train.device=auto`` would silently train on the CPU, and two workers on one
GPU would share its memory and time unchecked. A placement that needs more GPUs than are
visible is refused before anything runs (:func:`check_placement`). Runs on the CPU
(``train.device=cpu``, or no GPU at all) get an equal share of the cores instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from study.errors import ConfigError


def visible_gpus() -> list[str]:
    """The GPUs workers may use, as ``CUDA_VISIBLE_DEVICES`` entries (ordinals or UUIDs),
    each once: ``$CUDA_VISIBLE_DEVICES`` when set, else every GPU torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return list(dict.fromkeys(d.strip() for d in listed.split(",") if d.strip()))
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def uses_gpu(devices: Iterable[str], gpus: list[str]) -> bool:
    """Whether runs with these ``train.device`` values train on the GPUs: ``cuda``/``cuda:N``,
    or ``auto`` while GPUs are visible."""
    return any(d.startswith("cuda") or (d == "auto" and gpus) for d in devices)


def check_placement(workers: int, nproc_per_node: int, devices: Iterable[str], gpus: list[str]) -> None:
    """Refuse a placement that would put two processes on one GPU.

    Args:
        workers: local worker processes (``--workers``).
        nproc_per_node: processes per run (``--nproc-per-node``), one GPU each.
        devices: the ``train.device`` of the runs to train.
        gpus: :func:`visible_gpus`.

    Raises:
        ConfigError: the runs use the GPUs and ``workers × nproc_per_node`` exceeds their count.
    """
    wanted = workers * nproc_per_node
    if gpus and uses_gpu(devices, gpus) and wanted > len(gpus):
        raise ConfigError(
            f"--workers {workers} × --nproc-per-node {nproc_per_node}: {wanted} GPUs wanted, "
            f"{len(gpus)} visible ({','.join(gpus)}); allowed: workers × nproc-per-node <= {len(gpus)}, "
            "one process per GPU (or train.device=cpu)")


def worker_env(index: int, workers: int, gpus: list[str], nproc_per_node: int = 1) -> dict[str, str]:
    """Environment of local worker ``index`` of ``workers``: its own ``nproc_per_node`` GPUs
    (``gpus[index·P : (index+1)·P]``; none for a worker past the last GPU, whose runs are
    CPU runs once :func:`check_placement` passed), and an equal share of the CPU cores for
    its intra-op threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // (workers * nproc_per_node)))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    if gpus:
        own = gpus[index * nproc_per_node:(index + 1) * nproc_per_node]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(own) if len(own) == nproc_per_node else ""
    return env
