"""SAM: ascent slice, reference step, exact restore, BatchNorm statistics, DDP no_sync."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from study.errors import ConfigError
from study.optim import SAM


def tiny_model(bn=False):
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)]
    return nn.Sequential(*layers).double()


def batch(n):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(n, 2, 5, 5, generator=gen, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=gen))


def reference_perturbation(model, inputs, targets, rho):
    """e = rho * g / ||g|| with g the gradient on exactly ``inputs``, by torch.autograd.grad."""
    ref = copy.deepcopy(model)
    params = list(ref.parameters())
    grads = torch.autograd.grad(F.cross_entropy(ref(inputs), targets), params)
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    return [rho * g / norm for g in grads]


def test_fraction_ascends_on_the_first_ceil_fraction_examples():
    model = tiny_model()
    inputs, targets = batch(11)  # ceil(0.2 * 11) = 3; floor or round would give 2
    sam = SAM(model, rho=0.05, mode="fraction", fraction=0.2)
    assert sam.ascent_size(11) == 3
    before = [p.detach().clone() for p in model.parameters()]
    expected = reference_perturbation(model, inputs[:3], targets[:3], 0.05)
    wrong = reference_perturbation(model, inputs[:2], targets[:2], 0.05)
    sam.ascend_(F.cross_entropy, inputs, targets)
    moved = [p.detach() - b for p, b in zip(model.parameters(), before)]
    for m, e, w in zip(moved, expected, wrong):
        torch.testing.assert_close(m, e, rtol=1e-9, atol=1e-12)
    assert not all(torch.allclose(m, w) for m, w in zip(moved, wrong))
    assert all(p.grad is None for p in model.parameters())
    assert math.isclose(torch.sqrt(sum((m * m).sum() for m in moved)).item(), 0.05, rel_tol=1e-9)
    sam.restore_()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_full_mode_step_matches_two_pass_reference():
    model = tiny_model()
    inputs, targets = batch(8)
    rho, lr = 0.1, 0.5
    # hand-written SAM step: g1 at W, e = rho g1/||g1||, g2 at W + e, W <- W - lr g2
    ref = copy.deepcopy(model)
    w = [p.detach().clone() for p in ref.parameters()]
    g1 = torch.autograd.grad(F.cross_entropy(ref(inputs), targets), list(ref.parameters()))
    norm = torch.sqrt(sum((g * g).sum() for g in g1))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), g1):
            p.add_(rho * g / norm)
    g2 = torch.autograd.grad(F.cross_entropy(ref(inputs), targets), list(ref.parameters()))
    expected = [wi - lr * gi for wi, gi in zip(w, g2)]

    sam = SAM(model, rho=rho, mode="full")
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sam.ascend_(F.cross_entropy, inputs, targets)
    F.cross_entropy(model(inputs), targets).backward()
    sam.restore_()
    opt.step()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12)


def test_restore_is_bit_exact_and_keeps_the_descent_gradient():
    model = tiny_model().float()
    inputs, targets = batch(6)
    inputs = inputs.float()
    before = [p.detach().clone() for p in model.parameters()]
    sam = SAM(model, rho=0.3, mode="full")
    sam.ascend_(F.cross_entropy, inputs, targets)
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    F.cross_entropy(model(inputs), targets).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    sam.restore_()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_ascent_leaves_batchnorm_running_stats_untouched():
    model = tiny_model(bn=True)
    bn = model[1]
    inputs, targets = batch(10)
    stats = {k: v.clone() for k, v in bn.state_dict().items()
             if k.startswith(("running", "num_batches"))}
    sam = SAM(model, rho=0.05, mode="fraction", fraction=0.5)
    sam.ascend_(F.cross_entropy, inputs, targets)
    for k, v in stats.items():
        assert torch.equal(bn.state_dict()[k], v), k
    # the descent pass updates them exactly once, as a plain step at W + e would
    reference = copy.deepcopy(model)
    F.cross_entropy(model(inputs), targets).backward()
    reference(inputs)
    sam.restore_()
    for k in stats:
        assert torch.equal(bn.state_dict()[k], reference[1].state_dict()[k]), k
    assert bn.num_batches_tracked.item() == 1


def test_existing_gradients_are_discarded():
    model = tiny_model()
    inputs, targets = batch(5)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e3)
    before = [p.detach().clone() for p in model.parameters()]
    expected = reference_perturbation(model, inputs, targets, 0.05)
    SAM(model, rho=0.05, mode="full").ascend_(F.cross_entropy, inputs, targets)
    for p, b, e in zip(model.parameters(), before, expected):
        torch.testing.assert_close(p.detach() - b, e, rtol=1e-9, atol=1e-12)


def test_ascent_under_ddp_runs_without_gradient_sync(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(tiny_model())
        syncing = []
        ddp.module.register_forward_hook(lambda *_: syncing.append(ddp.require_backward_grad_sync))
        inputs, targets = batch(10)
        sam = SAM(ddp, rho=0.05, mode="fraction")
        sam.ascend_(F.cross_entropy, inputs, targets)
        F.cross_entropy(ddp(inputs), targets).backward()
        sam.restore_()
        assert syncing == [False, True]
    finally:
        dist.destroy_process_group()


def test_misuse_and_bad_arguments():
    model = tiny_model()
    sam = SAM(model)
    with pytest.raises(RuntimeError):
        sam.restore_()
    inputs, targets = batch(5)
    sam.ascend_(F.cross_entropy, inputs, targets)
    with pytest.raises(RuntimeError):
        sam.ascend_(F.cross_entropy, inputs, targets)
    for kwargs in [{"rho": 0.0}, {"rho": -1.0}, {"mode": "off"}, {"fraction": 0.0},
                   {"fraction": 1.5}]:
        with pytest.raises(ConfigError):
            SAM(model, **kwargs)


def test_ascent_runs_under_the_given_autocast_and_forward():
    """The trainer passes its autocast and its (compiled) forward: the ascent must use both,
    or under bf16 / ``train.compile`` it costs an fp32 eager pass the paper never paid."""
    model = tiny_model().float()
    inputs, targets = batch(10)
    inputs = inputs.float()
    seen, calls = [], []
    model[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))

    def forward(x):  # stands in for torch.compile(model): another callable over the same module
        calls.append(len(x))
        return model(x)

    sam = SAM(model, rho=0.05, mode="fraction", fraction=0.2)
    sam.ascend_(F.cross_entropy, inputs, targets, forward=forward,
                autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert seen == [torch.bfloat16] and calls == [2]
    sam.restore_()
    seen.clear()
    sam.ascend_(F.cross_entropy, inputs, targets)  # no autocast given: fp32, the model itself
    assert seen == [torch.float32] and calls == [2]
    sam.restore_()


def test_ascent_scales_the_loss_and_keeps_the_direction():
    model = tiny_model()
    inputs, targets = batch(8)
    moves, scaled_losses = [], []

    def grad_scaler(loss):  # as GradScaler.scale: a larger loss, the same direction
        scaled_losses.append(loss.detach())
        return loss * 1024.0

    for scale in (None, grad_scaler):
        before = [p.detach().clone() for p in model.parameters()]
        sam = SAM(model, rho=0.05, mode="full")
        sam.ascend_(F.cross_entropy, inputs, targets, scale=scale)
        moves.append([p.detach() - b for p, b in zip(model.parameters(), before)])
        sam.restore_()
    assert len(scaled_losses) == 1
    for plain, scaled in zip(*moves):
        torch.testing.assert_close(plain, scaled, rtol=1e-9, atol=1e-12)


def test_a_compiled_module_is_accepted_as_the_forward():
    """``torch.compile`` returns a module without a truth value (``len()`` raises): the
    forward must be taken as given, not through ``forward or model``."""
    model = tiny_model()
    inputs, targets = batch(6)
    sam = SAM(model, rho=0.05, mode="full")
    sam.ascend_(F.cross_entropy, inputs, targets, forward=torch.compile(model, backend="eager"))
    sam.restore_()
