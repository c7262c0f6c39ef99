"""`nfstudy bench`: the JSON contract (no timing assertions: machines are noisy)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from study.bench.gpu import cifar_figures, gpu_figures, images_per_s
from study.bench.harness import Settings, column, interleaved, judge, median_interval, paired
from study.bench.peaks import peak_bf16_flops
from study.cli import main

REQUIRED = {"trainer_overhead", "agc_vectorised_vs_loop", "agc_telemetry", "agc_step_overhead", "sam_fraction",
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
        assert r["rounds"] == 1 and math.isclose(r["ratio"], r["value"] / r["baseline"], rel_tol=1e-9)
        assert r["low"] == r["high"]  # one round: no spread to speak of


def test_paired_alternates_order_and_keeps_every_round():
    calls = []
    a = iter([100.0, 1.0, 3.0, 2.0])  # warm-up value first, then three measurements
    b = iter([100.0, 10.0, 30.0, 20.0])
    value, baseline = paired(lambda: calls.append("a") or next(a),
                             lambda: calls.append("b") or next(b), repeats=3)
    assert (value, baseline) == ([1.0, 3.0, 2.0], [10.0, 30.0, 20.0])  # warm-ups discarded
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]


def test_interleaved_rotates_the_order_and_keeps_each_round():
    calls = []

    def measure(name, values):
        values = iter(values)
        return lambda: calls.append(name) or next(values)

    rounds = interleaved({"a": measure("a", [{"step": 1.0, "run": 9.0}, {"step": 3.0, "run": 7.0},
                                             {"step": 2.0, "run": 8.0}]),
                          "b": measure("b", [{"step": 10.0}, {"step": 30.0}, {"step": 20.0}]),
                          "c": measure("c", [{"run": 5.0}, {"run": 4.0}, {"run": 6.0}])}, repeats=3)
    assert column(rounds, "a", "run") == [9.0, 7.0, 8.0] and column(rounds, "b", "step") == [10.0, 30.0, 20.0]
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_rounds_are_added_until_the_spread_is_under_the_tolerance():
    """trainer_overhead's tolerance is 0.05: two outliers among the first rounds keep the
    min–max wide until 8 rounds, whose 93% interval leaves one value out at each end."""
    noisy = iter([1.2, 0.9] + [1.0] * 20)
    value, baseline = paired(lambda: next(noisy), lambda: 1.0, 3, warmup=False, name="trainer_overhead",
                             max_repeats=11)
    result = judge("trainer_overhead", value, baseline, "ms/step")
    assert result.rounds == 8 and result.resolved and (result.low, result.high) == (1.0, 1.0)
    assert result.low <= result.ratio <= result.high
    stuck = judge("trainer_overhead", [1.2, 0.9, 1.1], [1.0] * 3, "ms/step")
    assert stuck.resolved is False and "unresolved: spread 0.300 >= tolerance 0.05" in stuck.note


@pytest.mark.parametrize("n, k_low, coverage", [(3, 1, 0.75), (5, 1, 0.9375), (8, 2, 1 - 2 * 9 / 256),
                                                (11, 3, 1 - 2 * 67 / 2048)])
def test_median_interval_is_the_widest_order_statistics_needed_for_90_percent(n, k_low, coverage):
    low, high, got = median_interval(list(range(n, 0, -1)))  # unsorted on purpose
    assert (low, high) == (k_low, n + 1 - k_low) and got == pytest.approx(coverage)


def test_peaks_are_looked_up_by_exact_name():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12 and peak_bf16_flops("NVIDIA H100 NVL") == 835e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12 and peak_bf16_flops("NVIDIA B200") == 2250e12
    assert peak_bf16_flops("NVIDIA L40S") == 362e12 and peak_bf16_flops("NVIDIA H800") == 989e12
    assert peak_bf16_flops("NVIDIA H100") is None  # no guessing from a part of a name
    assert peak_bf16_flops("NVIDIA GeForce RTX 4090") is None


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "bench --device: got 'tpu'"),
    (["--model", "nope"], "bench --model: got 'nope'"),
    (["--threads", "0"], "bench --threads: got 0"),
    (["--only", "gpu"], "bench --only: got 'gpu'"),
    (["--only", "speed"], "bench --only: got 'speed'"),
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


def test_throughput_counts_the_training_loop_not_the_evaluation(monkeypatch):
    """GPU images/s leave each epoch's validation pass out, as the bare timm loop has none:
    a slow evaluation must not change the figure."""
    import time

    import study.train.trainer as trainer

    settings = Settings(torch.device("cpu"), "nf_resnet_small", quick=True)
    from study.bench.gpu import gpu_config

    config = gpu_config(settings, "nf_resnet_small", 16, **{"train.steps": 6})
    fast = images_per_s(config)()
    evaluate = trainer.evaluate

    def slow_evaluate(*args, **kwargs):
        start = time.perf_counter()
        while time.perf_counter() - start < 0.5:  # busy, so a CPU-time clock would count it too
            pass
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", slow_evaluate)
    slow = images_per_s(config)()
    assert slow > 0.5 * fast  # an evaluation inside the timing would have cut it to a fraction
