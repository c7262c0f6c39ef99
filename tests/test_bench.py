"""`nfstudy bench`: the JSON contract (no timing assertions: machines are noisy)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from study.bench.gpu import cifar_figures, gpu_figures
from study.bench.harness import Settings, interleaved, paired
from study.cli import main

REQUIRED = {"trainer_overhead", "agc_vectorised_vs_loop", "agc_step_overhead", "sam_fraction",
            "sam_full", "tracking_overhead", "framework_cost_per_run"}


@pytest.mark.slow  # tens of seconds on a loaded 2-core machine (MLflow store, many short runs)
def test_quick_json_has_every_required_figure_with_positive_numbers(capsys):
    assert main(["bench", "--json", "--quick", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)  # one JSON object, nothing else on stdout
    assert out["device"] == "cpu"
    assert out["host"]["torch"] and out["host"]["threads"] == 1 and out["host"]["wall_s"] > 0
    names = [r["name"] for r in out["results"]]
    assert REQUIRED <= set(names)
    assert len(names) == len(set(names))
    for r in out["results"]:
        assert {"name", "value", "baseline", "ratio", "unit"} <= set(r)
        assert r["value"] > 0 and r["baseline"] > 0 and r["unit"]
        assert math.isclose(r["ratio"], r["value"] / r["baseline"], rel_tol=1e-9)


def test_paired_alternates_order_and_takes_medians():
    calls = []
    a = iter([100.0, 1.0, 3.0, 2.0])  # warm-up value first, then three measurements
    b = iter([100.0, 10.0, 30.0, 20.0])
    value, baseline = paired(lambda: calls.append("a") or next(a),
                             lambda: calls.append("b") or next(b), repeats=3)
    assert (value, baseline) == (2.0, 20.0)  # warm-ups discarded
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]


def test_interleaved_rotates_the_order_and_takes_medians_of_each_value():
    calls = []

    def measure(name, values):
        values = iter(values)
        return lambda: calls.append(name) or next(values)

    medians = interleaved({"a": measure("a", [{"step": 1.0, "run": 9.0}, {"step": 3.0, "run": 7.0},
                                              {"step": 2.0, "run": 8.0}]),
                           "b": measure("b", [{"step": 10.0}, {"step": 30.0}, {"step": 20.0}]),
                           "c": measure("c", [{"run": 5.0}, {"run": 4.0}, {"run": 6.0}])}, repeats=3)
    assert medians == {"a": {"step": 2.0, "run": 8.0}, "b": {"step": 20.0}, "c": {"run": 5.0}}
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "bench --device: got 'tpu'"),
    (["--model", "nope"], "bench --model: got 'nope'"),
    (["--threads", "0"], "bench --threads: got 0"),
])
def test_bad_arguments_are_one_line_errors(capsys, args, message):
    assert main(["bench", "--quick", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # trains the cifar10 preset's net on a CPU for a few steps, three times
def test_cifar_figures_measure_throughput_and_time_to_94_on_a_local_copy(tmp_path):
    from cifar_files import write_cifar10  # tests/ is on sys.path under pytest

    write_cifar10(tmp_path, per_batch=40, num_test=20)
    lines = []
    settings = Settings(torch.device("cpu"), "nf_resnet_small", quick=True)
    results = {r.name: r for r in cifar_figures(settings, lines.append, str(tmp_path),
                                                **{"data.device_batch_size": 8, "train.steps": 4})}
    assert set(results) == {"cifar10_images_per_s", "cifar10_seconds_to_94"}
    speed = results["cifar10_images_per_s"]
    assert speed.value > 0 and speed.baseline > 0 and "nf_resnet_cifar" in speed.note
    run = results["cifar10_seconds_to_94"]
    assert 0 < run.value <= run.baseline and run.ok is (run.ratio < 1)  # noise data: ok only if reached
    assert "test top-1" in run.note and "4 steps" in run.note


@pytest.mark.slow  # the preset's net in bf16 on a CPU, with FakeData's 1,000 evaluation images
def test_cifar_figures_without_a_local_copy_measure_throughput_only(tmp_path):
    lines = []
    settings = Settings(torch.device("cpu"), "nf_resnet_small", quick=True)
    results = cifar_figures(settings, lines.append, str(tmp_path / "none"),
                            **{"data.device_batch_size": 4, "data.batch_size": 4, "train.steps": 2,
                               "data.num_examples": 8})
    assert [r.name for r in results] == ["cifar10_images_per_s"]
    assert any("no local CIFAR-10" in line and "none" in line for line in lines)


def test_throughput_figures_run_on_a_cpu_with_a_small_net():
    """The CUDA figures' code path (layouts, bf16 autocast, step timing), minus the MFU, which
    needs a known GPU peak."""
    lines = []
    settings = Settings(torch.device("cpu"), "nf_resnet_small", quick=True)
    results = gpu_figures(settings, lines.append, model="nf_resnet_small", image_size=16)
    assert [r.name for r in results] == ["nf_resnet_small_nhwc_vs_nchw"]
    assert results[0].value > 0 and results[0].baseline > 0 and "16 px" in results[0].note
