"""Every CUDA path of nfstudy once, and every GPU figure, in one command (``scripts/gpu_check.sh``).

Sections run in order; each appends one JSON line to ``OUT/results.jsonl`` as it ends (so a
run cut short keeps what it finished) and prints a summary. A failing section is recorded
and the next one runs. ``--dry-run`` runs the same code on the CPU at tiny sizes and leaves
out what only CUDA has (the CUDA-only tests, the sync audit's debug mode, compilation,
cross-device resumes, NCCL): CI runs it so the script cannot rot between GPU sessions.

Needs torch and pydantic (typer, rich and PyYAML for the bench's presets); MLflow and Optuna
are never imported, timm and torchvision are used when present. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
#: The test files that hold ``@pytest.mark.cuda`` tests (importable without MLflow/Optuna).
CUDA_TEST_FILES = ["tests/optim/test_sgd.py", "tests/test_checkpoint.py", "tests/test_distributed.py",
                   "tests/data/test_gpu_loader.py", "tests/optim/test_agc.py"]


class Check:
    """The run's settings and its results file."""

    def __init__(self, out: Path, dry_run: bool):
        self.out, self.dry_run = out, dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.results = out / "results.jsonl"

    def record(self, section: str, ok: bool, seconds: float, payload: dict) -> None:
        line = {"section": section, "ok": ok, "seconds": round(seconds, 1), "dry_run": self.dry_run, **payload}
        with open(self.results, "a") as f:
            f.write(json.dumps(line, default=str) + "\n")
        print(f"== {section}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
        for key, value in payload.items():
            print(f"   {key}: {json.dumps(value, default=str)[:2000]}", flush=True)

    def config(self, **overrides):
        """A small run on this check's device: nf_resnet_small on random 32 px images (8 px dry)."""
        from study.config.run_config import make_config

        tiny = self.dry_run
        values = {"model.name": "nf_resnet_small", "data.name": "fake", "data.image_size": 8 if tiny else 32,
                  "data.num_examples": 64 if tiny else 512, "data.batch_size": 16 if tiny else 64,
                  "data.crop_pad": 1, "train.steps": 4 if tiny else 16, "train.device": str(self.device),
                  "agc.clipping": 0.01}
        values = {**values, **overrides}
        if tiny:  # bf16 and fp16 autocast on a CPU is emulated and many times slower: the code path is the point
            values["train.precision"] = "fp32"
        return make_config(values, where="gpu_check")


# --------------------------------------------------------------------------- sections

def environment(check: Check) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "cpus": os.cpu_count()}
    for name in ("pydantic", "mlflow", "optuna", "timm", "torchvision", "typer"):
        with contextlib.suppress(Exception):
            info[name] = __import__(name).__version__
    if check.dry_run:
        return info
    from study.bench.peaks import peak_bf16_flops

    props = torch.cuda.get_device_properties(0)
    name = torch.cuda.get_device_name(0)
    info.update(gpu=name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                sms=props.multi_processor_count, nccl=".".join(map(str, torch.cuda.nccl.version())),
                peak_bf16_tflops=(peak_bf16_flops(name) or 0) / 1e12 or "not in study/bench/peaks.py")
    with contextlib.suppress(Exception):
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    return info


def cuda_tests(check: Check) -> dict:
    if check.dry_run:
        return {"skipped": "dry run: no CUDA-only tests"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                           "--basetemp", tempfile.mkdtemp(prefix="nfstudy-cuda-tests-"), *CUDA_TEST_FILES],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    (check.out / "cuda_tests.log").write_text(done.stdout + done.stderr)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0:
        raise RuntimeError(f"pytest exited {done.returncode}: {lines[-1] if lines else done.stderr[-500:]}")
    return {"summary": lines[-1] if lines else ""}


def agc(check: Check) -> dict:
    """AGC on NFNet-F0's parameters on the device: the flat aligned layout against the flat
    unaligned one (the A/B of the alignment fix), the per-tensor path and timm's loop."""
    from study.bench.cpu import loop_agc_
    from study.bench.harness import calls_for, column, interleaved, median_interval, ratios, timed
    from study.models import build_model
    from study.optim import agc as agc_module

    name = "nf_resnet_small" if check.dry_run else "nfnet_f0"
    build = {"num_classes": 10, "in_chans": 1} if check.dry_run else {}
    torch.manual_seed(0)
    reference = build_model(name, **build).to(check.device)
    clips, params = {}, {}
    for variant in ("aligned", "unaligned", "per_tensor", "timm_loop"):
        model = build_model(name, **build).to(check.device)
        model.load_state_dict(reference.state_dict())
        params[variant] = agc_module.agc_parameters(model)
        for p, q in zip(params[variant], agc_module.agc_parameters(reference)):
            p.grad = torch.randn_like(q, generator=None).mul_(1e-3)
        saved = agc_module.ALIGNMENT_BYTES
        agc_module.ALIGNMENT_BYTES = 4 if variant == "unaligned" else saved  # packed end to end, as before
        try:
            if variant == "timm_loop":
                clips[variant] = lambda ps=params[variant]: loop_agc_(ps, 0.01)
            else:
                clips[variant] = agc_module.AGC(params[variant], 0.01, flatten=variant != "per_tensor").clip_
        finally:
            agc_module.ALIGNMENT_BYTES = saved
    misaligned = {v: sum(p.data_ptr() % 16 != 0 for p in params[v]) for v in ("aligned", "unaligned")}
    seconds = 0.01 if check.dry_run else 0.2
    measures = {v: timed(fn, check.device, calls_for(fn, check.device, seconds)) for v, fn in clips.items()}
    rounds = interleaved({v: (lambda m=m: {"s": m()}) for v, m in measures.items()}, 1 if check.dry_run else 5)
    ms = {v: statistics.median(column(rounds, v, "s")) * 1e3 for v in measures}
    spread = {f"{v}_vs_aligned": median_interval(ratios(column(rounds, v, "s"), column(rounds, "aligned", "s")))[:2]
              for v in measures if v != "aligned"}
    return {"model": name, "tensors": len(params["aligned"]), "misaligned_tensors": misaligned,
            "ms_per_clip": ms, "spread_of_ratios": spread}


def _syncs_of(check: Check, config) -> dict:
    """Train ``config`` with CUDA's sync debug mode on and count the host syncs by the line
    of nfstudy (or the caller's top frame) that caused them."""
    from study.train.trainer import train

    where: Counter = Counter()
    show = warnings.showwarning

    def catch(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return show(message, category, filename, lineno, file, line)
        ours = str(REPO / "study") + os.sep
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(ours)]
        top = frames[-1] if frames else traceback.extract_stack()[-2]
        name = Path(top.filename).relative_to(REPO) if top.filename.startswith(ours) else top.filename
        where[f"{name}:{top.lineno} {top.line}"] += 1

    if not check.dry_run:
        torch.cuda.synchronize()
        warnings.showwarning = catch
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = catch if not check.dry_run else show
            result = train(config)
    finally:
        if not check.dry_run:
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = show
    return {"steps": result["steps"], "outcome": result["outcome"], "syncs": sum(where.values()),
            "by_line": dict(where.most_common())}


def sync_audit(check: Check) -> dict:
    """50-step runs (one epoch, then its evaluation and the test pass): every host sync with
    the line that made it. Expected: the divergence check every 25 steps, the epoch's one
    ``.item()`` and one per evaluation."""
    steps = 4 if check.dry_run else 50
    batch = 16 if check.dry_run else 64
    base = {"train.precision": "bf16", "train.channels_last": True, "train.steps": steps,
            "data.num_examples": steps * batch, "data.batch_size": batch}
    runs = {"bf16_agc_nhwc": base, "bf16_agc_nhwc_mixup": {**base, "data.mixup": True},
            "fp16_agc_nhwc": {**base, "train.precision": "fp16"},
            "bf16_agc_nhwc_sam20_ema": {**base, "sam.mode": "fraction", "sam.fraction": 0.2, "optim.ema_decay": 0.999}}
    return {name: _syncs_of(check, check.config(**o)) for name, o in runs.items()}


def _image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 40) -> Path:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


def crash_matrix(check: Check) -> dict:
    """train() in every configuration that takes another code path: each must finish."""
    from study.train.trainer import train

    matrix = {
        "fp32": {"train.precision": "fp32"}, "bf16": {"train.precision": "bf16"},
        "fp16": {"train.precision": "fp16"}, "bf16_nhwc": {"train.precision": "bf16", "train.channels_last": True},
        "fp16_sam_full": {"train.precision": "fp16", "sam.mode": "full"},
        "bf16_sam_fraction": {"train.precision": "bf16", "sam.mode": "fraction"},
        "bn_twin": {"model.name": "nf_resnet_cifar", "model.norm": "bn", "train.precision": "bf16"},
        "ema_mixup": {"optim.ema_decay": 0.99, "data.mixup": True, "train.precision": "bf16"},
        "no_agc": {"agc.clipping": None}, "agc_layer": {"agc.mode": "layer"},
        "deterministic": {"train.deterministic": True}, "tf32_all": {"train.tf32": "all"},
        "tf32_off": {"train.tf32": "off"},
    }  # train.compile: the ddp and bench sections compile (a minute each on a GPU machine's CPUs)
    results = {}
    with tempfile.TemporaryDirectory(prefix="nfstudy-imagefolder-") as tmp:
        with contextlib.suppress(ImportError):
            root = _image_folder(Path(tmp))
            matrix["imagefolder_workers"] = {"data.name": "imagefolder", "data.root": str(root),
                                             "data.image_size": 32, "data.num_workers": 2,
                                             "data.batch_size": 8, "train.steps": 4}
        for name, overrides in matrix.items():
            start = time.perf_counter()
            try:
                result = train(check.config(**overrides))
                results[name] = {"outcome": result["outcome"], "steps": result["steps"],
                                 "step_ms": round(result["time/step_ms"], 2), "s": round(time.perf_counter() - start, 1)}
            except Exception as err:  # noqa: BLE001 - every failure is a finding
                results[name] = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
    failed = [n for n, r in results.items() if "error" in r]
    if failed:
        raise RuntimeError(f"failed: {', '.join(failed)}; {json.dumps(results)[:3000]}")
    return results


def resume(check: Check) -> dict:
    """A run killed (SIGKILL) after its first checkpoint and resumed ends where an
    uninterrupted run ends (deterministic algorithms on); on a GPU also a checkpoint written
    on the CPU resumes on CUDA, and one written on CUDA resumes on the CPU."""
    from study.config.run_config import make_config
    from study.paths import checkpoint_dir
    from study.train.trainer import train

    overrides = {"train.checkpoint_every": 1, "train.deterministic": True, "train.steps": None,
                 "train.epochs": 3, "data.mixup": True, "optim.ema_decay": 0.99, "model.dropout": 0.1}
    config = check.config(**overrides)
    keep = ("val/loss", "val/top1", "test/loss", "test/top1", "train/loss", "steps")
    with _home():
        reference = train(config)
    out = {}
    with _home() as home:
        path = checkpoint_dir(config.config_hash()) / "last.pt"
        code = ("import sys; from study.config.run_config import RunConfig; from study.train.trainer import train; "
                "train(RunConfig.model_validate_json(sys.argv[1]))")
        child = subprocess.Popen([sys.executable, "-c", code, config.model_dump_json()],
                                 env={**os.environ, "NFSTUDY_HOME": str(home),
                                      "OMP_NUM_THREADS": str(torch.get_num_threads())})  # same reduction order
        deadline = time.monotonic() + 300
        while child.poll() is None and time.monotonic() < deadline and not path.is_file():
            time.sleep(0.02)
        killed = child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        epoch = torch.load(path, weights_only=True)["epoch"] if path.is_file() else None
        resumed = train(config)
        out["kill"] = {"killed_after_epoch": epoch, "killed": killed,
                       "equal_to_uninterrupted": {k: resumed[k] == reference[k] for k in keep},
                       "resumed": {k: resumed[k] for k in keep}, "uninterrupted": {k: reference[k] for k in keep}}
    if not check.dry_run:
        for first, second in (("cpu", "cuda"), ("cuda", "cpu")):
            with _home():
                one = make_config({**config.flat(), "train.device": first, "train.precision": "fp16"})
                with contextlib.suppress(_Stop):
                    train(one, on_epoch=_stop_at_second_epoch)  # epoch 0's checkpoint is written
                epochs = _Epochs()
                result = train(make_config({**one.flat(), "train.device": second}), tracker=epochs)
                out[f"{first}_to_{second}"] = {"outcome": result["outcome"], "steps": result["steps"],
                                               "epochs_logged_after_resume": epochs.logged,
                                               "val/top1": result["val/top1"]}
    return out


class _Stop(Exception):
    pass


def _stop_at_second_epoch(epoch: int, metrics: dict) -> None:
    if epoch == 1:
        raise _Stop


class _Epochs:
    """A tracker that keeps the epochs it is given (a resumed run logs from its first new one)."""

    def __init__(self):
        self.logged: list[int] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append(step)


@contextlib.contextmanager
def _home():
    with tempfile.TemporaryDirectory(prefix="nfstudy-home-") as home:
        before = os.environ.get("NFSTUDY_HOME")
        os.environ["NFSTUDY_HOME"] = home
        try:
            yield Path(home)
        finally:
            if before is None:
                os.environ.pop("NFSTUDY_HOME", None)
            else:
                os.environ["NFSTUDY_HOME"] = before


def ab_costs(check: Check) -> dict:
    """The A/B of fixes that a config cannot switch: fused against foreach SGD (fp16, with a
    GradScaler), and cuDNN autotuning on against off, on NFNet-F0 steps (a small net dry)."""
    from study.bench.harness import column, interleaved, timed
    from study.models import build_model

    name = "nf_resnet_small" if check.dry_run else "nfnet_f0"
    size, batch = (16, 8) if check.dry_run else (192, 64)
    model = build_model(name, num_classes=10, **({"in_chans": 3} if check.dry_run else {})).to(check.device)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=check.device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=check.device)
    dtype = torch.float32 if check.dry_run else torch.float16  # fp16: the GradScaler case
    optimizers = {kind: torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True,
                                        foreach=kind == "foreach", fused=kind == "fused")
                  for kind in (("foreach",) if check.dry_run else ("foreach", "fused"))}
    scaler = torch.amp.GradScaler(check.device.type, enabled=not check.dry_run)

    def step(optimizer, benchmark: bool) -> None:
        torch.backends.cudnn.benchmark = benchmark
        with torch.autocast(check.device.type, dtype=dtype, enabled=not check.dry_run):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    calls = 2 if check.dry_run else 10
    measures = {f"{kind}_benchmark_{b}": timed(lambda o=o, b=b: step(o, b), check.device, calls)
                for kind, o in optimizers.items() for b in (True, False)}
    for m in measures.values():
        m()  # warm-up (autotuning happens here)
    rounds = interleaved({k: (lambda m=m: {"s": m()}) for k, m in measures.items()}, 1 if check.dry_run else 3)
    return {"model": name, "batch": batch, "ms_per_step": {k: statistics.median(column(rounds, k, "s")) * 1e3
                                                          for k in measures}}


def digits_preset(check: Check) -> dict:
    """The digits preset's whole run (300 steps) on this device: the "10× the 2-core CPU"
    target is its time/step_ms against the CPU's in docs/BENCHMARKS.md."""
    from study.config.run_config import make_config
    from study.config.study_file import load_preset
    from study.train.trainer import train

    values = {**load_preset("digits"), "train.device": str(check.device)}
    if check.dry_run:
        values["train.steps"] = 4
    result = train(make_config(values, where="gpu_check"))
    return {k: result[k] for k in ("steps", "time/step_ms", "time/total_s", "test/top1", "outcome")}


def ddp(check: Check) -> dict:
    """One-rank DDP (torchrun; NCCL on a GPU, gloo dry), eager and compiled."""
    from study.train.ddp import train_distributed

    out = {}
    for name, compile_ in (("eager", False), ("compiled", True)):
        if compile_ and check.dry_run:
            continue
        start = time.perf_counter()
        result = train_distributed(check.config(**{"train.compile": compile_, "train.channels_last": True,
                                                   "train.precision": "fp32" if check.dry_run else "bf16"}), 1)
        out[name] = {"outcome": result["outcome"], "steps": result["steps"], "s": round(time.perf_counter() - start, 1)}
    return out


def _bench(check: Check, group: str) -> dict:
    """``nfstudy bench --device cuda --only GROUP --json`` (the framework figures, ``--quick``,
    on a CPU)."""
    from study.bench import run_bench

    out = run_bench("cpu" if check.dry_run else "cuda", quick=check.dry_run, log=lambda s: print(s, flush=True),
                    only=["framework"] if check.dry_run else [group])
    (check.out / f"bench_{group}.json").write_text(json.dumps(out, indent=1))
    return {"host": out["host"], "figures": {r["name"]: {k: r[k] for k in ("value", "baseline", "ratio", "low", "high",
                                                                          "rounds", "unit", "target", "ok", "note")}
                                             for r in out["results"]}}


def bench_f0(check: Check) -> dict:
    """NFNet-F0: NHWC vs NCHW, compiled vs eager, MFU, timm like for like."""
    return _bench(check, "gpu")


def bench_cifar(check: Check) -> dict:
    """The cifar10 preset's images/s, bf16 vs fp32."""
    return {"skipped": "dry run: bench_f0 ran the framework figures"} if check.dry_run else _bench(check, "cifar")


SECTIONS: dict[str, Callable[[Check], dict]] = {
    "environment": environment, "cuda_tests": cuda_tests, "agc": agc, "sync_audit": sync_audit,
    "crash_matrix": crash_matrix, "resume": resume, "ab_costs": ab_costs, "digits_preset": digits_preset,
    "ddp": ddp, "bench_f0": bench_f0, "bench_cifar": bench_cifar,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or tempfile.mkdtemp(prefix="nfstudy-gpu-check-"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no CUDA-only lines")
    parser.add_argument("--only", action="append", choices=list(SECTIONS), help="run only these sections")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: torch sees no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    if args.dry_run:  # tiny work: one thread (two on a shared CPU spin at every barrier)
        torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, args.dry_run)
    print(f"results: {out / 'results.jsonl'}", flush=True)
    failed = []
    with _home():
        for name in args.only or list(SECTIONS):
            start = time.perf_counter()
            try:
                payload, ok = SECTIONS[name](check), True
            except Exception as err:  # noqa: BLE001 - record the failure, go on with the next section
                payload, ok = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}, False
                failed.append(name)
            check.record(name, ok, time.perf_counter() - start, payload)
    print(f"done: {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; results in {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
