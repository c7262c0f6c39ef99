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


def test_the_parametrised_cases_clip_some_units_and_leave_others_bit_exact():
    """The reference comparison above is only worth something if the clip happens in part."""
    p = with_grad(SHAPES["conv"], torch.float64, 0, grad_scale=0.5)
    before = p.grad.clone()
    adaptive_grad_clip_([p], clipping=0.5)
    changed = (p.grad != before).flatten(1).any(dim=1)
    assert changed.any() and not changed.all()
    assert torch.equal(p.grad[~changed], before[~changed])


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


def _fresh_grads_(params, step):
    for i, p in enumerate(params):
        gen = torch.Generator().manual_seed(10 * step + i)
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)


def test_mixed_dtypes_across_steps_on_the_cached_flat_layout():
    """Every parameter has a gradient, so each step takes the flat buffers (one per dtype)."""
    params = [with_grad((5, 3), torch.float32, 0), with_grad((5, 3), torch.float64, 1),
              with_grad((4,), torch.float64, 2), with_grad((3, 2, 3, 3), torch.float32, 3)]
    agc = AGC(params, clipping=0.05)
    for step in range(3):
        _fresh_grads_(params, step)
        expected = [reference_agc(p, p.grad, 0.05, 1e-3, p.ndim > 1) for p in params]
        agc.clip_()
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.grad.double(), e, rtol=1e-6, atol=1e-7)
    by_dtype = {}
    for p in params:  # the flat path ran: each gradient is a view of its dtype's buffer
        by_dtype.setdefault(p.dtype, set()).add(p.grad.untyped_storage().data_ptr())
    assert all(len(storages) == 1 for storages in by_dtype.values()) and len(by_dtype) == 2


def test_a_parameter_without_a_gradient_is_skipped():
    params = [with_grad((5, 3), torch.float32, 0), with_grad((4,), torch.float64, 2),
              nn.Parameter(torch.randn(2, 2))]  # no grad: that step takes the per-tensor path
    agc = AGC(params, clipping=0.05)
    for step in range(2):
        _fresh_grads_(params[:2], step)
        expected = [reference_agc(p, p.grad, 0.05, 1e-3, p.ndim > 1) for p in params[:2]]
        agc.clip_()
        for p, e in zip(params[:2], expected):
            torch.testing.assert_close(p.grad.double(), e, rtol=1e-6, atol=1e-7)
        assert params[2].grad is None


@pytest.mark.parametrize("model_name", ["bn_resnet_cifar", "nf_resnet_small"])
def test_flat_buffers_start_every_tensor_on_a_16_byte_boundary(model_name):
    """Packed end to end, 41 of bn_resnet_cifar's 42 clipped tensors started off a 16-byte
    boundary, which sends foreach and cuDNN kernels to their slow paths."""
    from study.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_chans=3)
    params = agc_parameters(model)
    values = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p)
    agc = AGC(params, clipping=0.01)
    agc.clip_()
    assert len({p.untyped_storage().data_ptr() for p in params}) == 1  # all in one buffer
    for p, v in zip(params, values):
        assert p.data_ptr() % 16 == 0 and p.grad.data_ptr() % 16 == 0
        assert torch.equal(p, v)  # values kept
    weights, grads = agc._flat[0].weights, agc._flat[0].grads
    inside = torch.zeros_like(weights, dtype=torch.bool)
    for p in params:
        offset = (p.data_ptr() - weights.data_ptr()) // p.element_size()
        inside[offset:offset + p.numel()] = True
    assert not (weights[~inside].any() or grads[~inside].any())  # padding stays zero


def test_aligned_offsets_pad_with_whole_rows_inside_a_region():
    from study.optim.agc import _aligned_offsets

    # unit length 3: one region; each start must be a multiple of 4 and a whole row apart
    offsets, regions, total = _aligned_offsets([(3, 3), (6, 3), (9, 3), (5, 5)], align=4)
    assert offsets == [0, 12, 24, 36] and all(o % 4 == 0 for o in offsets)
    assert regions == [(0, 33, 3), (36, 41, 5)] and total == 41
    assert all((end - start) % length == 0 for start, end, length in regions)


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


@pytest.mark.cuda
def test_flat_layout_on_cuda_is_aligned_and_matches_the_per_tensor_path():
    import copy

    from study.models import build_model

    torch.manual_seed(0)
    flat = build_model("bn_resnet_cifar", num_classes=10, in_chans=3).cuda().to(memory_format=torch.channels_last)
    per_tensor = copy.deepcopy(flat)
    for m in (flat, per_tensor):
        m(torch.randn(4, 3, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last)).square().mean().backward()
    AGC(agc_parameters(flat), 0.01).clip_()
    AGC(agc_parameters(per_tensor), 0.01, flatten=False).clip_()
    for p, q in zip(agc_parameters(flat), agc_parameters(per_tensor)):
        assert p.data_ptr() % 16 == 0 and p.grad.data_ptr() % 16 == 0
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9)
