"""The process-wide torch settings a run depends on: cuDNN autotuning, TF32, deterministic
algorithms and the ``torch.compile`` caches.

:func:`configure_backends` sets every one of them at the start of each run, from the run's
config, so a run never inherits what an earlier run (or the user's code) left in the process:

- ``torch.backends.cudnn.benchmark`` is on for CUDA runs (cuDNN times its convolution
  algorithms once per input shape and keeps the fastest; the first step of each shape, and
  of each evaluation batch shape, pays for it) and off when ``train.deterministic``.
- ``train.tf32`` says where fp32 work may run on TF32 tensor cores (Ampere and later; a
  10-bit mantissa instead of 23): ``convolutions`` (PyTorch's defaults, and nfstudy's
  before the key existed), ``all`` (matrix products too), ``off`` (true fp32 everywhere).
  Under ``bf16``/``fp16`` autocast it only matters for the ops autocast leaves in fp32.
- ``train.deterministic`` asks torch for deterministic algorithms only
  (``torch.use_deterministic_algorithms``; an op without one raises instead of running), and
  sets ``CUBLAS_WORKSPACE_CONFIG`` as cuBLAS requires. Limits: it makes a run repeat itself
  bit for bit on the same GPU model, driver, torch build, process count and (for work on
  the CPU) intra-op thread count; it promises nothing across GPU models or torch versions,
  and a compiled run may still differ between processes when Inductor's autotuning picks
  other kernels. A CPU run repeats itself bit for bit without it (same thread count: a
  checkpoint written with 2 threads and resumed with 1 ends 1 ulp away).

:func:`compiled` resets Dynamo before compiling a run whose config differs from the last
compiled one: a worker that trains many configs would otherwise pile up cache entries and,
past Dynamo's recompile limit, silently fall back to eager.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

import torch

from study.config.run_config import RunConfig, TrainConfig

#: cuBLAS's setting for reproducible results (CUDA docs, "Results reproducibility").
CUBLAS_DETERMINISTIC = ":4096:8"
TF32_POLICIES = {"convolutions": (True, False), "all": (True, True), "off": (False, False)}

_last_compiled: str | None = None  # the config of the graphs Dynamo holds, process-wide as they are


def configure_backends(train: TrainConfig, device: torch.device) -> None:
    """Set cuDNN autotuning, the TF32 policy and deterministic algorithms for one run."""
    if train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(train.deterministic)
    torch.backends.cudnn.deterministic = train.deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not train.deterministic
    convolutions, matmuls = TF32_POLICIES[train.tf32]
    torch.backends.cudnn.allow_tf32 = convolutions
    torch.backends.cuda.matmul.allow_tf32 = matmuls


def compiled(module: torch.nn.Module, config: RunConfig) -> Callable:
    """``torch.compile(module)``, after a Dynamo reset if the last compiled run in this
    process had another config (its seed aside: seeds share graphs)."""
    global _last_compiled
    flat = {k: v for k, v in config.flat().items() if k != "seed"}
    key = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    if _last_compiled is not None and _last_compiled != key:
        torch._dynamo.reset()
    _last_compiled = key
    # Static shapes: SAM's ascent runs a smaller batch, which gets its own graph instead of
    # turning the step's graph dynamic.
    return torch.compile(module, dynamic=False)
