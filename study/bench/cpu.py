"""The CPU figures of ``nfstudy bench``: the trainer, AGC, SAM and tracking against their baselines."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from study.bench.harness import (
    FRAMEWORK_COST_TARGET_S,
    Result,
    Rounds,
    Settings,
    calls_for,
    clock,
    collector,
    column,
    interleaved,
    judge,
    paired,
    spread_ok,
    sync_device,
    timed,
)

#: Seconds one AGC measurement lasts (many calls of a sub-millisecond clip).
AGC_MEASURE_S = 0.2

# --------------------------------------------------------------------------- configurations

def bench_config(settings: Settings, **overrides: Any):
    """The RunConfig of the CPU training figures: the digits preset's images (16 px) and
    batch (128), 2 epochs (10 steps each, the second timed); ``--quick``: the smoke preset's 4 steps of batch 32 at 8 px."""
    from study.config.run_config import make_config

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


def _per_step(marks: list[float], steps_per_epoch: int, fallback: float) -> float:
    """Seconds per step from the clock read at each epoch's end, leaving out the first epoch
    (warm-up, compilation); ``fallback`` when there are fewer than two epochs."""
    if len(marks) < 2:
        return fallback
    return (marks[-1] - marks[0]) / ((len(marks) - 1) * steps_per_epoch)


def trainer_run(config) -> Callable[[], dict[str, float]]:
    """A whole run of :func:`study.train.trainer.train` (tracking off): ``step``, seconds per step
    from the clock at each epoch's end (after its validation pass, through ``on_epoch``),
    first epoch left out (with one epoch only, ``--quick``, its own ``time/step_ms``); ``run``,
    seconds of the whole call."""
    from study.train.trainer import resolve_device, train

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
    """Seconds per step of :func:`study.train.trainer.train` (``step`` of :func:`trainer_run`)."""
    run = trainer_run(config)
    return lambda: run()["step"]


def bare_step(config) -> Callable[[], float]:
    """Seconds per step of the loop one writes by hand: same data, model, optimizer, batch,
    and the same validation pass at each epoch's end, timed as :func:`trainer_step`."""
    from study.data import build_data
    from study.models import build_model
    from study.optim.sgd import build_optimizer
    from study.train.trainer import evaluate, resolve_device, seed_everything

    def measure() -> float:
        seed_everything(config.seed)
        device = resolve_device(config.train.device)
        data = build_data(config.data, config.real_batch_size, device, config.seed)
        model = build_model(config.model.resolved_name, num_classes=data.num_classes,
                            in_chans=data.in_chans).to(device)
        optimizer = build_optimizer(model, config.peak_lr,
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


def agc_vs_loop(model_name: str, settings: Settings, **build: Any) -> dict[str, Any]:
    """Seconds per clip of :class:`AGC` (``ours``) and of :func:`loop_agc_` (``loop``) on
    ``model_name``'s parameters with fixed random gradients (each model its own copy of the
    same weights), each round's measurement lasting about :data:`AGC_MEASURE_S`; ``floor``:
    one read of every weight and gradient (a norm of each, packed into one buffer
    beforehand), the least memory traffic any exact AGC needs; ``telemetry``: :class:`AGC`
    with ``telemetry=True``, as the trainer runs it. Lists, one value per round;
    ``tensors``: how many were clipped."""
    from study.models import build_model
    from study.optim.agc import AGC, agc_parameters

    torch.manual_seed(0)
    ours = build_model(model_name, **build).to(settings.device)
    theirs, watched = (build_model(model_name, **build).to(settings.device) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    watched.load_state_dict(ours.state_dict())
    ours_params, their_params, watched_params = agc_parameters(ours), agc_parameters(theirs), agc_parameters(watched)
    for a, b, c in zip(ours_params, their_params, watched_params):
        a.grad = torch.randn_like(a).mul_(1e-3)
        b.grad, c.grad = a.grad.clone(), a.grad.clone()
    agc = AGC(ours_params, clipping=0.01)
    with_telemetry = AGC(watched_params, clipping=0.01, telemetry=True)
    packed = [torch.cat([p.detach().reshape(-1) for p in ours_params]),
              torch.cat([p.grad.reshape(-1) for p in ours_params])]
    calls = {"ours": agc.clip_, "loop": lambda: loop_agc_(their_params, 0.01),
             "floor": lambda: torch._foreach_norm(packed), "telemetry": with_telemetry.clip_}
    measures = {name: timed(fn, settings.device, 1 if settings.quick else calls_for(fn, settings.device, AGC_MEASURE_S))
                for name, fn in calls.items()}

    def settled(rounds: Rounds) -> bool:
        if model_name != settings.model:
            return spread_ok(column(rounds, "ours", "s"), column(rounds, "loop", "s"), "")
        return (spread_ok(column(rounds, "ours", "s"), column(rounds, "loop", "s"), "agc_vectorised_vs_loop")
                and spread_ok(column(rounds, "telemetry", "s"), column(rounds, "ours", "s"), "agc_telemetry"))

    rounds = interleaved({name: (lambda m=m: {"s": m()}) for name, m in measures.items()}, settings.repeats,
                         settled=settled, max_repeats=settings.max_repeats)
    return {**{name: column(rounds, name, "s") for name in measures}, "tensors": len(ours_params)}


# --------------------------------------------------------------------------- tracking

@contextlib.contextmanager
def temporary_tracking() -> Iterator[Any]:
    """A :class:`~study.record.tracking.Tracking` on a fresh SQLite store in a temporary directory."""
    from study.record.tracking import Tracking

    with tempfile.TemporaryDirectory(prefix="nfstudy-bench-") as tmp:
        yield Tracking(f"sqlite:///{tmp}/mlflow.db")


def tracked_run(config, tracking, experiment_id: str, parent_id: str) -> Callable[[], dict[str, float]]:
    """``run``: seconds of a whole training run logging to a new MLflow child run, closed at
    the end (final metrics flushed), to set against ``run`` of :func:`trainer_run`; creating
    the child is left to ``framework_cost_per_run``."""
    from study.train.trainer import train

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
    from study.config.expand import plan
    from study.config.study_file import StudySpec
    from study.train.trainer import train

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
        sync_device(device)
        return time.perf_counter() - start

    return measure


# --------------------------------------------------------------------------- CPU figures

def cpu_figures(settings: Settings, log: Callable[[str], None]) -> list[Result]:
    """The framework's figures, on every device (the small net, or ``--model``). Without
    MLflow installed (a bare GPU machine), the two tracking figures are left out."""
    results: list[Result] = []
    add = collector(results, log)
    models = [(settings.model, {"num_classes": 10, "in_chans": 1})]
    if not settings.quick and settings.model != "nfnet_f0":
        models.append(("nfnet_f0", {}))
    for model, build in models:
        name = "agc_vectorised_vs_loop" + ("" if model == settings.model else f"/{model}")
        log(name)
        agc = agc_vs_loop(model, settings, **build)
        ms = {key: [v * 1e3 for v in agc[key]] for key in ("ours", "loop", "floor", "telemetry")}
        add(judge(name, ms["ours"], ms["loop"], "ms/clip", note=f"{model}, {agc['tensors']} tensors"))
        if model == settings.model:
            add(judge("agc_telemetry", ms["telemetry"], ms["ours"], "ms/clip",
                      note="AGC with its per-epoch telemetry accumulated on the device vs without; "
                           "agc_step_overhead includes it"))
        if model == "nfnet_f0":
            add(judge("agc_read_floor/nfnet_f0", ms["floor"], ms["loop"], "ms/clip",
                      note="one read of W and G: the least any exact AGC can cost; "
                           "its ratio bounds agc_vectorised_vs_loop/nfnet_f0 from below"))

    base = bench_config(settings)
    variants = {"agc_step_overhead": {"agc.clipping": 0.01},
                "sam_fraction": {"sam.mode": "fraction", "sam.fraction": 0.2},
                "sam_full": {"sam.mode": "full"}}
    if not settings.quick:
        variants["channels_last"] = {"train.channels_last": True}
    try:
        import mlflow  # noqa: F401 - the tracking figures' store
        tracked = True
    except ImportError:
        tracked = False
    if not tracked:
        log("mlflow not installed: no tracking_overhead, no framework_cost_per_run")
    with temporary_tracking() if tracked else contextlib.nullcontext() as tracking:
        measures = {"trainer": trainer_run(base), "bare": lambda m=bare_step(base): {"step": m()},
                    **{name: trainer_run(bench_config(settings, **o)) for name, o in variants.items()}}
        if tracked:
            experiment_id, parent_id = tracking.ensure_study("bench", "nfstudy bench")
            measures["tracked"] = tracked_run(base, tracking, experiment_id, parent_id)
        log(f"training runs: {', '.join(measures)} ({settings.repeats} to {settings.max_repeats} rounds, "
            "round-robin, until every spread is under its tolerance)")
        measures["trainer"]()  # warm-up: the process's first run loads the data set
        runs = interleaved(measures, settings.repeats, settled=lambda r: _steps_settled(r, variants, tracked),
                           max_repeats=settings.max_repeats)
        step = {name: [v.get("step", 0.0) * 1e3 for v in values] for name, values in runs.items()}
        add(judge("trainer_overhead", step["trainer"], step["bare"], "ms/step"))
        for name in variants:
            add(judge(name, step[name], step["trainer"], "ms/step",
                      note="NHWC vs NCHW; an option, not a target" if name == "channels_last" else ""))
        if tracked:
            add(judge("tracking_overhead", column(runs, "tracked", "run"), column(runs, "trainer", "run"), "s/run",
                      note=f"whole run of {base.train.steps} steps, metrics every epoch"))
            log("framework_cost_per_run")
            value, baseline = paired(framework_run(settings, tracking), bare_first_step(base),
                                     settings.repeats, warmup=settings.warmup)
            add(judge("framework_cost_per_run", value, baseline, "s", on="value",
                      target=FRAMEWORK_COST_TARGET_S, note="spec → FINISHED MLflow run of one step, warm process"))

    if settings.compile:
        log("compile")
        compiled = bench_config(settings, **{"train.compile": True})
        start = time.perf_counter()
        trainer_step(compiled)()  # compiles (the cache makes the timed calls below warm)
        compile_s = time.perf_counter() - start
        value, baseline = paired(trainer_step(compiled), trainer_step(base), settings.repeats, warmup=False)
        add(judge("compile", [v * 1e3 for v in value], [v * 1e3 for v in baseline], "ms/step",
                  note=f"torch.compile vs eager; first run {compile_s:.0f} s incl. compilation"))
    return results


def _steps_settled(rounds: Rounds, variants: dict[str, Any], tracked: bool) -> bool:
    """Whether every judged training figure's spread is under its tolerance."""
    pairs = [("trainer_overhead", "trainer", "bare", "step")]
    pairs += [(name, name, "trainer", "step") for name in variants]
    if tracked:
        pairs.append(("tracking_overhead", "tracked", "trainer", "run"))
    return all(spread_ok(column(rounds, a, key), column(rounds, b, key), name) for name, a, b, key in pairs)
