"""Checkpoints for long runs (``train.checkpoint_every``): a crashed run resumes from its
last checkpoint and ends with the same weights and metrics as an uninterrupted run.

Files live under ``$NFSTUDY_HOME/checkpoints/<key>/last.pt`` (key: the config hash) and are
written atomically (temp file, fsync, rename) so a kill mid-write leaves the previous one.
They are read with ``torch.load(weights_only=True)``: a checkpoint holds tensors, numbers and
containers of them, never code, so a tampered file cannot run anything.

What a checkpoint holds (everything a training step reads that changes between steps): the
model, the optimizer (momentum buffers), the EMA copy, the GradScaler, the step and epoch,
the random generators (torch CPU, the run's CUDA device, Python's ``random``, and named extra
generators such as the MixUp one), and the metrics of the last finished epoch. The data order
is not saved: the loaders replay any epoch from ``(seed, epoch)`` (``set_epoch``). SAM keeps
no state between steps.

A checkpoint resumes on the other device kind too (written on a GPU, resumed on a CPU, or
the reverse; the key leaves ``train.device`` out): the weights, momentum and EMA move to the
new device, and the optimizer keeps the implementation built for it (fused on CUDA). Random
streams cannot continue across kinds (a CPU generator is a Mersenne Twister, a CUDA one a
Philox counter), so a generator saved on the other kind is seeded afresh from a hash of its
saved state: reproducible, but not the stream the run would have drawn on its first device.
An fp16 run's loss scale is kept only on CUDA: resumed there from a CPU checkpoint, it starts
again at its initial value.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from study.paths import checkpoint_dir
from study.train.world import World

_FILE = "last.pt"


def save_checkpoint(key: str, state: dict[str, Any]) -> None:
    """Write ``state`` as the last checkpoint of ``key``, atomically.

    Args:
        key: the run's checkpoint key (its config hash).
        state: tensors, numbers, strings and dicts/lists/tuples of them (what
            :func:`capture_state` returns).
    """
    folder = checkpoint_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (_FILE + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / _FILE)


def load_checkpoint(key: str) -> dict[str, Any] | None:
    """The last checkpoint saved under ``key``, or ``None``.

    Loaded with ``weights_only=True``: a checkpoint cannot run code.

    Raises:
        pickle.UnpicklingError: the file holds anything but tensors, numbers and containers
            (e.g. a pickle whose ``__reduce__`` would run code).
    """
    path = checkpoint_dir(key) / _FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_checkpoint(key: str) -> None:
    """Delete every checkpoint of ``key`` (the run finished)."""
    shutil.rmtree(checkpoint_dir(key), ignore_errors=True)


def capture_state(*, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler, ema_module: nn.Module | None,
                  generators: dict[str, torch.Generator], device: torch.device,
                  step: int, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
    """Everything needed to continue training after ``epoch`` exactly as if never stopped.

    Args:
        model: the plain (unwrapped) network.
        optimizer: its optimizer (its state holds the momentum buffers).
        scaler: the AMP GradScaler (its state is empty when disabled).
        ema_module: the EMA's averaged copy, or ``None``.
        generators: extra random generators of the run by name (e.g. MixUp's).
        device: the training device (its CUDA generator is saved).
        step: optimizer steps taken so far.
        epoch: the epoch just finished (0-based).
        metrics: the last epoch's metrics that the run returns at its end.

    Returns:
        A dict that :func:`save_checkpoint` can write and :func:`restore_state_` reads.
    """
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema_module.state_dict() if ema_module is not None else None,
        "generators": {name: g.get_state() for name, g in generators.items()},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "rng_python": random.getstate(),
        "step": step,
        "epoch": epoch,
        "metrics": dict(metrics),
    }


def restore_state_(state: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, ema_module: nn.Module | None,
                   generators: dict[str, torch.Generator], device: torch.device) -> None:
    """Load a :func:`capture_state` dict back into freshly built training objects, in place.

    Args:
        state: what :func:`load_checkpoint` returned.
        model, optimizer, scaler, ema_module, generators, device: as for :func:`capture_state`,
            built the same way as in the run that saved ``state``.
    """
    model.load_state_dict(state["model"])
    implementation = [{k: g[k] for k in ("foreach", "fused") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, flags in zip(optimizer.param_groups, implementation):
        group.update(flags)  # the saved groups carry the other device's choice (fused on CUDA)
    if state["scaler"]:  # empty: saved by a disabled scaler (fp16 on a CPU)
        scaler.load_state_dict(state["scaler"])
    if ema_module is not None and state["ema"] is not None:
        ema_module.load_state_dict(state["ema"])
    for name, g in generators.items():
        _set_generator_state(g, state["generators"][name])
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda":
        if state["rng_cuda"] is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        else:  # written on a CPU
            torch.cuda.manual_seed(_seed_of(state["rng_cpu"]))
    version, internal, gauss = state["rng_python"]
    random.setstate((version, tuple(internal), gauss))


def _set_generator_state(generator: torch.Generator, saved: torch.Tensor) -> None:
    """Restore ``saved`` into ``generator``, or, if it was saved by a generator of the other
    device kind (another size: 5056 bytes on a CPU, 16 on CUDA), seed it from ``saved``."""
    if saved.numel() == generator.get_state().numel():
        generator.set_state(saved)
    else:
        generator.manual_seed(_seed_of(saved))


def _seed_of(state: torch.Tensor) -> int:
    """A 63-bit seed drawn from a generator state's bytes."""
    digest = hashlib.sha256(state.cpu().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Progress:
    """Where a run stands: steps and epochs done, and the last epoch's metrics."""

    step: int = 0
    first_epoch: int = 0
    train_loss: float = float("nan")
    val: dict[str, float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Checkpointer:
    """The checkpoint bookkeeping of one run (``train.checkpoint_every``; a no-op without it).

    Args:
        key: the run's key (its config hash); each rank of a DDP run gets its own file.
        every: save after every ``every`` epochs; ``None`` never saves nor resumes.
        world: this process among the run's replicas.
        objects: what :func:`capture_state` saves (model, optimizer, scaler, ema_module,
            generators, device).
    """

    def __init__(self, key: str, every: int | None, world: World, **objects: Any):
        self.key = key if world.size == 1 else f"{key}-rank{world.rank}-of-{world.size}"
        self.every, self.world, self.objects = every, world, objects

    def resume(self) -> Progress:
        """Restore the last checkpoint into the training objects; where the run stands."""
        state = load_checkpoint(self.key) if self.every else None
        if not self.world.agree(-1 if state is None else state["epoch"]):
            state = None  # a kill between the ranks' saves: start over rather than mix epochs
        if state is None:
            return Progress()
        restore_state_(state, **self.objects)
        metrics = state["metrics"]
        return Progress(state["step"], state["epoch"] + 1, metrics["train/loss"],
                        {"top1": metrics["val/top1"], "loss": metrics["val/loss"]}, dict(metrics))

    def after_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        """Save when ``epoch`` (0-based) ends a period of ``every`` epochs."""
        if self.every and (epoch + 1) % self.every == 0:
            save_checkpoint(self.key, capture_state(**self.objects, step=step, epoch=epoch, metrics=metrics))

    def finished(self) -> None:
        """The run ended: its checkpoints are of no more use."""
        if self.every:
            remove_checkpoint(self.key)
