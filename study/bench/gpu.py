"""The CUDA figures of ``nfstudy bench``: NFNet-F0 throughput, layouts, compilation, MFU, timm, CIFAR-10."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from study.bench.cpu import trainer_step
from study.bench.harness import (
    MFU_TARGET,
    PEAK_BF16_FLOPS,
    Result,
    Settings,
    collector,
    judge,
    paired,
    sync_device,
)

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
    step = trainer_step(config)
    return lambda: config.real_batch_size / step()


def timm_images_per_s(config) -> Callable[[], float]:
    """timm's ``dm_nfnet_f0`` in a bare bf16 loop with timm's AGC, on the same data."""
    import timm
    from timm.utils.agc import adaptive_clip_grad

    from study.data import build_data

    def measure() -> float:
        device = torch.device(config.train.device)
        data = build_data(config.data, config.real_batch_size, device, config.seed)
        model = timm.create_model("dm_nfnet_f0", num_classes=data.num_classes).to(device)
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        times = []
        for epoch in range(3):
            start = time.perf_counter()
            for x, y in data.train:
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x).float(), y)
                loss.backward()
                adaptive_clip_grad(model.parameters(), clip_factor=config.agc.clipping)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sync_device(device)
            times.append((time.perf_counter() - start) / len(data.train))
        return config.real_batch_size / statistics.mean(times[1:])

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
    nhwc, nchw = paired(images_per_s(config(**{"train.channels_last": True})),
                        images_per_s(config()), repeats)
    add(judge(f"{model}_nhwc_vs_nchw", nhwc, nchw, "images/s", better="higher",
                note=f"{image_size} px, bf16, batch {config().real_batch_size}, AGC on, eager"))
    best_layout = {"train.channels_last": nhwc > nchw}
    if not settings.quick:
        log(f"{model} compiled vs eager")
        compiled = config(**best_layout, **{"train.compile": True})
        images_per_s(compiled)()  # compilation, outside the timing
        value, baseline = paired(images_per_s(compiled),
                                 images_per_s(config(**best_layout)), repeats,
                                 warmup=False)
        add(judge(f"{model}_compiled_vs_eager", value, baseline, "images/s",
                    better="higher", note="best layout"))
        best = max(value, baseline)
    else:
        best = max(nhwc, nchw)
    name = torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else ""
    peak = next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)
    if peak is not None:
        mfu = 6 * macs * best / peak
        add(judge(f"{model}_mfu", mfu, MFU_TARGET, "fraction", better="higher",
                    on="value", target=MFU_TARGET,
                    note=f"6 × {macs / 1e9:.2f} GMACs × images/s / {peak / 1e12:.0f} TFLOP/s ({name})"))
    try:
        import timm  # noqa: F401
    except ImportError:
        log("timm not installed (pip install nfstudy[bench]): no dm_nfnet_f0 comparison")
    else:
        if model == "nfnet_f0":
            log("nfnet_f0 vs timm dm_nfnet_f0")
            same = config(**best_layout)
            value, baseline = paired(images_per_s(same), timm_images_per_s(same), repeats)
            add(judge("nfnet_f0_vs_timm", value, baseline, "images/s", better="higher",
                        target=2.0, note="same batch, bf16, AGC 0.01, layout; timm eager"))
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
                        settings.repeats, warmup=not settings.quick)
    add(judge("cifar10_images_per_s", bf16, fp32, "images/s", better="higher",
                note=f"{real.model.resolved_name}, batch {real.real_batch_size}, bf16 vs fp32"))
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


