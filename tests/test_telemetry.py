"""AGC telemetry: what AGC accumulates on the device matches the norms computed directly, and
the trainer logs it per epoch and tags floor-bound runs."""

from __future__ import annotations

import pytest
import torch

from study.config.run_config import make_config
from study.config.study_file import load_preset
from study.models import build_model
from study.optim.agc import AGC, agc_parameters
from study.record.tags import AGC_FLOOR_BOUND, AGC_GROUP_PREFIX, FLOOR_GAIN, TELEMETRY_METRICS
from study.train.trainer import train


def _unit_norms(t: torch.Tensor) -> torch.Tensor:
    return (torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim))) if t.ndim > 1
            else torch.linalg.vector_norm(t).reshape(1))


@pytest.mark.parametrize("flatten", [True, False])
def test_read_stats_match_the_norms_of_two_steps(flatten):
    torch.manual_seed(0)
    model = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    params = agc_parameters(model)
    agc = AGC(params, 0.01, telemetry=True, flatten=flatten)
    expected = {id(p): [torch.zeros(len(_unit_norms(p))), torch.zeros(len(_unit_norms(p)))] for p in params}
    weight_max = {}
    for _ in range(2):
        model.zero_grad(set_to_none=False)
        model(torch.randn(8, 1, 8, 8)).square().sum().backward()
        for p in params:
            w, g = _unit_norms(p.detach()), _unit_norms(p.grad)
            expected[id(p)][0] += (g > 0.01 * w.clamp(min=1e-3)).float()
            expected[id(p)][1] += g / w.clamp(min=1e-3)
            weight_max[id(p)] = torch.maximum(weight_max.get(id(p), w), w)
        agc.clip_()
        with torch.no_grad():
            for p in params:
                p.sub_(0.5 * p.grad)
    stats = agc.read_stats()
    assert {id(s.param) for s in stats} == set(expected) and all(s.steps == 2 for s in stats)
    for s in stats:
        clipped, ratio = expected[id(s.param)]
        assert torch.equal(s.clipped, clipped)
        torch.testing.assert_close(s.ratio_sum, ratio, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(s.weight_max, weight_max[id(s.param)])
    assert 0 < sum(float(s.clipped.sum()) for s in stats) < sum(2 * s.clipped.numel() for s in stats)
    after = agc.read_stats()  # a new period: counts restart, the largest weight norm stays
    assert all(a.steps == 0 and float(a.clipped.sum()) == 0 for a in after)
    assert all(torch.equal(a.weight_max, s.weight_max) for a, s in zip(after, stats))


def test_agc_off_reads_nothing():
    model = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    assert AGC(agc_parameters(model), 0.01).read_stats() == []


class _Sink:
    def __init__(self):
        self.logged: list[dict[str, float]] = []

    def log_metrics(self, metrics, step):
        self.logged.append(dict(metrics))


def _run(**overrides):
    sink = _Sink()
    result = train(make_config({**load_preset("smoke"), **overrides}), tracker=sink)
    return result, sink.logged


def test_a_clipped_run_logs_telemetry_per_epoch_and_is_tagged_floor_bound():
    # λ 0.01 at lr 0.1 for 2 epochs: the gains cannot leave ε's floor.
    result, logged = _run(**{"agc.clipping": 0.01, "train.steps": None, "train.epochs": 2, "data.device_batch_size": 128})
    assert len(logged) >= 2 and all(set(TELEMETRY_METRICS) <= set(epoch) for epoch in logged)
    groups = {k.removeprefix(AGC_GROUP_PREFIX) for k in logged[-1] if k.startswith(AGC_GROUP_PREFIX)}
    assert {"stem", "stage0", "stage1", "stage2", "classifier"} == groups
    last = logged[-1]
    assert 0 < last["agc/clipped_fraction"] < 1
    assert last["agc/grad_weight_ratio_p50"] <= last["agc/grad_weight_ratio_p90"] <= last["agc/grad_weight_ratio_max"]
    gains = [epoch["agc/max_skipinit_gain"] for epoch in logged]
    assert gains == sorted(gains) and 0 < gains[-1] < 1e-3  # a running maximum, on the floor
    assert last["classifier/row_norm_mean"] <= last["classifier/row_norm_max"]
    assert result[AGC_FLOOR_BOUND] == "true"


def test_gains_that_leave_the_floor_are_not_tagged_floor_bound():
    # ε = 1 lifts the floor: λ·max(|g|, ε) lets the gains grow at lr 0.4 within a few steps.
    result, logged = _run(**{"agc.clipping": 0.16, "agc.eps": 1.0, "data.batch_size": 1024, "train.steps": 16,
                             "data.device_batch_size": 64})
    assert logged[-1]["agc/max_skipinit_gain"] > FLOOR_GAIN
    assert result[AGC_FLOOR_BOUND] == "false"


def test_an_unclipped_run_logs_its_gains_but_no_agc_counts_nor_tag():
    result, logged = _run(**{"train.steps": 4})
    assert "agc/max_skipinit_gain" in logged[-1] and "agc/clipped_fraction" not in logged[-1]
    assert AGC_FLOOR_BOUND not in result
