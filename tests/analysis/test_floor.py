"""AGC's ε floor: the reachable SkipInit gain against the measured table and against the
framework's own AGC and SGD driving a gain as hard as they can, and which runs are
floor-bound."""

import math

import pandas as pd
import pytest
import torch

from analysis import floor
from analysis.runs import FLOOR_TAG_COLUMN
from study.optim.agc import adaptive_grad_clip_
from study.optim.sgd import lr_at
from study.record.tags import AGC_CLIPPED_FRACTION, AGC_MAX_SKIPINIT_GAIN


@pytest.mark.parametrize("peak_lr, clipping, steps, expected", [
    (0.1, 0.01, 300, 0.0016),   # paper batch 256, λ 0.01: measured max gain 0.0008
    (0.1, 0.04, 300, 0.061),
    (0.4, 0.01, 300, 0.061),    # only lr·λ matters
    (0.4, 0.01, 150, 0.0048),   # the agc-lambda search's budget
    (0.1, 0.01, 1200, 0.11),    # four times the budget: measured 0.014
])
def test_the_bound_reproduces_the_measured_table(peak_lr, clipping, steps, expected):
    bound = floor.reachable_gain(peak_lr, clipping, steps, round(0.05 * steps))
    assert bound == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("peak_lr, clipping", [(1.6, 0.01), (0.1, 0.16)])
def test_a_large_lr_times_lambda_escapes_the_floor(peak_lr, clipping):
    assert floor.reachable_gain(peak_lr, clipping, 300, 15) == math.inf


@pytest.mark.parametrize("nesterov", [True, False])
def test_the_bound_is_what_agc_and_sgd_reach_when_every_gradient_pushes_outwards(nesterov):
    """A gain at 0 whose gradient always pushes it away from 0 with far more than AGC lets
    through: clipped by the framework's AGC, stepped by torch's SGD on the trainer's
    schedule, it ends exactly at the bound (which no other gradient sequence can exceed)."""
    steps, warmup, peak, clipping = 300, 15, 0.1, 0.04
    gain = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([gain], lr=peak, momentum=0.9, nesterov=nesterov)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, warmup, peak)
        gain.grad = torch.tensor(-1e3, dtype=torch.float64)  # a descent step moves the gain up
        adaptive_grad_clip_([gain], clipping, eps=1e-3)
        optimizer.step()
    bound = floor.reachable_gain(peak, clipping, steps, warmup, nesterov=nesterov)
    assert gain.item() == pytest.approx(bound, rel=1e-9)


def _runs(**columns) -> pd.DataFrame:
    base = {"model.name": "nf_resnet_small", "model.norm": "nf", "agc.clipping": 0.01, "optim.lr": 0.1,
            "data.batch_size": 256, "train.steps": 300, "agc.exclude": ["classifier.weight"]}
    return pd.DataFrame([{**base, **{k: v[i] for k, v in columns.items()}} for i in range(len(next(iter(columns.values()))))])


def test_only_nf_nets_whose_gains_agc_clips_have_a_bound():
    frame = _runs(**{"model.norm": ["nf", "bn", "nf", "nf"], "agc.clipping": [0.01, 0.01, None, 0.01],
                     "agc.exclude": [["classifier.weight"], [], [], ["*.skipinit_gain"]]})
    bounds = floor.bounds(frame)
    assert bounds[0] == pytest.approx(0.0016, rel=0.03) and bounds[1:].isna().all()
    assert floor.floor_bound(frame).tolist() == [True, False, False, False]


def test_a_model_without_skipinit_gains_is_never_floor_bound():
    """A timm or plugin model records ``model.norm`` at its default (nf), but its AGC
    telemetry logs no SkipInit gain: it has none for the floor to hold."""
    frame = _runs(**{"model.name": ["timm/resnet10t", "nf_resnet_small"], AGC_CLIPPED_FRACTION: [0.3, 0.3],
                     AGC_MAX_SKIPINIT_GAIN: [None, 0.001]})
    assert floor.has_clipped_gains(frame).tolist() == [False, True]
    assert floor.floor_bound(frame).tolist() == [False, True]


def test_without_train_steps_the_schedule_comes_from_the_logged_step_count():
    frame = _runs(**{"train.steps": [None], "train.epochs": [10], "steps": [300.0], "epochs": [10.0]})
    assert floor.bounds(frame)[0] == pytest.approx(0.0016, rel=0.03)


def test_the_runs_own_record_wins_over_the_bound():
    """The trainer's tag first, then its logged largest gain, then the bound of the config."""
    frame = _runs(**{"optim.lr": [0.1, 0.1, 1.6, 1.6], AGC_MAX_SKIPINIT_GAIN: [0.5, None, 0.02, 2.0],
                     FLOOR_TAG_COLUMN: [None, None, None, "true"]})
    assert floor.floor_bound(frame).tolist() == [False, True, True, True]
