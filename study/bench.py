"""``nfstudy bench``: what the framework costs, each figure against a baseline in the same run.

DESIGN.md "Performance rules", issue 8. Every figure is a ratio of a candidate to its baseline,
both measured in this process on the same model, data and batch, round-robin
(:func:`interleaved`: every round calls each measurement once, starting one place later than
the round before), and the median of each over the rounds. The training runs of all the step
figures share one round-robin, so one baseline run serves every ratio against it. On a CPU the clock is this process's CPU time (all its
threads), so other jobs on a shared machine do not inflate one side; on a GPU it is wall time
with ``torch.cuda.synchronize`` around each call. Step times are read at each epoch's end
through :func:`study.trainer.train`'s ``on_epoch`` (epochs after the first, so set-up and
compilation are left out; each epoch's validation pass is in, and the bare loop runs the same
pass). ``framework_cost_per_run`` is wall time: it is a latency.

CPU figures (the default small net on digits, batch 128 at 16 px, as the digits preset):

- ``trainer_overhead``: a step of :func:`~study.trainer.train` (tracking off) / a hand-written
  PyTorch loop with the same model, optimizer, data loader and batch.
- ``agc_vectorised_vs_loop``: :class:`~study.optim.agc.AGC` / timm's per-parameter loop
  (``timm.utils.agc.adaptive_clip_grad``, re-typed here) on the model's parameters with fixed
  gradients; ``agc_vectorised_vs_loop/nfnet_f0`` the same on NFNet-F0's 68M clipped values
  (not ``--quick``), with ``agc_read_floor/nfnet_f0``: one read of every weight and gradient
  against the loop, the least memory traffic an exact AGC needs. The issue's ≤ 0.25 target is
  on the first (launch-bound); at F0's size a CPU clip is bound by memory bandwidth, and the
  floor shows how close to it we are.
- ``agc_step_overhead``, ``sam_fraction``, ``sam_full``: a training step with AGC (λ = 0.01),
  SAM on 20% of the batch, full SAM / the same step without.
- ``tracking_overhead``: a whole training run logging to MLflow (a SQLite store in a temp
  directory) / the same run logging nowhere (the ``trainer_overhead`` runs).
- ``framework_cost_per_run``: seconds from a study spec to a FINISHED MLflow child run of one
  training step (plan, experiment and parent, child run with params, data, model, the step,
  evaluation, final metrics) / a bare first step (data, model, optimizer, one step).
- ``channels_last`` (not ``--quick``): steps with ``train.channels_last`` against NCHW;
  ``compile`` (only with ``--compile``: a minute of compilation on a small CPU): steps with
  ``train.compile`` against eager ones.

CUDA figures (``--device cuda``): NFNet-F0 at 192 px in bf16 on random data: images/s of
NHWC against NCHW, compiled against eager, the model FLOP utilisation (training FLOPs ≈ 6 ×
MACs per image, against the GPU's dense bf16 peak), and, when timm is installed (extra
``bench``), our NFNet-F0 against timm's ``dm_nfnet_f0`` in a bare loop with timm's AGC. Then
the ``cifar10`` preset: ``cifar10_images_per_s`` (bf16 against fp32, FakeData of CIFAR's
shape) and, with a local CIFAR-10 copy, ``cifar10_seconds_to_94``: seconds from the call to
the first epoch at 94% validation top-1, against the whole run's seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from study.errors import ConfigError

#: Dense bf16 peak of known GPUs, FLOP/s (vendor data sheets, without sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
#: Targets of issue 8 (ratios unless the unit says otherwise).
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


def _result(name: str, value: float, baseline: float, unit: str, *, better: str = "lower",
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


def _collector(results: list[Result], log: Callable[[str], None]) -> Callable[[Result], None]:
    """Appends a result and logs it at once (a long bench shows its figures as they come)."""

    def add(result: Result) -> None:
        results.append(result)
        log(f"  {result.name}: {result.value:.4g} vs {result.baseline:.4g} {result.unit}, "
            f"ratio {result.ratio:.3f} {result.target}")

    return add


def _sync(device: torch.device) -> None:
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
        _sync(device)
        start = now()
        for _ in range(calls):
            fn()
        _sync(device)
        return (now() - start) / calls

    return measure


# --------------------------------------------------------------------------- configurations

def bench_config(settings: Settings, **overrides: Any):
    """The RunConfig of the CPU training figures: the digits preset's images (16 px) and
    batch (128), 2 epochs (10 steps each, the second timed); ``--quick``: the smoke preset's 4 steps of batch 32 at 8 px."""
    from study.spec import make_config

    if settings.quick:
        base = {"data.name": "digits", "data.image_size": 8, "data.batch_size": 32,
                "data.crop_pad": 0, "train.steps": 4}
    else:
        base = {"data.name": "digits", "data.image_size": 16, "data.batch_size": 128,
                "data.crop_pad": 1, "train.steps": 20}
    base.update({"model.name": settings.model, "train.device": str(settings.device),
                 "optim.lr": 0.1, "optim.weight_decay": 5e-5})
    base.update(overrides)
    return make_config(base, where="bench")


def clock(device: torch.device) -> Callable[[], float]:
    """CPU seconds of this process on a CPU device (immune to other jobs sharing the
    machine; the logging thread counts too), wall seconds on an accelerator."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def _per_step(marks: list[float], steps_per_epoch: int, fallback: float) -> float:
    """Seconds per step from the clock read at each epoch's end, leaving out the first epoch
    (warm-up, compilation); ``fallback`` when there are fewer than two epochs."""
    if len(marks) < 2:
        return fallback
    return (marks[-1] - marks[0]) / ((len(marks) - 1) * steps_per_epoch)


def trainer_run(config) -> Callable[[], dict[str, float]]:
    """A whole run of :func:`study.trainer.train` (tracking off): ``step``, seconds per step
    from the clock at each epoch's end (after its validation pass, through ``on_epoch``),
    first epoch left out (with one epoch only, ``--quick``, its own ``time/step_ms``); ``run``,
    seconds of the whole call."""
    from study.trainer import resolve_device, train

    now = clock(resolve_device(config.train.device))

    def measure() -> dict[str, float]:
        marks: list[float] = []
        start = now()
        result = train(config, on_epoch=lambda epoch, metrics: marks.append(now()))
        run = now() - start
        steps_per_epoch = result["steps"] // max(result["epochs"], 1)
        return {"step": _per_step(marks, steps_per_epoch, result["time/step_ms"] / 1000), "run": run}

    return measure


def trainer_step(config) -> Callable[[], float]:
    """Seconds per step of :func:`study.trainer.train` (``step`` of :func:`trainer_run`)."""
    run = trainer_run(config)
    return lambda: run()["step"]


def bare_step(config) -> Callable[[], float]:
    """Seconds per step of the loop one writes by hand: same data, model, optimizer, batch,
    and the same validation pass at each epoch's end, timed as :func:`trainer_step`."""
    from study.data import build_data
    from study.models import build_model
    from study.optim.sgd import build_optimizer
    from study.trainer import evaluate, resolve_device, seed_everything

    def measure() -> float:
        seed_everything(config.seed)
        device = resolve_device(config.train.device)
        data = build_data(config.data, config.real_batch_size, device, config.seed)
        model = build_model(config.model.resolved_name, num_classes=data.num_classes,
                            in_chans=data.in_chans).to(device)
        optimizer = build_optimizer(model, config.optim.lr * config.data.batch_size / 256,
                                    weight_decay=config.optim.weight_decay)
        now, steps_per_epoch = clock(device), min(len(data.train), config.train.steps)
        epochs = -(-config.train.steps // steps_per_epoch)
        marks, start = [], now()
        for epoch in range(epochs):
            model.train()
            loss_sum = torch.zeros((), device=device)
            for _, (x, y) in zip(range(steps_per_epoch), data.train):
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
            loss_sum.item()  # the epoch's sync, as in the trainer
            evaluate(model, data.val, contextlib.nullcontext)
            marks.append(now())
        return _per_step(marks, steps_per_epoch, (marks[-1] - start) / config.train.steps)

    return measure


# --------------------------------------------------------------------------- AGC

def loop_agc_(parameters: list[torch.Tensor], clipping: float, eps: float = 1e-3) -> None:
    """timm's ``adaptive_clip_grad`` (``timm/utils/agc.py``), the per-parameter baseline."""
    for p in parameters:
        if p.grad is None:
            continue
        p_data, g_data = p.detach(), p.grad.detach()
        max_norm = _timm_unitwise_norm(p_data).clamp_(min=eps).mul_(clipping)
        grad_norm = _timm_unitwise_norm(g_data)
        clipped_grad = g_data * (max_norm / grad_norm.clamp(min=1e-6))
        new_grads = torch.where(grad_norm < max_norm, g_data, clipped_grad)
        p.grad.detach().copy_(new_grads)


def _timm_unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    if x.ndim <= 1:
        return x.norm(2.0)
    return x.norm(2.0, dim=tuple(range(1, x.ndim)), keepdim=True)


def agc_vs_loop(model_name: str, settings: Settings, **build: Any) -> dict[str, float]:
    """Seconds per clip of :class:`AGC` (``ours``) and of :func:`loop_agc_` (``loop``) on
    ``model_name``'s parameters with fixed random gradients (each model its own copy of the
    same weights); ``floor``: one read of every weight and gradient (a norm of each, packed
    into one buffer beforehand), the least memory traffic any exact AGC needs; ``tensors``."""
    from study.models import build_model
    from study.optim.agc import AGC, agc_parameters

    torch.manual_seed(0)
    ours = build_model(model_name, **build).to(settings.device)
    theirs = build_model(model_name, **build).to(settings.device)
    theirs.load_state_dict(ours.state_dict())
    ours_params, their_params = agc_parameters(ours), agc_parameters(theirs)
    for a, b in zip(ours_params, their_params):
        a.grad = torch.randn_like(a).mul_(1e-3)
        b.grad = a.grad.clone()
    agc = AGC(ours_params, clipping=0.01)
    packed = [torch.cat([p.detach().reshape(-1) for p in ours_params]),
              torch.cat([p.grad.reshape(-1) for p in ours_params])]
    calls = 1 if settings.quick else max(1, int(2e7 // packed[0].numel()))
    measures = {"ours": timed(agc.clip_, settings.device, calls),
                "loop": timed(lambda: loop_agc_(their_params, 0.01), settings.device, calls),
                "floor": timed(lambda: torch._foreach_norm(packed), settings.device, calls)}
    if settings.warmup:
        for measure in measures.values():
            measure()
    medians = interleaved({name: (lambda m=m: {"s": m()}) for name, m in measures.items()},
                          settings.repeats + (0 if settings.quick else 2))
    return {**{name: v["s"] for name, v in medians.items()}, "tensors": len(ours_params)}


# --------------------------------------------------------------------------- tracking

@contextlib.contextmanager
def temporary_tracking() -> Iterator[Any]:
    """A :class:`~study.tracking.Tracking` on a fresh SQLite store in a temporary directory."""
    from study.tracking import Tracking

    with tempfile.TemporaryDirectory(prefix="nfstudy-bench-") as tmp:
        yield Tracking(f"sqlite:///{tmp}/mlflow.db")


def tracked_run(config, tracking, experiment_id: str, parent_id: str) -> Callable[[], dict[str, float]]:
    """``run``: seconds of a whole training run logging to a new MLflow child run, closed at
    the end (final metrics flushed), to set against ``run`` of :func:`trainer_run`; creating
    the child is left to ``framework_cost_per_run``."""
    from study.trainer import train

    counter, now = iter(range(10**6)), clock(torch.device(config.train.device))

    def measure() -> dict[str, float]:
        child = tracking.start_child(experiment_id, parent_id, "bench", "tracked",
                                     f"tracked-{next(counter)}", config.config_hash(), config.flat())
        start = now()
        child.finish(train(config, tracker=child))
        return {"run": now() - start}

    return measure


def framework_run(settings: Settings, tracking) -> Callable[[], float]:
    """Seconds from the spec to a FINISHED child run of one step, as ``nfstudy run`` does it:
    plan, experiment + parent, child with params, train (data, model, step, evaluation),
    final metrics. Each call uses a new seed, so every call is a new run."""
    from study.registry import plan
    from study.spec import StudySpec
    from study.trainer import train

    overrides = {k: v for k, v in bench_config(settings).flat().items()
                 if k in ("model.name", "data.name", "data.image_size", "data.num_examples",
                          "data.batch_size", "data.crop_pad", "train.device")}
    seeds = iter(range(10**6))

    def measure() -> float:
        start = time.perf_counter()
        spec = StudySpec(name="bench-framework", fixed={**overrides, "train.steps": 1},
                         seeds=[next(seeds)])
        run = plan(spec)[0]
        experiment_id, parent_id = tracking.ensure_study(spec.name, spec.description)
        child = tracking.start_child(experiment_id, parent_id, spec.name, run.arm or "", run.name,
                                     run.config_hash, run.config.flat())
        child.finish(train(run.config, tracker=child))
        return time.perf_counter() - start

    return measure


def bare_first_step(config) -> Callable[[], float]:
    """Seconds of data, model, optimizer and one step, written by hand (no framework)."""
    from study.data import build_data
    from study.models import build_model

    def measure() -> float:
        start = time.perf_counter()
        device = torch.device(config.train.device)
        data = build_data(config.data, config.real_batch_size, device, config.seed)
        model = build_model(config.model.resolved_name, num_classes=data.num_classes,
                            in_chans=data.in_chans).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        x, y = next(iter(data.train))
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    return measure


# --------------------------------------------------------------------------- CPU figures

def cpu_figures(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    """The figures every device gets (the small net, or ``--model``)."""
    results: list[Result] = []
    add = _collector(results, log)
    models = [(settings.model, {"num_classes": 10, "in_chans": 1})]
    if not settings.quick and settings.model != "nfnet_f0":
        models.append(("nfnet_f0", {}))
    for model, build in models:
        name = "agc_vectorised_vs_loop" + ("" if model == settings.model else f"/{model}")
        log(name)
        agc = agc_vs_loop(model, settings, **build)
        add(_result(name, agc["ours"] * 1e3, agc["loop"] * 1e3, "ms/clip",
                    note=f"{model}, {agc['tensors']} tensors"))
        if model == "nfnet_f0":
            add(_result("agc_read_floor/nfnet_f0", agc["floor"] * 1e3, agc["loop"] * 1e3, "ms/clip",
                        note="one read of W and G: the least any exact AGC can cost; "
                             "its ratio bounds agc_vectorised_vs_loop/nfnet_f0 from below"))

    base = bench_config(settings)
    variants = {"agc_step_overhead": {"agc.clipping": 0.01},
                "sam_fraction": {"sam.mode": "fraction", "sam.fraction": 0.2},
                "sam_full": {"sam.mode": "full"}}
    if not settings.quick:
        variants["channels_last"] = {"train.channels_last": True}
    with temporary_tracking() as tracking:
        experiment_id, parent_id = tracking.ensure_study("bench", "nfstudy bench")
        measures = {"trainer": trainer_run(base), "bare": lambda m=bare_step(base): {"step": m()},
                    **{name: trainer_run(bench_config(settings, **o)) for name, o in variants.items()},
                    "tracked": tracked_run(base, tracking, experiment_id, parent_id)}
        log(f"training runs: {', '.join(measures)} ({settings.repeats} rounds, round-robin)")
        measures["trainer"]()  # warm-up: the process's first run loads the data set
        runs = interleaved(measures, settings.repeats)
        step = {name: v.get("step", 0.0) * 1e3 for name, v in runs.items()}
        add(_result("trainer_overhead", step["trainer"], step["bare"], "ms/step"))
        for name in variants:
            add(_result(name, step[name], step["trainer"], "ms/step",
                        note="NHWC vs NCHW; an option, not a target" if name == "channels_last" else ""))
        add(_result("tracking_overhead", runs["tracked"]["run"], runs["trainer"]["run"], "s/run",
                    note=f"whole run of {base.train.steps} steps, metrics every epoch"))

        log("framework_cost_per_run")
        value, baseline = paired(framework_run(settings, tracking), bare_first_step(base),
                                 settings.repeats, warmup=settings.warmup)
        add(_result("framework_cost_per_run", value, baseline, "s", on="value",
                    target=FRAMEWORK_COST_TARGET_S,
                    note="spec → FINISHED MLflow run of one step, warm process"))

    if settings.compile:
        log("compile")
        compiled = bench_config(settings, **{"train.compile": True})
        start = time.perf_counter()
        trainer_step(compiled)()  # compiles (the cache makes the timed calls below warm)
        compile_s = time.perf_counter() - start
        value, baseline = paired(trainer_step(compiled), trainer_step(base), settings.repeats,
                                 warmup=False)
        add(_result("compile", value * 1e3, baseline * 1e3, "ms/step",
                    note=f"torch.compile vs eager; first run {compile_s:.0f} s incl. compilation"))
    return results


# --------------------------------------------------------------------------- CUDA figures

def gpu_config(settings: Settings, model: str, image_size: int = 192, **overrides: Any):
    """NFNet-F0 (or ``--model``) at 192 px, bf16, batch 128, on random images on the device."""
    from study.spec import make_config

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
            _sync(device)
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
    add = _collector(results, log)
    log(f"{model} NHWC vs NCHW")
    nhwc, nchw = paired(images_per_s(config(**{"train.channels_last": True})),
                        images_per_s(config()), repeats)
    add(_result(f"{model}_nhwc_vs_nchw", nhwc, nchw, "images/s", better="higher",
                note=f"{image_size} px, bf16, batch {config().real_batch_size}, AGC on, eager"))
    best_layout = {"train.channels_last": nhwc > nchw}
    if not settings.quick:
        log(f"{model} compiled vs eager")
        compiled = config(**best_layout, **{"train.compile": True})
        images_per_s(compiled)()  # compilation, outside the timing
        value, baseline = paired(images_per_s(compiled),
                                 images_per_s(config(**best_layout)), repeats,
                                 warmup=False)
        add(_result(f"{model}_compiled_vs_eager", value, baseline, "images/s",
                    better="higher", note="best layout"))
        best = max(value, baseline)
    else:
        best = max(nhwc, nchw)
    name = torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else ""
    peak = next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)
    if peak is not None:
        mfu = 6 * macs * best / peak
        add(_result(f"{model}_mfu", mfu, MFU_TARGET, "fraction", better="higher",
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
            add(_result("nfnet_f0_vs_timm", value, baseline, "images/s", better="higher",
                        target=2.0, note="same batch, bf16, AGC 0.01, layout; timm eager"))
    return results


# --------------------------------------------------------------------------- CIFAR-10

CIFAR_TARGET_TOP1 = 0.94


def cifar_config(settings: Settings, root: str | None, **overrides: Any):
    """The ``cifar10`` preset on ``settings.device`` (its own ``data.root`` unless ``root``)."""
    from study.registry import load_preset
    from study.spec import make_config

    values = {**load_preset("cifar10"), "train.device": str(settings.device), **overrides}
    if root is not None:
        values["data.root"] = root
    return make_config(values, where="bench")


def cifar_figures(settings: Settings, log: Callable[[str], None], root: str | None = None,
                  **overrides: Any) -> list[Result]:
    """The CIFAR-10 NF-ResNet preset (issue 8): its throughput in bf16 against fp32 on
    FakeData of CIFAR's shape (images on the device either way), and, when a local copy of
    CIFAR-10 is at ``root`` (default: the preset's ``data.root``), the seconds from the call
    to the first epoch whose validation top-1 reaches 94%, against the whole run's seconds.
    ``overrides`` (e.g. ``train.steps``) shorten the runs for tests."""
    from study.errors import DataError
    from study.trainer import train

    results: list[Result] = []
    add = _collector(results, log)
    real = cifar_config(settings, root, **overrides)
    fake = {"data.name": "fake", "data.image_size": 32, "data.num_examples": 10 * real.real_batch_size,
            "data.crop_pad": 0, "train.steps": 20, **overrides}
    log("cifar10 preset throughput (FakeData 32 px)")
    bf16, fp32 = paired(images_per_s(cifar_config(settings, root, **fake)),
                        images_per_s(cifar_config(settings, root, **fake, **{"train.precision": "fp32"})),
                        settings.repeats, warmup=not settings.quick)
    add(_result("cifar10_images_per_s", bf16, fp32, "images/s", better="higher",
                note=f"{real.model.resolved_name}, batch {real.real_batch_size}, bf16 vs fp32"))
    log(f"cifar10 preset to {CIFAR_TARGET_TOP1:.0%} (data.root {real.data.root})")
    reached: list[float] = []
    start = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if not reached and metrics["val/top1"] >= CIFAR_TARGET_TOP1:
            _sync(settings.device)
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


# --------------------------------------------------------------------------- entry point

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


def run_bench(device: str = "cpu", model: str = "nf_resnet_small", quick: bool = False,
              log: Callable[[str], None] = lambda _: None, threads: int | None = None,
              compile: bool = False, cifar_root: str | None = None) -> dict[str, Any]:
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

    Returns:
        ``{"device", "host", "quick", "results": [{"name", "value", "baseline", "ratio",
        "unit", "better", "target", "ok", "note"}]}``; ``host`` has the date, versions,
        threads and load at the start, and ``wall_s``, the bench's own wall time.

    Raises:
        ConfigError: an unknown device, CUDA asked for without a GPU, or an unknown model.
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
    if threads is None and device == "cpu":
        threads = 1
    settings = Settings(torch.device(device), model, quick, compile and not quick)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        host, start = host_info(settings.device), time.perf_counter()
        results = cpu_figures(settings, log)
        if settings.device.type == "cuda":
            results += gpu_figures(settings, log)
            results += cifar_figures(settings, log, cifar_root)
        host["wall_s"] = round(time.perf_counter() - start, 1)
    finally:
        torch.set_num_threads(before)
    return {"device": str(settings.device), "host": host, "quick": quick,
            "results": [asdict(r) for r in results]}
