"""The CUDA figures of ``nfstudy bench``: NFNet-F0 throughput, layouts, compilation, MFU, timm, CIFAR-10."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from study.bench.harness import (
    MFU_TARGET,
    Result,
    Settings,
    collector,
    judge,
    paired,
    sync_device,
)
from study.bench.peaks import peak_bf16_flops

# --------------------------------------------------------------------------- CUDA figures

def gpu_config(settings: Settings, model: str, image_size: int = 192, **overrides: Any):
    """NFNet-F0 (or ``--model``) at 192 px, bf16, batch 128, on random images on the device."""
    from study.config.run_config import make_config

    batch = 32 if settings.quick else 128
    steps_per_epoch = 2 if settings.quick else 10
    base = {"model.name": model, "data.name": "fake", "data.image_size": image_size,
            "data.num_examples": batch * steps_per_epoch, "data.batch_size": batch,
            "data.crop_pad": 0, "train.steps": 2 * steps_per_epoch if settings.quick else 30,
            "train.precision": "bf16", "train.device": str(settings.device),
            "agc.clipping": 0.01}
    base.update(overrides)
    return make_config(base, where="bench")


def images_per_s(config) -> Callable[[], float]:
    """Training images per second of :func:`study.train.trainer.train`: the median over its
    epochs after the first (compilation, cuDNN autotuning) of each epoch's training loop
    alone (``time/images_per_s``: wall time up to the epoch's one sync, before evaluation),
    so it is comparable with a bare loop that never evaluates."""
    from study.train.trainer import train

    def measure() -> float:
        epochs: list[float] = []
        train(config, on_epoch=lambda epoch, metrics: epochs.append(metrics["time/images_per_s"]))
        return statistics.median(epochs[1:] if len(epochs) > 1 else epochs)

    return measure


def timm_images_per_s(config) -> Callable[[], float]:
    """timm's ``dm_nfnet_f0`` in a bare loop, like for like with ``config``'s run: the same
    data on the device in the same layout, bf16 autocast, our SGD (Nesterov, weight decay on
    weights only, fused on CUDA), dropout and final stochastic-depth rate of our model, and
    timm's AGC on every parameter but the classifier's weight, as ours; no evaluation.
    Images/s: the median over epochs after the first."""
    import timm
    from timm.utils.agc import adaptive_clip_grad

    from study.data import build_data
    from study.models import build_model
    from study.models.layers import StochasticDepth
    from study.optim.sgd import build_optimizer

    with torch.device("meta"):
        ours = build_model(config.model.resolved_name, dropout=config.model.dropout,
                           stochastic_depth=config.model.stochastic_depth)
    dropout = ours.dropout.p
    drop_path = max(m.rate for m in ours.modules() if isinstance(m, StochasticDepth))

    def measure() -> float:
        device = torch.device(config.train.device)
        data = build_data(config.data, config.real_batch_size, device, config.seed, config.train.channels_last)
        model = timm.create_model("dm_nfnet_f0", num_classes=data.num_classes, drop_rate=dropout,
                                  drop_path_rate=drop_path).to(device)
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config.peak_lr, weight_decay=config.optim.weight_decay)
        classifier = model.get_classifier().weight
        clipped = [p for p in model.parameters() if p is not classifier]
        rates = []
        for epoch in range(3):
            start = time.perf_counter()
            for x, y in data.train:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x).float(), y)
                loss.backward()
                adaptive_clip_grad(clipped, clip_factor=config.agc.clipping)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sync_device(device)
            rates.append(len(data.train) * config.real_batch_size / (time.perf_counter() - start))
        return statistics.median(rates[1:])

    return measure


def gpu_figures(settings: Settings, log: Callable[[str], None], model: str | None = None,
                image_size: int = 192) -> list[Result]:
    """Throughput and MFU of NFNet-F0 (``--model`` if it is an ImageNet model) on a GPU.

    ``model`` and ``image_size`` let a test run the same path on a CPU with a small net
    (no MFU there: no known peak)."""
    from study.models import build_model, count_macs

    if model is None:
        model = settings.model if settings.model != "nf_resnet_small" else "nfnet_f0"
    with torch.device("meta"):
        macs = count_macs(build_model(model, num_classes=10), image_size)  # fake data: 10 classes
    config = functools.partial(gpu_config, settings, model, image_size)
    repeats = settings.repeats
    results: list[Result] = []
    add = collector(results, log)
    log(f"{model} NHWC vs NCHW")
    # No warm-up calls: each run's first epoch (cuDNN autotuning, lazy initialisation) is left out anyway.
    nhwc, nchw = paired(images_per_s(config(**{"train.channels_last": True})), images_per_s(config()), repeats,
                        warmup=False)
    add(judge(f"{model}_nhwc_vs_nchw", nhwc, nchw, "images/s", better="higher",
              note=f"{image_size} px, bf16, batch {config().real_batch_size}, AGC on, eager; training loop only"))
    best_layout = {"train.channels_last": statistics.median(nhwc) > statistics.median(nchw)}
    best = max(statistics.median(nhwc), statistics.median(nchw))
    if not settings.quick:
        log(f"{model} compiled vs eager")
        compiled = config(**best_layout, **{"train.compile": True})
        images_per_s(compiled)()  # compilation, outside the timing
        value, baseline = paired(images_per_s(compiled), images_per_s(config(**best_layout)), repeats, warmup=False)
        add(judge(f"{model}_compiled_vs_eager", value, baseline, "images/s", better="higher",
                  note="best layout; training loop only"))
        best = max(statistics.median(value), statistics.median(baseline))
    name = torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else ""
    peak = peak_bf16_flops(name)
    if peak is not None:
        add(judge(f"{model}_mfu", [6 * macs * best / peak], [MFU_TARGET], "fraction", better="higher", on="value",
                  target=MFU_TARGET, note=f"6 × {macs / 1e9:.2f} GMACs × {best:.0f} images/s (best layout and "
                                          f"compilation) / {peak / 1e12:.0f} TFLOP/s dense bf16 ({name})"))
    elif name:
        log(f"no MFU: {name!r} is not in study/bench/peaks.py (add its exact name and dense bf16 peak)")
    try:
        import timm  # noqa: F401
    except ImportError:
        log("timm not installed (pip install nfstudy[bench]): no dm_nfnet_f0 comparison")
    else:
        if model == "nfnet_f0":
            log("nfnet_f0 vs timm dm_nfnet_f0")
            same = config(**best_layout)
            value, baseline = paired(images_per_s(same), timm_images_per_s(same), repeats, warmup=False)
            add(judge("nfnet_f0_vs_timm", value, baseline, "images/s", better="higher", target=1.0,
                      note="like for like: data, layout, bf16, SGD + weight decay, dropout, stochastic depth, "
                           "AGC 0.01 without the classifier weight; both eager, training loop only"))
    return results


# --------------------------------------------------------------------------- CIFAR-10

CIFAR_TARGET_TOP1 = 0.94


def cifar_config(settings: Settings, root: str | None, **overrides: Any):
    """The ``cifar10`` preset on ``settings.device`` (its own ``data.root`` unless ``root``)."""
    from study.config.run_config import make_config
    from study.config.study_file import load_preset

    values = {**load_preset("cifar10"), "train.device": str(settings.device), **overrides}
    if root is not None:
        values["data.root"] = root
    return make_config(values, where="bench")


def cifar_figures(settings: Settings, log: Callable[[str], None], root: str | None = None,
                  **overrides: Any) -> list[Result]:
    """The CIFAR-10 NF-ResNet preset: its throughput in bf16 against fp32 on
    FakeData of CIFAR's shape (images on the device either way), and, when a local copy of
    CIFAR-10 is at ``root`` (default: the preset's ``data.root``), the seconds from the call
    to the first epoch whose validation top-1 reaches 94%, against the whole run's seconds.
    ``overrides`` (e.g. ``train.steps``) shorten the runs for tests."""
    from study.errors import DataError
    from study.train.trainer import train

    results: list[Result] = []
    add = collector(results, log)
    real = cifar_config(settings, root, **overrides)
    fake = {"data.name": "fake", "data.image_size": 32, "data.num_examples": 10 * real.real_batch_size,
            "data.crop_pad": 0, "train.steps": 20, **overrides}
    log("cifar10 preset throughput (FakeData 32 px)")
    bf16, fp32 = paired(images_per_s(cifar_config(settings, root, **fake)),
                        images_per_s(cifar_config(settings, root, **fake, **{"train.precision": "fp32"})),
                        settings.repeats, warmup=False)  # fp32: the train.tf32 default
    add(judge("cifar10_images_per_s", bf16, fp32, "images/s", better="higher", target=2.0,
              note=f"{real.model.resolved_name}, batch {real.real_batch_size}, bf16 vs fp32 "
                   "(TF32 convolutions, fp32 matmuls); training loop only"))
    log(f"cifar10 preset to {CIFAR_TARGET_TOP1:.0%} (data.root {real.data.root})")
    reached: list[float] = []
    start = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if not reached and metrics["val/top1"] >= CIFAR_TARGET_TOP1:
            sync_device(settings.device)
            reached.append(time.perf_counter() - start)

    try:
        result = train(real, on_epoch=on_epoch)
    except DataError as err:  # no local copy: the data set is the first thing train() loads
        log(f"no local CIFAR-10 ({str(err).splitlines()[0]}): no time to {CIFAR_TARGET_TOP1:.0%}")
        return results
    total = time.perf_counter() - start
    value = reached[0] if reached else total
    add(Result(
        "cifar10_seconds_to_94", value, total, value / total, "s", target=f"val top-1 >= {CIFAR_TARGET_TOP1:g}",
        ok=bool(reached), note=f"{'reached' if reached else 'not reached'}; whole run {total:.1f} s, "
        f"{result['steps']} steps, test top-1 {result['test/top1']:.4f}"))
    return results


