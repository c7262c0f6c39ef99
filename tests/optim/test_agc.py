"""AGC against an independent float64 per-unit loop (Brock et al. 2021, §4)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.optim.agc import AGC, adaptive_grad_clip_, agc_parameters


def reference_agc(weight, grad, clipping, eps, unit_rows):
    """Float64 loop over units: rows of dim 0 when ``unit_rows``, else the whole tensor."""
    w, g = weight.detach().double(), grad.detach().double().clone()
    units = range(w.shape[0]) if unit_rows else [None]
    for i in units:
        wi = w if i is None else w[i]
        gi = g if i is None else g[i]
        w_norm = math.sqrt(sum(x * x for x in wi.flatten().tolist()))
        g_norm = math.sqrt(sum(x * x for x in gi.flatten().tolist()))
        max_norm = clipping * max(w_norm, eps)
        if g_norm > max_norm:
            gi.mul_(max_norm / max(g_norm, 1e-6))
    return g


def with_grad(shape, dtype, seed, weight_scale=1.0, grad_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    p = nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype) * weight_scale)
    p.grad = torch.randn(shape, generator=gen, dtype=dtype) * grad_scale
    return p


SHAPES = {
    "conv": (6, 4, 3, 3),
    "grouped_conv": tuple(nn.Conv2d(8, 8, 3, groups=4).weight.shape),  # (8, 2, 3, 3)
    "linear": (5, 7),
    "vector": (6,),
    "scalar": (),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["unit", "layer"])
@pytest.mark.parametrize("kind", list(SHAPES))
def test_matches_float64_loop_reference(kind, mode, dtype):
    # grad scale chosen so that, with clipping 0.5, some units clip and some do not
    params = [with_grad(SHAPES[kind], dtype, seed, grad_scale=0.5) for seed in range(4)]
    expected = [reference_agc(p, p.grad, 0.5, 1e-3, mode == "unit" and p.ndim > 1)
                for p in params]
    adaptive_grad_clip_(params, clipping=0.5, mode=mode)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for p, e in zip(params, expected):
        assert p.grad.dtype == dtype
        torch.testing.assert_close(p.grad.double(), e, rtol=tol, atol=tol)


def test_some_units_clipped_and_some_not_in_the_parametrised_cases():
    p = with_grad(SHAPES["conv"], torch.float64, 0, grad_scale=0.5)
    ratio = p.grad.flatten(1).norm(dim=1) / p.detach().flatten(1).norm(dim=1)
    assert (ratio > 0.5).any() and (ratio < 0.5).any()


def test_rows_straddling_the_threshold():
    w = torch.randn(6, 5, dtype=torch.float64)
    factors = torch.tensor([0.05, 0.2, 0.09, 0.11, 1.0, 0.0], dtype=torch.float64)
    g = w * factors[:, None]  # ||G_i|| / ||W_i|| = factor_i exactly
    p = nn.Parameter(w.clone())
    p.grad = g.clone()
    adaptive_grad_clip_([p], clipping=0.1)
    under = factors <= 0.1
    assert torch.equal(p.grad[under], g[under])  # untouched, bit for bit
    torch.testing.assert_close(p.grad[~under].norm(dim=1), 0.1 * w[~under].norm(dim=1))
    torch.testing.assert_close(p.grad[~under], 0.1 * w[~under])  # direction kept


def test_gradients_under_threshold_are_bit_exact():
    params = [with_grad(s, torch.float32, i, grad_scale=1e-4)
              for i, s in enumerate(SHAPES.values())]
    before = [p.grad.clone() for p in params]
    AGC(params, clipping=0.01).clip_()
    for p, b in zip(params, before):
        assert torch.equal(p.grad, b)


def test_zero_weights_sit_on_the_eps_floor():
    p = nn.Parameter(torch.zeros(4, 3))
    p.grad = torch.ones(4, 3)
    adaptive_grad_clip_([p], clipping=0.02, eps=1e-3)
    torch.testing.assert_close(p.grad.norm(dim=1), torch.full((4,), 0.02 * 1e-3))
    gain = nn.Parameter(torch.zeros(()))  # a SkipInit gain at init
    gain.grad = torch.tensor(5.0)
    adaptive_grad_clip_(gain, clipping=0.02)
    assert gain.grad.item() == pytest.approx(0.02 * 1e-3)


def test_zero_gradient_stays_zero():
    p = nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.zeros(3, 2)
    adaptive_grad_clip_([p], clipping=0.01)
    assert torch.equal(p.grad, torch.zeros(3, 2))


def test_linear_units_are_rows_not_columns():
    """The known port bug reduced dim 0 of a Linear weight (per input column)."""
    w = torch.randn(3, 8, dtype=torch.float64)
    w[0] *= 10  # rows of very different norms
    g = torch.randn(3, 8, dtype=torch.float64)
    p = nn.Parameter(w.clone())
    p.grad = g.clone()
    adaptive_grad_clip_([p], clipping=0.1)
    correct = reference_agc(w, g, 0.1, 1e-3, unit_rows=True)
    buggy = reference_agc(w.t(), g.t(), 0.1, 1e-3, unit_rows=True).t()  # per column
    torch.testing.assert_close(p.grad, correct)
    assert not torch.allclose(p.grad, buggy, rtol=1e-3, atol=1e-6)


def test_layer_mode_uses_the_whole_tensor():
    w = torch.randn(4, 6, dtype=torch.float64)
    p = nn.Parameter(w.clone())
    p.grad = torch.randn(4, 6, dtype=torch.float64)
    expected = reference_agc(w, p.grad, 0.1, 1e-3, unit_rows=False)
    adaptive_grad_clip_([p], clipping=0.1, mode="layer")
    torch.testing.assert_close(p.grad, expected)
    torch.testing.assert_close(p.grad.norm(), 0.1 * w.norm())


def test_channels_last_weights():
    conv = nn.Conv2d(4, 6, 3).double().to(memory_format=torch.channels_last)
    conv.weight.grad = torch.randn_like(conv.weight)
    expected = reference_agc(conv.weight, conv.weight.grad, 0.01, 1e-3, unit_rows=True)
    adaptive_grad_clip_(conv.parameters(), clipping=0.01)
    torch.testing.assert_close(conv.weight.grad, expected)


def test_mixed_dtypes_missing_grads_and_cached_plan_across_steps():
    params = [with_grad((5, 3), torch.float32, 0), with_grad((5, 3), torch.float64, 1),
              with_grad((4,), torch.float64, 2), nn.Parameter(torch.randn(2, 2))]  # no grad
    agc = AGC(params, clipping=0.05)
    for step in range(3):
        for i, p in enumerate(params[:3]):
            gen = torch.Generator().manual_seed(10 * step + i)
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        expected = [reference_agc(p, p.grad, 0.05, 1e-3, p.ndim > 1) for p in params[:3]]
        agc.clip_()
        for p, e in zip(params[:3], expected):
            torch.testing.assert_close(p.grad.double(), e, rtol=1e-6, atol=1e-7)
        assert params[3].grad is None


def test_class_and_function_agree_on_a_real_model():
    from study.models import build_model

    torch.manual_seed(0)
    model = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    model(torch.randn(4, 1, 16, 16)).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    params = agc_parameters(model)
    adaptive_grad_clip_(params, clipping=0.01)
    functional = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    AGC(params, clipping=0.01).clip_()
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, functional[n]), n
    classifier = model.get_classifier().weight
    name = next(n for n, p in model.named_parameters() if p is classifier)
    assert torch.equal(classifier.grad, grads[name])  # excluded: never clipped



def test_flat_layout_trains_like_the_per_tensor_path():
    """Three SGD steps: flat buffers (gradients zeroed in place, or fresh each step) match the
    per-tensor path bit for bit, and the clipped tensors end up sharing one storage."""
    import copy

    from study.models import build_model

    torch.manual_seed(0)
    reference = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    models = {"per_tensor": reference, "flat_in_place": copy.deepcopy(reference),
              "flat_fresh": copy.deepcopy(reference)}
    agcs = {name: AGC(agc_parameters(m), clipping=0.01, flatten=name != "per_tensor")
            for name, m in models.items()}
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.5) for name, m in models.items()}
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 1, 16, 16, generator=gen)
        for name, m in models.items():
            m(x).square().mean().backward()
            agcs[name].clip_()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=name != "flat_in_place")
    for name in ("flat_in_place", "flat_fresh"):
        for (n, p), q in zip(models[name].named_parameters(), reference.parameters()):
            assert torch.equal(p, q), (name, n)
    clipped = agc_parameters(models["flat_in_place"])
    assert len({p.untyped_storage().data_ptr() for p in clipped}) == 1
    assert len({p.grad.untyped_storage().data_ptr() for p in clipped}) == 1


def test_flat_layout_follows_replaced_parameter_data():
    conv = nn.Conv2d(4, 6, 3).double()
    agc = AGC(conv.parameters(), clipping=0.01)
    conv.weight.data = (conv.weight.detach() * 3).to(memory_format=torch.channels_last)
    for p in conv.parameters():
        p.grad = torch.randn_like(p)
    expected = [reference_agc(p, p.grad, 0.01, 1e-3, p.ndim > 1) for p in conv.parameters()]
    agc.clip_()
    for p, e in zip(conv.parameters(), expected):
        torch.testing.assert_close(p.grad, e)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # layout kept

@pytest.mark.parametrize("kwargs", [{"clipping": -0.01}, {"clipping": 0.0},
                                    {"clipping": float("nan")}, {"clipping": 0.01, "eps": -1.0},
                                    {"clipping": 0.01, "mode": "row"}])
def test_bad_arguments_raise_config_error(kwargs):
    p = with_grad((2, 2), torch.float32, 0)
    with pytest.raises(ConfigError):
        adaptive_grad_clip_([p], **kwargs)
    with pytest.raises(ConfigError):
        AGC([p], **kwargs)


class Net(nn.Module):
    """A classifier not called ``classifier``: selection must go by get_classifier()."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(1, 4, 3)
        self.gain = nn.Parameter(torch.ones(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    def get_classifier(self) -> nn.Linear:
        return self.head[1]


def test_agc_parameters_excludes_classifier_by_identity():
    net = Net()
    selected = agc_parameters(net)
    assert all(p is not net.head[1].weight for p in selected)
    assert any(p is net.head[1].bias for p in selected)
    assert len(selected) == len(list(net.parameters())) - 1
    both = agc_parameters(net, exclude=("classifier.weight", "classifier.bias"))
    assert len(both) == len(selected) - 1
    assert {id(p) for p in agc_parameters(net, exclude=())} == {id(p) for p in net.parameters()}


def test_agc_parameters_patterns_and_errors():
    net = Net()
    selected = agc_parameters(net, exclude=("classifier.weight", "body.*"))
    assert {id(p) for p in selected} == {id(net.gain), id(net.head[1].bias)}
    with pytest.raises(ConfigError, match="nothing|matches no"):
        agc_parameters(net, exclude=("stages.9.*",))
    plain = nn.Sequential(nn.Linear(2, 2))  # no get_classifier: entries are patterns
    with pytest.raises(ConfigError):
        agc_parameters(plain)
    assert len(agc_parameters(plain, exclude=("0.weight",))) == 1


def test_agc_parameters_on_nfnet_f0():
    from study.models import build_model

    with torch.device("meta"):
        model = build_model("nfnet_f0")
    named = dict(model.named_parameters())
    selected = {id(p) for p in agc_parameters(model)}
    unclipped = [n for n, p in named.items() if id(p) not in selected]
    assert len(named) == 233
    assert [named[n] for n in unclipped] == [model.get_classifier().weight]
    assert id(model.get_classifier().bias) in selected  # official: the bias is clipped
