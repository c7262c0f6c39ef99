"""One big run on several GPUs (or CPU processes): ``torchrun`` + DistributedDataParallel.

The run keeps the meaning of its config: ``data.batch_size`` is the *global* batch and the
learning-rate rule (``optim.lr``·B/256) is unchanged. Every rank draws the same global batch
(the loaders' order comes from the shared seed) and trains on its contiguous slice of it;
DDP averages the gradients, so the mean loss and its gradient equal one process on the whole
batch, and AGC, called after ``backward()``, clips the all-reduced gradient, as the official
code does (Brock et al. 2021, §4, arXiv 2102.06171; google-deepmind/deepmind-research,
nfnets/). The SAM ascent runs inside ``no_sync()``: local to each replica, which the paper's
discussion of SAM reports works best. Evaluation runs on every rank over the whole split
(identical results, no collective); only rank 0 reports metrics.

``train_distributed(config, nproc)`` launches
``python -m torch.distributed.run --standalone --nproc-per-node N -m study.train.ddp
<config.json> <out_dir>`` (gloo on CPU, NCCL on CUDA). Rank 0 appends each epoch's metrics to
``out_dir/metrics.jsonl``, which the caller tails and forwards to its tracker, and writes the
final result to ``out_dir/result.json``.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from study.children import die_with_parent, start_group, stop_group
from study.config.run_config import RunConfig
from study.errors import ConfigError
from study.train.trainer import resolve_device, train
from study.train.world import World

METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
LOG_FILE = "torchrun.log"
_POLL_S = 0.2


class _JsonlSink:
    """Rank 0's metric sink: one JSON line per tracker call and per ``on_epoch`` call."""

    def __init__(self, path: Path):
        self.path = path

    def _append(self, kind: str, metrics: dict[str, float], step: int) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"kind": kind, "step": step, "metrics": metrics}) + "\n")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._append("log", metrics, step)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._append("epoch", metrics, epoch)


def train_distributed(
    config: RunConfig,
    nproc: int,
    tracker: Any | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float | str]:
    """Train one run on ``nproc`` processes with DDP and return its final metrics.

    Args:
        config: the run's configuration; ``data.batch_size`` (or ``device_batch_size``) is the
            global batch and must split evenly over ``nproc``.
        nproc: processes to start (one per GPU on a GPU box).
        tracker: receives rank 0's per-epoch metrics (``log_metrics(metrics, step)``).
        on_epoch: called with ``(epoch, metrics)`` after each epoch, as in
            :func:`study.train.trainer.train`; if it raises, the processes are stopped and the
            exception propagates.

    Returns:
        What :func:`study.train.trainer.train` returns, from rank 0.

    Raises:
        ConfigError: ``nproc`` below 1, or a batch that does not split over ``nproc``.
        RuntimeError: the processes failed (the message ends with the log's last lines).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc-per-node: got {nproc}; allowed: 1 or more")
    World(size=nproc).local_batch_size(config.real_batch_size)
    out = Path(tempfile.mkdtemp(prefix="nfstudy-ddp-"))
    (out / "config.json").write_text(config.model_dump_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "study.train.ddp", str(out / "config.json"), str(out)]
    with open(out / LOG_FILE, "wb") as log:
        # Its own process group, stopped with this process even on a kill -9: a restarted
        # worker must never find the last run's ranks still training on its GPUs.
        proc = start_group(cmd, stdout=log, stderr=subprocess.STDOUT)
    offset = 0
    try:
        while True:
            exited = proc.poll() is not None
            offset = _forward_lines(out / METRICS_FILE, offset, tracker, on_epoch)
            if exited:
                break
            time.sleep(_POLL_S)
    except BaseException:
        stop_group(proc)
        shutil.rmtree(out, ignore_errors=True)
        raise
    if proc.returncode != 0 or not (out / RESULT_FILE).is_file():
        tail = (out / LOG_FILE).read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"torchrun with {nproc} processes exited with code {proc.returncode} "
                           f"(log {out / LOG_FILE}):\n" + "\n".join(tail))
    result = json.loads((out / RESULT_FILE).read_text())
    shutil.rmtree(out, ignore_errors=True)  # a failed run's folder stays, for its log
    return result


def _forward_lines(path: Path, offset: int, tracker, on_epoch) -> int:
    """Forward the complete lines of ``path`` after ``offset``; return the new offset."""
    if not path.is_file():
        return offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[:chunk.rfind(b"\n") + 1]
    for line in complete.decode().splitlines():
        record = json.loads(line)
        if record["kind"] == "log" and tracker is not None:
            tracker.log_metrics(record["metrics"], record["step"])
        elif record["kind"] == "epoch" and on_epoch is not None:
            on_epoch(record["step"], record["metrics"])
    return offset + len(complete)


def init_process_group(device: torch.device) -> None:
    """This rank's process group: NCCL bound to GPU ``$LOCAL_RANK`` on CUDA (``device_id``
    lets NCCL set up its communicator at once, for that GPU, instead of guessing it at the
    first collective), gloo on a CPU."""
    if device.type != "cuda":
        dist.init_process_group("gloo")
        return
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=local)


def main(argv: list[str] | None = None) -> None:
    """Per-rank entry (``python -m study.train.ddp CONFIG_JSON OUT_DIR`` under torchrun)."""
    # torchrun starts each rank in a session of its own: a rank must not outlive it.
    die_with_parent()
    config_path, out_dir = argv if argv is not None else sys.argv[1:]
    out = Path(out_dir)
    config = RunConfig.model_validate_json(Path(config_path).read_text())
    init_process_group(resolve_device(config.train.device))
    sink = _JsonlSink(out / METRICS_FILE) if dist.get_rank() == 0 else None
    result = train(config, tracker=sink, on_epoch=sink.on_epoch if sink is not None else None)
    if sink is not None:
        tmp = out / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, out / RESULT_FILE)
    # Only after success (a failed rank is stopped by torchrun; a barrier would wait for it):
    # collect the DDP wrapper, in reference cycles, while its process group lives, and let no
    # rank tear the group down while another still uses it.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
