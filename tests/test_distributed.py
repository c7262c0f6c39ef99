"""DDP with torchrun (gloo, 2 CPU processes) equals one process on the same global batch:
the loss, the AGC-clipped gradient (clipped after the all-reduce, Brock et al. 2021 §4) and a whole
short run. Run as a script under torchrun, this file is the per-rank side of the one-step
probe: ``python -m torch.distributed.run --nproc-per-node 2 tests/test_distributed.py OUT``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from study.config.run_config import make_config
from study.errors import ConfigError
from study.train.ddp import train_distributed
from study.train.world import World, world

OVERRIDES = {
    "model.name": "nf_resnet_small", "model.dropout": 0.0, "model.stochastic_depth": 0.0,
    "data.name": "fake", "data.num_examples": 128, "data.image_size": 8, "data.batch_size": 32,
    "data.crop_pad": 1, "data.mixup": True, "train.epochs": 2, "train.device": "cpu",
    "optim.ema_decay": 0.9, "agc.clipping": 0.01, "seed": 5,
}
LAMBDA = 0.01


def one_step(out: Path) -> None:
    """One training step's loss and gradients, before and after AGC, on this process's
    share of the first global batch; rank 0 writes them to ``out``."""
    from study.data import build_data
    from study.models import build_model
    from study.optim.agc import AGC, agc_parameters

    here = world()
    # Class-index targets, as before the loaders learned to mix (MixUp is not what this probes).
    config = make_config({**OVERRIDES, "data.mixup": False})
    data = build_data(config.data, config.real_batch_size, torch.device("cpu"), config.seed)
    torch.manual_seed(0)  # rank 0's initial weights are broadcast by DDP
    model = build_model(config.model.name, num_classes=data.num_classes, in_chans=data.in_chans,
                        dropout=0.0, stochastic_depth=0.0, classifier_init_std=0.0)
    with torch.no_grad():  # fill the zero-initialised classifier and skip gains, so every
        for p in model.parameters():  # layer gets a gradient for AGC to clip
            if not p.any():
                p.normal_(0.0, 0.5)
    replicated = here.wrap(model)
    x, y = next(iter(data.train))
    loss = F.cross_entropy(replicated(here.shard(x)), here.shard(y))
    loss.backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    AGC(agc_parameters(model), LAMBDA).clip_()
    mean_loss = here.mean(loss.detach())
    if here.rank == 0:
        torch.save({"loss": mean_loss, "raw": raw, "clipped": {n: p.grad for n, p in model.named_parameters()},
                    "world": here.size}, out)


def test_world_shards_contiguous_slices_of_the_global_batch():
    batch = torch.arange(12).view(6, 2)
    assert torch.equal(World(rank=1, size=3).shard(batch), batch[2:4])
    assert World().shard(batch) is batch
    assert World(rank=0, size=4).local_batch_size(32) == 8
    with pytest.raises(ConfigError, match="data.batch_size"):
        World(rank=0, size=3).local_batch_size(32)


def test_train_distributed_rejects_bad_process_counts():
    with pytest.raises(ConfigError, match="nproc"):
        train_distributed(make_config(OVERRIDES), 0)
    with pytest.raises(ConfigError, match="multiple of the process count"):
        train_distributed(make_config(OVERRIDES), 3)


def _torchrun(nproc: int, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_one_ddp_step_equals_one_process_on_the_global_batch(tmp_path):
    _torchrun(2, __file__, str(tmp_path / "ddp.pt"))
    one_step(tmp_path / "single.pt")  # no process group here: one process, the whole batch
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    assert ddp["world"] == 2 and single["world"] == 1
    torch.testing.assert_close(ddp["loss"], single["loss"], rtol=1e-6, atol=1e-7)
    clipped = 0
    for name, grad in single["clipped"].items():
        # Summation order differs (two half-batch means, then the all-reduce): ~1e-6 of the
        # tensor's scale measured; a gradient clipped per rank before the all-reduce is off by far more.
        scale = float(single["raw"][name].abs().max())
        torch.testing.assert_close(ddp["raw"][name], single["raw"][name], rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(ddp["clipped"][name], grad, rtol=1e-5, atol=1e-5 * scale)
        clipped += not torch.allclose(single["raw"][name], grad)
    assert clipped > len(single["clipped"]) // 2, f"AGC clipped only {clipped} tensors: a weak test"


@pytest.mark.slow
def test_train_distributed_forwards_epochs_and_matches_one_process():
    from study.train.trainer import train

    class Recorder:
        def __init__(self):
            self.steps = []

        def log_metrics(self, metrics, step):
            self.steps.append(step)

    config = make_config(OVERRIDES)
    tracker, epochs = Recorder(), []
    result = train_distributed(config, 2, tracker=tracker, on_epoch=lambda e, m: epochs.append((e, m)))
    assert tracker.steps == [0, 1]
    assert [e for e, _ in epochs] == [0, 1] and "val/top1" in epochs[1][1]
    assert result["outcome"] == "completed" and result["steps"] == 8 and result["epochs"] == 2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(config)
    finally:
        torch.set_num_threads(threads)
    for key in ("train/loss", "val/loss", "test/loss"):
        assert result[key] == pytest.approx(single[key], rel=1e-4), key
    assert result["val/top1"] == pytest.approx(single["val/top1"], abs=2 / 500)  # at most 2 flips


@pytest.mark.slow
def test_nfstudy_run_with_nproc_per_node_trains_each_config_as_one_ddp_job(study_file, capsys):
    from mlflow.tracking import MlflowClient

    from study import paths
    from study.cli import main

    path = study_file("name: ddp\nbase: presets/smoke.yaml\nfixed: {train.steps: 2}\nseeds: [0]\n")
    assert main(["run", str(path), "--nproc-per-node", "2"]) == 0
    client = MlflowClient(paths.tracking_uri())
    experiment = client.get_experiment_by_name("ddp")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`nfstudy.role` = 'child'")
    assert run.info.status == "FINISHED" and run.data.metrics["steps"] == 2
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/top1")] == [0]


if __name__ == "__main__":  # the per-rank side of the one-step probe, under torchrun
    import gc

    import torch.distributed as dist

    dist.init_process_group("gloo")
    one_step(Path(sys.argv[1]))
    # The DDP wrapper sits in reference cycles: collect it while its process group lives, and
    # let no rank tear down before the other is done (one CI run saw rank 1 abort at exit).
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
