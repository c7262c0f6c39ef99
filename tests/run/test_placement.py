"""GPU placement of local workers: ``CUDA_VISIBLE_DEVICES`` never repeats an ordinal, and a
placement that needs more GPUs than are visible is refused before anything is written."""

from __future__ import annotations

import os

import pytest

from study.cli import main
from study.errors import ConfigError
from study.run.placement import check_placement, visible_gpus, worker_env


@pytest.mark.parametrize("gpus, workers, nproc", [(8, 8, 1), (8, 4, 2), (8, 2, 4), (4, 1, 4), (8, 3, 2)])
def test_each_worker_gets_its_own_gpus(gpus, workers, nproc):
    visible = [str(i) for i in range(gpus)]
    check_placement(workers, nproc, ["auto"], visible)
    given = [worker_env(i, workers, visible, nproc)["CUDA_VISIBLE_DEVICES"].split(",") for i in range(workers)]
    assert all(len(own) == nproc for own in given)
    flat = [g for own in given for g in own]
    assert len(flat) == len(set(flat)) == workers * nproc  # no ordinal twice, within or across workers


@pytest.mark.parametrize("workers, nproc", [(3, 1), (1, 3), (2, 2)])
@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:0"])
def test_more_processes_than_gpus_is_refused(workers, nproc, device):
    with pytest.raises(ConfigError, match=f"--workers {workers} × --nproc-per-node {nproc}: "
                                          f"{workers * nproc} GPUs wanted, 2 visible"):
        check_placement(workers, nproc, [device], ["0", "1"])


def test_cpu_runs_and_gpu_less_machines_are_not_limited_by_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    check_placement(4, 1, ["cpu"], ["0", "1"])  # the runs never touch the GPUs
    check_placement(4, 2, ["auto"], [])  # no GPU: auto means the CPU
    env = worker_env(3, 4, ["0", "1"])
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # a worker past the last GPU sees none, never "0" again
    cpu_only = worker_env(0, 4, [])
    assert "CUDA_VISIBLE_DEVICES" not in cpu_only and cpu_only["OMP_NUM_THREADS"] == str(max(1, len(
        os.sched_getaffinity(0)) // 4))


def test_visible_gpus_reads_each_entry_once(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0, 2,0,GPU-8f3c,2")
    assert visible_gpus() == ["0", "2", "GPU-8f3c"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_run_with_more_workers_than_gpus_is_one_line_and_writes_nothing(monkeypatch, capsys, nfstudy_home):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # one GPU visible (auto trains on it)
    assert main(["run", "clip-threshold", "--workers", "2"]) == 2  # README's command
    err = capsys.readouterr().err.strip()
    assert err == ("error: --workers 2 × --nproc-per-node 1: 2 GPUs wanted, 1 visible (0); allowed: "
                   "workers × nproc-per-node <= 1, one process per GPU (or train.device=cpu)")
    assert not nfstudy_home.exists() or not any(nfstudy_home.iterdir())
