"""The process-wide torch settings of a run (cuDNN autotuning, TF32, deterministic algorithms,
Dynamo's caches) are set from its config at every start, never inherited from an earlier run."""

from __future__ import annotations

import os

import pytest
import torch

from study.cli import main
from study.config.run_config import make_config
from study.train.backends import compiled, configure_backends
from study.train.trainer import train

SMALL = {"data.name": "fake", "data.num_examples": 64, "data.image_size": 8, "data.batch_size": 16,
         "train.steps": 4, "train.device": "cpu", "agc.clipping": 0.01}


@pytest.fixture(autouse=True)
def restore_backends():
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    yield
    torch.use_deterministic_algorithms(saved[0])
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved[1:]


@pytest.mark.parametrize("tf32, convolutions, matmuls", [("convolutions", True, False), ("all", True, True),
                                                         ("off", False, False)])
def test_tf32_policy_and_cudnn_autotuning_follow_the_config(tf32, convolutions, matmuls):
    torch.backends.cuda.matmul.allow_tf32 = not matmuls  # left over by earlier code: overridden
    configure_backends(make_config({"train.tf32": tf32}).train, torch.device("cuda"))
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (convolutions, matmuls)
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    configure_backends(make_config({"train.tf32": tf32}).train, torch.device("cpu"))
    assert not torch.backends.cudnn.benchmark


def test_deterministic_runs_repeat_bit_for_bit_and_the_switch_does_not_leak(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    config = make_config({**SMALL, "train.deterministic": True})
    first, second = train(config), train(config)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    for key in ("train/loss", "val/loss", "test/loss"):
        assert first[key] == second[key]
    train(make_config(SMALL))  # the next run without the switch turns it off again
    assert not torch.are_deterministic_algorithms_enabled()


def test_new_keys_keep_recorded_runs_hashes():
    base = make_config(SMALL)
    assert make_config({**SMALL, "train.tf32": "convolutions", "train.deterministic": False}).config_hash() == \
        base.config_hash()
    assert make_config({**SMALL, "train.tf32": "off"}).config_hash() != base.config_hash()
    assert make_config({**SMALL, "train.deterministic": True}).config_hash() != base.config_hash()


def test_an_unknown_tf32_policy_is_one_line(capsys):
    assert main(["run", "quickstart", "--preset", "smoke", "--set", "train.tf32=fast", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train.tf32" in err and "convolutions" in err and len(err.strip().splitlines()) == 1


def test_with_agc_gradients_stay_in_its_flat_buffer_after_the_first_step(monkeypatch):
    """zero_grad(set_to_none=False) under AGC: autograd accumulates into the flat buffer's
    views, so AGC copies gradients in only on the first step (and none are allocated anew)."""
    from study.optim import agc as agc_module

    copies = []
    adopt = agc_module._FlatGroup.adopt_grads_

    def counting(self):
        copies.append(sum(p.grad is not view for p, view in zip(self.params, self.grad_views)))
        adopt(self)

    monkeypatch.setattr(agc_module._FlatGroup, "adopt_grads_", counting)
    train(make_config({**SMALL, "train.steps": 6}))
    assert len(copies) == 6 and copies[0] > 0 and copies[1:] == [0] * 5


def test_compiled_resets_dynamo_when_the_config_changes():
    """A worker training many configs: the graphs of the last config are dropped, so Dynamo's
    caches never reach the recompile limit (past it, a run would silently go eager)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    class Net(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.layer = torch.nn.Linear(4, width)

        def forward(self, x):
            return self.layer(x).relu()

    torch._dynamo.reset()
    x = torch.randn(2, 4)
    entries = []
    for width, seed in ((3, 0), (3, 1), (5, 0)):  # a new seed shares the graph; a new config does not
        net = Net(width)
        compiled(net, make_config({**SMALL, "seed": seed, "model.dropout": width / 10}))(x)
        entries.append(len(_debug_get_cache_entry_list(Net.forward.__code__)))
    assert entries == [1, 1, 1]
