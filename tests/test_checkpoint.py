"""Checkpoints: a run stopped after an epoch and resumed ends bit-exactly where an
uninterrupted run ends (CPU); files are written atomically and never unpickle code."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from study.config.run_config import make_config
from study.paths import checkpoint_dir
from study.train.checkpoint import load_checkpoint, save_checkpoint
from study.train.trainer import train

# Every piece of state a step reads: dropout and stochastic depth (torch's generator), MixUp
# (its own generator), crops (the loader's epoch), EMA, SAM, AGC, momentum.
OVERRIDES = {
    "model.name": "nf_resnet_small", "model.dropout": 0.1, "model.stochastic_depth": 0.1,
    "data.name": "fake", "data.num_examples": 160, "data.image_size": 8, "data.batch_size": 32,
    "data.crop_pad": 1,
    "data.mixup": True, "train.epochs": 3, "train.device": "cpu", "train.label_smoothing": 0.1,
    "train.checkpoint_every": 1, "optim.ema_decay": 0.99, "agc.clipping": 0.02,
    "sam.mode": "fraction", "seed": 3,
}
TIMES = ("time/step_ms", "time/total_s", "time/epoch_s", "time/images_per_s")


class Recorder:
    """A tracker that keeps what it is given."""

    def __init__(self):
        self.logged: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics, step):
        assert step not in self.logged, f"epoch {step} logged twice"
        self.logged[step] = {k: v for k, v in metrics.items() if k not in TIMES}


def _without_times(result):
    return {k: v for k, v in result.items() if k not in TIMES}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the child: reductions then add in the same order (and
    two threads on a busy two-core machine are several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, one_thread):
    """The reference: three epochs in one go (its own home, so no checkpoint is shared)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NFSTUDY_HOME", str(tmp_path_factory.mktemp("reference-home")))
        tracker = Recorder()
        result = train(make_config(OVERRIDES), tracker=tracker)
    return _without_times(result), tracker.logged


class Crash(Exception):
    pass


def test_resumed_run_is_bit_exact(uninterrupted):
    config = make_config(OVERRIDES)
    reference, reference_epochs = uninterrupted

    def crash_at_epoch_2(epoch, metrics):
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train(config, on_epoch=crash_at_epoch_2)
    saved = load_checkpoint(config.config_hash())
    assert saved["epoch"] == 1 and saved["step"] == 10

    tracker = Recorder()
    resumed = train(config, tracker=tracker)
    assert list(tracker.logged) == [2]  # logs from the resumed epoch on, no duplicates
    assert tracker.logged[2] == reference_epochs[2]  # exact floats
    assert _without_times(resumed) == reference
    assert load_checkpoint(config.config_hash()) is None  # removed once finished


@pytest.mark.slow
def test_run_killed_after_epoch_2_resumes_bit_exact(uninterrupted, nfstudy_home):
    """SIGKILL a training subprocess as soon as its checkpoint of epoch index >= 1 (two
    epochs done) appears, then resume in this process."""
    config = make_config(OVERRIDES)
    path = checkpoint_dir(config.config_hash()) / "last.pt"
    code = ("import sys, torch; torch.set_num_threads(1); from study.config import RunConfig; "
            "from study.train.trainer import train; train(RunConfig.model_validate_json(sys.argv[1]))")
    child = subprocess.Popen([sys.executable, "-c", code, config.model_dump_json()],
                             env={**os.environ, "NFSTUDY_HOME": str(nfstudy_home)})
    killed_at = None
    try:
        deadline = time.monotonic() + 120
        while killed_at is None and time.monotonic() < deadline and child.poll() is None:
            if path.is_file() and torch.load(path, weights_only=True)["epoch"] >= 1:
                child.send_signal(signal.SIGKILL)
                killed_at = load_checkpoint(config.config_hash())["epoch"]
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert killed_at is not None, "the child finished or stalled before its second checkpoint"
    if killed_at >= 2:
        pytest.skip("the child finished the third epoch before the kill landed (slow machine)")

    tracker = Recorder()
    resumed = train(config, tracker=tracker)
    assert list(tracker.logged) == [2]
    assert _without_times(resumed) == uninterrupted[0]


def test_checkpoint_write_is_atomic_and_replaces(nfstudy_home):
    save_checkpoint("k", {"epoch": 0, "w": torch.zeros(3)})
    save_checkpoint("k", {"epoch": 1, "w": torch.ones(3)})
    assert sorted(p.name for p in checkpoint_dir("k").iterdir()) == ["last.pt"]  # no temp left
    state = load_checkpoint("k")
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    # A write torn by a kill leaves only the temp file; the last complete checkpoint still loads.
    (checkpoint_dir("k") / "last.pt.tmp").write_bytes(b"\x80\x02half a checkpo")
    assert load_checkpoint("k")["epoch"] == 1


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["NFSTUDY_HOME"]) / "pwned",))


def test_malicious_pickle_is_refused(nfstudy_home):
    folder = checkpoint_dir("evil")
    folder.mkdir(parents=True)
    with open(folder / "last.pt", "wb") as f:
        pickle.dump({"epoch": 0, "model": _Exploit()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint("evil")
    assert not (nfstudy_home / "pwned").exists()
    # torch.save's zip format with the same payload is refused too.
    torch.save({"epoch": 0, "model": _Exploit()}, folder / "last.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint("evil")
    assert not (nfstudy_home / "pwned").exists()


def _training_objects(scaler_enabled=False):
    from study.models import build_model
    from study.optim.sgd import build_optimizer

    torch.manual_seed(0)
    model = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    optimizer = build_optimizer(model, 0.1)
    model(torch.randn(4, 1, 8, 8)).square().mean().backward()
    optimizer.step()  # momentum buffers to save
    return {"model": model, "optimizer": optimizer, "ema_module": None, "device": torch.device("cpu"),
            "scaler": torch.amp.GradScaler("cpu", enabled=scaler_enabled),
            "generators": {"mixup": torch.Generator().manual_seed(1)}}


def _cuda_shaped(state):
    """What capture_state returns on a GPU, as far as a CPU can build it: 16-byte Philox
    generator states, a CUDA RNG state, a live fp16 loss scale, the fused optimizer's groups."""
    groups = [{**g, "foreach": False, "fused": True} for g in state["optimizer"]["param_groups"]]
    return {**state, "generators": {"mixup": torch.arange(16, dtype=torch.uint8)},
            "rng_cuda": torch.arange(16, dtype=torch.uint8),
            "scaler": {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 7},
            "optimizer": {**state["optimizer"], "param_groups": groups}}


def test_a_checkpoint_written_on_a_gpu_resumes_on_a_cpu():
    from study.train.checkpoint import capture_state, restore_state_

    saved = _training_objects()
    state = _cuda_shaped(capture_state(**saved, step=5, epoch=0, metrics={}))
    draws = []
    for _ in range(2):
        fresh = _training_objects()
        restore_state_(state, **fresh)
        assert [(g["foreach"], g["fused"]) for g in fresh["optimizer"].param_groups] == [(True, False)] * 2
        for p, q in zip(saved["model"].parameters(), fresh["model"].parameters()):
            assert torch.equal(saved["optimizer"].state[p]["momentum_buffer"],
                               fresh["optimizer"].state[q]["momentum_buffer"])
        draws.append(torch.rand(4, generator=fresh["generators"]["mixup"]))
    assert torch.equal(draws[0], draws[1])  # seeded from the saved state: reproducible
    assert not torch.equal(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(1)))  # not restarted


def test_an_empty_scaler_state_from_a_cpu_leaves_an_enabled_scaler_at_its_start():
    """fp16 on a CPU saves a disabled scaler's empty state; resumed where the scaler is live
    (CUDA; the CPU GradScaler stands in for it here), the scale starts again."""
    from study.train.checkpoint import capture_state, restore_state_

    state = capture_state(**_training_objects(), step=5, epoch=0, metrics={})
    assert state["scaler"] == {}
    live = _training_objects(scaler_enabled=True)
    restore_state_(state, **live)
    assert live["scaler"].get_scale() == 65536.0


@pytest.mark.cuda
def test_a_real_cuda_checkpoint_resumes_on_the_cpu_and_back():
    from study.train.checkpoint import capture_state, restore_state_

    cuda = _training_objects()
    cuda["model"].cuda()
    from study.optim.sgd import build_optimizer

    cuda["optimizer"] = build_optimizer(cuda["model"], 0.1)  # fused
    cuda.update(device=torch.device("cuda"), scaler=torch.amp.GradScaler("cuda"),
                generators={"mixup": torch.Generator(device="cuda").manual_seed(1)})
    state = capture_state(**cuda, step=5, epoch=0, metrics={})
    assert state["generators"]["mixup"].numel() != torch.Generator().get_state().numel()
    cpu = _training_objects()
    restore_state_(state, **cpu)
    assert not cpu["optimizer"].param_groups[0]["fused"]
    back = capture_state(**cpu, step=5, epoch=0, metrics={})
    restore_state_(back, **cuda)  # a CPU checkpoint resumed on CUDA: generator, scaler, RNG
    assert cuda["optimizer"].param_groups[0]["fused"] and cuda["scaler"].get_scale() == 65536.0
