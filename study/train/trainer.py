"""One training run: ``train(config) -> metrics``.

The loop reads top to bottom: build data, model and optimizer; for each batch forward,
backward, clip (Adaptive Gradient Clipping, Brock et al. 2021 §4, arXiv 2102.06171), step,
schedule; at each epoch's end evaluate and log. The device is synchronised once per epoch
(and, on accelerators, every few steps to catch a diverged loss); metrics are accumulated on
the device.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from study.config.run_config import RunConfig
from study.data import build_data
from study.models import build_model
from study.optim.agc import AGC, agc_parameters
from study.optim.ema import EMA
from study.optim.sam import SAM
from study.optim.sgd import build_optimizer, lr_at
from study.record.tags import COMPLETED, DIVERGED
from study.train.backends import compiled, configure_backends
from study.train.checkpoint import Checkpointer
from study.train.telemetry import Telemetry
from study.train.world import world as current_world

#: On accelerators, look at the loss this often (a host sync) so a diverged run stops early.
DIVERGENCE_CHECK_EVERY = 25
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class MetricSink(Protocol):
    """Where per-epoch metrics go (an MLflow child run, a spool, or nothing)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, autocast) -> dict[str, float]:
    """Top-1 and mean cross-entropy over a split (one host sync at the end)."""
    model.eval()
    correct, loss_sum, count = 0, 0, 0
    for x, y in loader:
        with autocast():
            logits = model(x)
        correct = correct + (logits.argmax(dim=1) == y).sum()
        loss_sum = loss_sum + F.cross_entropy(logits.float(), y, reduction="sum")
        count += len(y)
    return {"top1": float(correct) / count, "loss": float(loss_sum) / count}  # the one sync


@dataclass(frozen=True)
class Schedule:
    """How long a run trains: steps in all and per epoch, epochs, warmup steps."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    warmup_steps: int

    @classmethod
    def of(cls, config: RunConfig, steps_per_epoch: int) -> Schedule:
        total = config.train.steps or config.train.epochs * steps_per_epoch
        warmup = config.optim.warmup_epochs
        warmup_steps = config.optim.warmup_fraction * total if warmup is None else warmup * steps_per_epoch
        return cls(steps_per_epoch, total, math.ceil(total / steps_per_epoch), round(warmup_steps))


class Precision:
    """Autocast and gradient scaling for ``train.precision`` on ``device`` (weights stay fp32)."""

    def __init__(self, precision: str, device: torch.device):
        self.dtype = _DTYPES[precision]
        self.device_type = device.type
        self.enabled = self.dtype is not None and device.type in ("cuda", "cpu")
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.enabled else nullcontext()


def train(
    config: RunConfig,
    *,
    tracker: MetricSink | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float | str]:
    """Train one run and return its final metrics.

    Args:
        config: the run's validated configuration.
        tracker: receives per-epoch metrics (``step`` = epoch); ``None`` logs nowhere.
        on_epoch: called after each epoch's evaluation with ``(epoch, metrics)``; a search
            uses it to report to Optuna and may raise to prune the run.

    Returns:
        ``outcome`` (``completed`` or ``diverged``), ``val/top1``, ``val/loss``,
        ``test/top1``, ``test/loss``, ``train/loss``, ``time/step_ms``, ``time/total_s``,
        ``epochs``, ``steps``; with ``optim.ema_decay`` also ``test/top1_ema`` and
        ``test/loss_ema`` (the EMA weights on the test split); with AGC on a net with SkipInit
        gains the tag ``nfstudy.agc_floor_bound`` (``study.train.telemetry``). Each epoch also
        logs the telemetry metrics of ``study.train.telemetry``.

    Example:
        >>> from study import expand, load_study, train
        >>> metrics = train(expand(load_study("quickstart"), preset="smoke")[0])
    """
    start = time.perf_counter()
    world = current_world()  # one process, or this rank of a torchrun DDP run
    world.local_batch_size(config.real_batch_size)
    seed_everything(config.seed + world.rank)  # the data order uses config.seed on every rank
    device = world.device(resolve_device(config.train.device))
    configure_backends(config.train, device)  # cuDNN autotuning, TF32, deterministic algorithms
    data = build_data(config.data, config.real_batch_size, device, config.seed, config.train.channels_last,
                      model_name=config.model.resolved_name, rank=world.rank, world_size=world.size)
    model = _build_model(config, data, device)
    _record_dataset(config, tracker, data)
    replicated = world.wrap(model)  # DDP averages the gradients over the ranks
    forward = compiled(replicated, config) if config.train.compile else replicated
    optimizer = build_optimizer(model, config.peak_lr, momentum=config.optim.momentum,
                                nesterov=config.optim.nesterov, weight_decay=config.optim.weight_decay)
    agc = (AGC(agc_parameters(model, config.agc.exclude), config.agc.clipping, eps=config.agc.eps,
               mode=config.agc.mode, telemetry=True) if config.agc.clipping is not None else None)
    sam = (SAM(replicated, rho=config.sam.rho, mode=config.sam.mode, fraction=config.sam.fraction)
           if config.sam.mode != "off" else None)
    ema = EMA(model, decay=config.optim.ema_decay) if config.optim.ema_decay else None
    schedule = Schedule.of(config, len(data.train))
    precision = Precision(config.train.precision, device)
    scaler = precision.scaler
    loss_fn = functools.partial(_loss, label_smoothing=config.train.label_smoothing)
    checkpoints = Checkpointer(config.config_hash(), config.train.checkpoint_every, world, model=model, device=device,
                               optimizer=optimizer, scaler=scaler, generators={}, ema_module=ema and ema.module)
    progress = checkpoints.resume()
    telemetry = Telemetry(model, agc, progress.metrics)  # AGC's counts and the gains, read per epoch
    step, train_loss, epochs_done = progress.step, progress.train_loss, progress.first_epoch
    val = progress.val or {"top1": float("nan"), "loss": float("nan")}
    outcome, epoch_times = COMPLETED, []
    for epoch in range(progress.first_epoch, schedule.epochs):
        model.train()
        data.train.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        batches = 0
        epoch_start = time.perf_counter()
        for x, targets in data.train:  # this rank's rows of the global batch, MixUp/CutMix done
            if step >= schedule.total_steps:
                break
            lr = lr_at(step, schedule.total_steps, schedule.warmup_steps, config.peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if sam is not None:  # the ascent runs the descent's forward, autocast and scaling
                sam.ascend_(loss_fn, x, targets, forward=forward, autocast=precision.autocast, scale=scaler.scale)
            with precision.autocast():
                loss = loss_fn(forward(x), targets)
            scaler.scale(loss).backward()
            if sam is not None:
                sam.restore_()
            if agc is not None:  # the gradient is all-reduced (DDP) by now
                scaler.unscale_(optimizer)  # AGC sees the true gradient (paper §4)
                agc.clip_()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=agc is None)  # AGC: gradients stay in its flat buffer
            if ema is not None:
                ema.update_(step)
            loss_sum += loss.detach()
            batches += 1
            step += 1
            # A host sync: free on the CPU, so check every step there; every few on a GPU.
            # Under DDP every rank decides on the mean loss, so all of them stop together.
            if ((device.type == "cpu" or step % DIVERGENCE_CHECK_EVERY == 0)
                    and not torch.isfinite(world.mean(loss.detach()))):
                outcome = DIVERGED
                break
        train_loss = (world.mean(loss_sum) / max(batches, 1)).item()  # the epoch's one sync
        epoch_s = time.perf_counter() - epoch_start
        epoch_times.append((epoch_s, batches))
        epochs_done = epoch + 1
        if outcome == DIVERGED or not math.isfinite(train_loss):
            outcome = DIVERGED
            if tracker is not None:
                tracker.log_metrics({"train/loss": _finite_or(train_loss)}, epoch)
            break
        val = evaluate(model, data.val, precision.autocast)
        metrics = {"train/loss": train_loss, "val/loss": val["loss"], "val/top1": val["top1"], "time/epoch_s": epoch_s,
                   "time/images_per_s": batches * config.real_batch_size / epoch_s, "lr": lr, **telemetry.read()}
        if ema is not None:
            metrics["val/top1_ema"] = evaluate(ema.module, data.val, precision.autocast)["top1"]
        if tracker is not None:
            tracker.log_metrics(metrics, epoch)
        if on_epoch is not None:  # with the run's length in epochs, for a progress bar's total
            on_epoch(epoch, {**metrics, "epochs": schedule.epochs})
        checkpoints.after_epoch(epoch, step, metrics)

    val = {"top1": 1.0 / data.num_classes, "loss": float("nan")} if outcome == DIVERGED else val
    checkpoints.finished()
    _record_weights(config, tracker, model)
    return {"outcome": outcome, "val/top1": val["top1"], "val/loss": val["loss"], "train/loss": train_loss,
            **_test_metrics(model, ema, data, precision, diverged=outcome == DIVERGED),
            "time/step_ms": _step_ms(epoch_times), "time/total_s": time.perf_counter() - start,
            "epochs": epochs_done, "steps": step, **telemetry.tags()}


def _record_weights(config: RunConfig, tracker, model: torch.nn.Module) -> None:
    """``train.log_model``: the trained weights as an MLflow artifact of the run."""
    if config.train.log_model and hasattr(tracker, "log_state_dict"):
        tracker.log_state_dict(model.state_dict())


def _record_dataset(config: RunConfig, tracker, data) -> None:
    """``train.log_dataset``: the data set as the run's MLflow input ("Datasets used")."""
    if config.train.log_dataset and hasattr(tracker, "log_dataset"):
        tracker.log_dataset(config.data.name, config.data.id or config.data.name, config.data.root or config.data.name,
                            {"num_train": data.num_train, "num_classes": data.num_classes, "in_chans": data.in_chans,
                             "image_size": data.image_size})


def _test_metrics(model: torch.nn.Module, ema: EMA | None, data, precision: Precision, *,
                  diverged: bool) -> dict[str, float]:
    """``test/top1`` and ``test/loss`` (chance and NaN for a diverged run), and the same of the
    EMA weights as ``test/top1_ema``, ``test/loss_ema``: the paper reports those, so reports
    lead with them."""
    chance = {"top1": 1.0 / data.num_classes, "loss": float("nan")}
    metrics = {}
    for suffix, net in (("", model), ("_ema", None if ema is None else ema.module)):
        if net is not None:
            test = chance if diverged else evaluate(net, data.test, precision.autocast)
            metrics |= {f"test/top1{suffix}": test["top1"], f"test/loss{suffix}": test["loss"]}
    return metrics


def _loss(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def _build_model(config: RunConfig, data, device: torch.device) -> torch.nn.Module:
    model = build_model(config.model.resolved_name, num_classes=data.num_classes, in_chans=data.in_chans,
                        dropout=config.model.dropout, stochastic_depth=config.model.stochastic_depth,
                        classifier_init_std=config.model.classifier_init_std).to(device)
    return model.to(memory_format=torch.channels_last) if config.train.channels_last else model


def _step_ms(epoch_times: list[tuple[float, int]]) -> float:
    """Milliseconds per step, leaving out the first epoch (warm-up, compilation) when there
    is more than one."""
    timed = epoch_times[1:] if len(epoch_times) > 1 else epoch_times
    return 1000 * sum(t for t, _ in timed) / max(sum(n for _, n in timed), 1)


def _finite_or(value: float, fallback: float = 1e6) -> float:
    """MLflow stores NaN, but plots choke on it; a diverged loss is logged as a large value."""
    return value if math.isfinite(value) else fallback
