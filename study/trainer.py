"""One training run: ``train(config) -> metrics``.

The loop reads top to bottom: build data, model and optimizer; for each batch forward,
backward, clip (AGC, PAPER.md §4), step, schedule; at each epoch's end evaluate and log.
The device is synchronised once per epoch (and, on accelerators, every few steps to catch
a diverged loss); metrics are accumulated on the device.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

from study import distributed
from study.checkpoint import capture_state, load_checkpoint, remove_checkpoint, restore_state_, save_checkpoint
from study.data import build_data
from study.models import build_model
from study.optim.agc import AGC, agc_parameters
from study.optim.ema import EMA
from study.optim.sam import SAM
from study.optim.sgd import build_optimizer, lr_at
from study.spec import RunConfig

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


def train(
    config: RunConfig,
    tracker: MetricSink | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_key: str | None = None,
) -> dict[str, float | str]:
    """Train one run and return its final metrics.

    Args:
        config: the run's validated configuration.
        tracker: receives per-epoch metrics (``step`` = epoch); ``None`` logs nowhere.
        on_epoch: called after each epoch's evaluation with ``(epoch, metrics)``; a search
            uses it to report to Optuna and may raise to prune the run.
        checkpoint_key: where ``train.checkpoint_every`` checkpoints go (default: the config
            hash); an existing checkpoint there is resumed from.

    Returns:
        ``outcome`` (``completed`` or ``diverged``), ``val/top1``, ``val/loss``,
        ``test/top1``, ``test/loss``, ``train/loss``, ``time/step_ms``, ``time/total_s``,
        ``epochs``, ``steps``.
    """
    start = time.perf_counter()
    world = distributed.world()  # one process, or this rank of a torchrun DDP run
    world.local_batch_size(config.real_batch_size)
    seed_everything(config.seed + world.rank)  # the data order uses config.seed on every rank
    device = world.device(resolve_device(config.train.device))
    data = build_data(config.data, config.real_batch_size, device, config.seed, config.train.channels_last)
    model = build_model(
        config.model.resolved_name,
        num_classes=data.num_classes,
        in_chans=data.in_chans,
        dropout=config.model.dropout,
        stochastic_depth=config.model.stochastic_depth,
    ).to(device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    replicated = world.wrap(model)  # DDP averages the gradients over the ranks
    forward = torch.compile(replicated) if config.train.compile else replicated

    # The paper's rule: peak lr per 256 images, scaled by the (paper) batch size.
    peak_lr = config.optim.lr * config.data.batch_size / 256
    optimizer = build_optimizer(
        model, peak_lr, momentum=config.optim.momentum, nesterov=config.optim.nesterov,
        weight_decay=config.optim.weight_decay,
    )
    agc = (
        AGC(agc_parameters(model, config.agc.exclude), config.agc.clipping, eps=config.agc.eps, mode=config.agc.mode)
        if config.agc.clipping is not None else None
    )
    sam = (
        SAM(replicated, rho=config.sam.rho, mode=config.sam.mode, fraction=config.sam.fraction)
        if config.sam.mode != "off" else None
    )
    ema = EMA(model, decay=config.optim.ema_decay) if config.optim.ema_decay else None

    steps_per_epoch = len(data.train)
    total_steps = config.train.steps or config.train.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_epochs = config.optim.warmup_epochs
    warmup_steps = round(0.05 * total_steps if warmup_epochs is None else warmup_epochs * steps_per_epoch)

    dtype = _DTYPES[config.train.precision]
    use_amp = dtype is not None and device.type in ("cuda", "cpu")

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if use_amp else nullcontext()

    scaler = torch.amp.GradScaler(device.type, enabled=config.train.precision == "fp16" and device.type == "cuda")

    def loss_fn(logits, targets):
        return F.cross_entropy(logits.float(), targets, label_smoothing=config.train.label_smoothing)

    generators = {}
    if config.data.mixup:
        from study.data.augment import mixup_cutmix

        generators["mixup"] = mix_gen = torch.Generator(device=device).manual_seed(config.seed)

    key = checkpoint_key or config.config_hash()
    if world.size > 1:
        key = f"{key}-rank{world.rank}-of-{world.size}"
    training_objects = dict(model=model, optimizer=optimizer, scaler=scaler, generators=generators,
                            ema_module=ema.module if ema is not None else None, device=device)
    state = load_checkpoint(key) if config.train.checkpoint_every else None
    if not world.agree(-1 if state is None else state["epoch"]):
        state = None  # a kill between the ranks' saves: start over rather than mix epochs
    outcome, train_loss, epoch_times, step, first_epoch = "completed", float("nan"), [], 0, 0
    val = {"top1": float("nan"), "loss": float("nan")}
    if state is not None:
        restore_state_(state, **training_objects)
        step, first_epoch = state["step"], state["epoch"] + 1
        train_loss, val = state["metrics"]["train/loss"], {"top1": state["metrics"]["val/top1"],
                                                           "loss": state["metrics"]["val/loss"]}
    epochs_done = first_epoch
    for epoch in range(first_epoch, epochs):
        model.train()
        data.train.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        batches = 0
        epoch_start = time.perf_counter()
        for x, y in data.train:
            if step >= total_steps:
                break
            lr = lr_at(step, total_steps, warmup_steps, peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            targets = y
            if config.data.mixup:  # on the global batch: every rank mixes the same pairs
                x, targets = mixup_cutmix(x, y, data.num_classes, alpha=0.2, generator=mix_gen)
            x, targets = world.shard(x), world.shard(targets)  # this rank's slice
            if sam is not None:
                sam.ascend_(loss_fn, x, targets)
            with autocast():
                loss = loss_fn(forward(x), targets)
            scaler.scale(loss).backward()
            if sam is not None:
                sam.restore_()
            if agc is not None:  # the gradient is all-reduced (DDP) by now
                scaler.unscale_(optimizer)  # AGC sees the true gradient (PAPER.md §4)
                agc.clip_()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_(model, step)
            loss_sum += loss.detach()
            batches += 1
            step += 1
            # A host sync: free on the CPU, so check every step there; every few on a GPU.
            # Under DDP every rank decides on the mean loss, so all of them stop together.
            if ((device.type == "cpu" or step % DIVERGENCE_CHECK_EVERY == 0)
                    and not torch.isfinite(world.mean(loss.detach()))):
                outcome = "diverged"
                break
        train_loss = (world.mean(loss_sum) / max(batches, 1)).item()  # the epoch's one sync
        epoch_s = time.perf_counter() - epoch_start
        epoch_times.append((epoch_s, batches))
        epochs_done = epoch + 1
        if outcome == "diverged" or not math.isfinite(train_loss):
            outcome = "diverged"
            if tracker is not None:
                tracker.log_metrics({"train/loss": _finite_or(train_loss)}, epoch)
            break
        val = evaluate(model, data.val, autocast)
        metrics = {
            "train/loss": train_loss,
            "val/loss": val["loss"],
            "val/top1": val["top1"],
            "time/epoch_s": epoch_s,
            "time/images_per_s": batches * config.real_batch_size / epoch_s,
            "lr": lr,
        }
        if ema is not None:
            metrics["val/top1_ema"] = evaluate(ema.module, data.val, autocast)["top1"]
        if tracker is not None:
            tracker.log_metrics(metrics, epoch)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if config.train.checkpoint_every and (epoch + 1) % config.train.checkpoint_every == 0:
            save_checkpoint(key, capture_state(**training_objects, step=step, epoch=epoch, metrics=metrics))

    if outcome == "diverged":
        test = {"top1": 1.0 / data.num_classes, "loss": float("nan")}
        val = {"top1": 1.0 / data.num_classes, "loss": float("nan")}
    else:
        test = evaluate(model, data.test, autocast)
    # Step time without the first epoch (warm-up, compilation) when there is more than one.
    timed = epoch_times[1:] if len(epoch_times) > 1 else epoch_times
    step_ms = 1000 * sum(t for t, _ in timed) / max(sum(n for _, n in timed), 1)
    if config.train.checkpoint_every:
        remove_checkpoint(key)
    return {
        "outcome": outcome,
        "val/top1": val["top1"],
        "val/loss": val["loss"],
        "test/top1": test["top1"],
        "test/loss": test["loss"],
        "train/loss": train_loss,
        "time/step_ms": step_ms,
        "time/total_s": time.perf_counter() - start,
        "epochs": epochs_done,
        "steps": step,
    }


def _finite_or(value: float, fallback: float = 1e6) -> float:
    """MLflow stores NaN, but plots choke on it; a diverged loss is logged as a large value."""
    return value if math.isfinite(value) else fallback
