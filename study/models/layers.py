"""Building blocks of normalizer-free networks (Brock et al. 2021 §3, arXiv 2102.06171;
[I]: Brock, De, Smith, ICLR 2021, arXiv 2101.08692).

Scaled Weight Standardisation, nonlinearity gains γ, Squeeze-Excite, stochastic depth,
SkipInit and the hook point that signal-propagation plots read. Blocks never import models.

Official code: ``google-deepmind/deepmind-research``, ``nfnets/base.py``. Where the numerics
differ from it, the class docstring says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# γ per nonlinearity: the official constants (``nfnets/base.py``; [I]), chosen so that
# γ·act(z) has unit variance for z ~ N(0, 1): γ = 1 / sqrt(Var(act(z))). They were estimated by
# sampling, so ReLU's differs from the analytic sqrt(2 / (1 − 1/π)) = 1.71286 by 6e-4 (relative).
NONLINEARITY_GAINS: dict[str, float] = {
    "identity": 1.0,
    "relu": 1.7139588594436646,
    "gelu": 1.7015043497085571,
    "silu": 1.7881293296813965,
}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# The official code uses jax.nn.gelu, whose default is the tanh approximation.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": _identity,
    "relu": F.relu,
    "gelu": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
}


class GammaAct(nn.Module):
    """A nonlinearity times its gain γ, so that γ·act(z) has unit variance for z ~ N(0, 1).

    [I]; official ``base.nonlinearities``.

    Args:
        activation: ``"relu"``, ``"gelu"`` (tanh approximation, as JAX's default),
            ``"silu"`` or ``"identity"``.
        gamma: the gain; ``None`` takes :data:`NONLINEARITY_GAINS` (BatchNorm nets pass 1.0).

    Raises:
        ValueError: unknown activation (a model definition's bug, not user input).

    Example:
        >>> act = GammaAct("relu")  # 1.7139588594436646 · relu(x)
    """

    def __init__(self, activation: str = "relu", *, gamma: float | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: got {activation!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
            )
        self.activation = activation
        self.gamma = NONLINEARITY_GAINS[activation] if gamma is None else float(gamma)
        self._fn = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._fn(x)
        return out if self.gamma == 1.0 else out * self.gamma

    def extra_repr(self) -> str:
        return f"{self.activation}, gamma={self.gamma}"


class ScaledStdConv2d(nn.Conv2d):
    """Conv2d with Scaled Weight Standardisation and a learnable gain per output channel.

    Ŵ = gain · (W − mean) / (std · sqrt(fan_in)), mean and population std over the fan-in
    (OIHW dims 1, 2, 3), computed as the official fusion
    ``W · rsqrt(max(fan_in · var, eps)) · gain − mean · (same)`` (paper §3, [I] §4.3).
    ``gain`` has shape ``(out_channels,)`` (init 1), ``bias`` is added after the conv (init 0);
    ``weight`` starts N(0, 1/fan_in) as the official ``VarianceScaling(1, fan_in, normal)``.

    In eval mode without autograd (``model.eval()`` under ``torch.no_grad()`` or
    ``torch.inference_mode()``), Ŵ is computed once and reused until the weight or gain
    changes (in-place updates such as EMA or ``load_state_dict`` are detected through the
    tensors' version counters) or the module returns to training mode. The cached Ŵ costs one
    weight-sized tensor per layer.

    Differences from the official code: PyTorch pads symmetrically (``padding=k//2`` in the
    models) where JAX's ``SAME`` pads a stride-2 3×3 conv only at the bottom/right; output
    shapes are the same, border values differ slightly.

    Args: as :class:`torch.nn.Conv2d`, plus
        eps: floor on fan_in · var (official 1e-4).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | str | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        eps: float = 1e-4,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(out_channels, device=device, dtype=dtype))
        self._folded: torch.Tensor | None = None
        self._folded_key: tuple | None = None

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="linear")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        # nn.Conv2d.__init__ calls this before ``gain`` exists.
        if isinstance(getattr(self, "gain", None), nn.Parameter):
            nn.init.ones_(self.gain)

    def standardized_weight(self) -> torch.Tensor:
        """Return Ŵ, the weight the convolution uses (differentiable in weight and gain)."""
        fan_in = self.weight[0].numel()
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, correction=0)
        scale = torch.rsqrt(torch.clamp(var * fan_in, min=self.eps)) * self.gain.view(-1, 1, 1, 1)
        return self.weight * scale - mean * scale

    def _weight_for_forward(self) -> torch.Tensor:
        if (
            self.training
            or torch.is_grad_enabled()
            or self.weight.is_meta
            or torch.compiler.is_compiling()
        ):
            return self.standardized_weight()
        key = (
            self.weight._version, self.gain._version, self.weight.data_ptr(),
            self.gain.data_ptr(), self.weight.device, self.weight.dtype,
        )
        if key != self._folded_key:
            self._folded = self.standardized_weight()
            self._folded_key = key
        return self._folded

    def train(self, mode: bool = True) -> ScaledStdConv2d:
        if mode:
            self._folded, self._folded_key = None, None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self._weight_for_forward(), self.bias)


def create_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    groups: int = 1,
    bias: bool = True,
    weight_standardization: bool = True,
) -> nn.Conv2d:
    """A "same"-padded conv: :class:`ScaledStdConv2d`, or a plain conv with the same init.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, bias: as ``nn.Conv2d``.
        weight_standardization: ``False`` gives ``nn.Conv2d`` with weights N(0, 1/fan_in),
            the "unscaled" control of [I] and the BatchNorm twins.

    Returns:
        The conv module, padded by ``kernel_size // 2``.
    """
    args = (in_channels, out_channels, kernel_size)
    kwargs = dict(stride=stride, padding=kernel_size // 2, groups=groups, bias=bias)
    if weight_standardization:
        return ScaledStdConv2d(*args, **kwargs)
    conv = nn.Conv2d(*args, **kwargs)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def create_norm_act(channels: int, activation: str, *, normalization: str) -> nn.Module:
    """The "norm + activation" slot before each conv of a pre-activation block.

    Args:
        channels: channels of the input.
        activation: a key of :data:`ACTIVATIONS`.
        normalization: ``"nf"`` gives γ·act (no normaliser, paper §3); ``"batch"`` gives
            BatchNorm2d then the plain activation (γ = 1), the BN twins of Table 6 / [I].

    Returns:
        The module.

    Raises:
        ValueError: unknown normalization or activation (a model definition's bug).
    """
    if normalization == "nf":
        return GammaAct(activation)
    if normalization == "batch":
        return nn.Sequential(nn.BatchNorm2d(channels), GammaAct(activation, gamma=1.0))
    raise ValueError(f"normalization: got {normalization!r}; allowed: 'nf', 'batch'")


class SqueezeExcite(nn.Module):
    """Squeeze-Excite gate: x · gate_gain · sigmoid(FC(act(FC(avgpool x)))) (Hu et al. 2018;
    NFNets, arXiv 2102.06171, §4.1).

    Plain ``nn.Linear`` layers with bias (not weight-standardised), ReLU inside as in the
    official ``base.SqueezeExcite``; the ×2 keeps the expected gate at 1 at initialisation.
    Initialised as Haiku's ``hk.Linear`` (the official layers): weights from a normal with
    std 1/√fan_in truncated at ±2 std, biases zero (PyTorch's default is uniform).

    Args:
        channels: input = output channels.
        rd_ratio: hidden width as a fraction of ``channels`` (official 0.5).
        activation: nonlinearity between the two layers (no γ).
        gate_gain: the factor on the sigmoid (official 2).
    """

    def __init__(
        self, channels: int, rd_ratio: float = 0.5, *, activation: str = "relu",
        gate_gain: float = 2.0,
    ) -> None:
        super().__init__()
        hidden = max(1, int(channels * rd_ratio))
        self.fc0 = nn.Linear(channels, hidden)
        self.act = GammaAct(activation, gamma=1.0)
        self.fc1 = nn.Linear(hidden, channels)
        self.gate_gain = gate_gain
        for fc in (self.fc0, self.fc1):
            std = fc.in_features ** -0.5
            nn.init.trunc_normal_(fc.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc1(self.act(self.fc0(x.mean(dim=(2, 3)))))
        return x * (self.gate_gain * torch.sigmoid(s))[:, :, None, None]


class StochasticDepth(nn.Module):
    """Drops the residual branch of whole samples: one Bernoulli(1 − rate) mask per sample.

    Huang et al. 2016; official ``base.StochDepth``, which does not rescale the kept samples by
    1/keep (``scale_by_keep=False``). Identity in eval mode or at rate 0.

    Args:
        rate: probability of dropping a sample's branch, in [0, 1).
        scale_by_keep: divide kept samples by 1 − rate (timm's default; not the paper's).
    """

    def __init__(self, rate: float, *, scale_by_keep: bool = False) -> None:
        super().__init__()
        self.rate = float(rate)
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if self.scale_by_keep:
            mask = mask / keep
        return x * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}, scale_by_keep={self.scale_by_keep}"


def skipinit_gain(enabled: bool) -> nn.Parameter | None:
    """SkipInit's scalar gain on a residual branch, initialised to 0 (De & Smith 2020).

    Assign it to a block attribute named ``skipinit_gain``: the optimizer keeps it out of
    weight decay by that name.

    Args:
        enabled: ``False`` returns ``None`` (no gain, i.e. a branch gain fixed at 1), used by
            signal-propagation plots at initialisation.

    Returns:
        A 0-dimensional parameter holding 0, or ``None``.
    """
    return nn.Parameter(torch.zeros(())) if enabled else None


def init_classifier_(fc: nn.Linear, std: float) -> None:
    """Initialise a classifier in place: weight N(0, std²) (official std 0.01), bias 0.

    Args:
        fc: the final linear layer.
        std: standard deviation; 0 gives an all-zero weight (the small nets, docs/scale.md).
    """
    if std == 0.0:
        nn.init.zeros_(fc.weight)
    else:
        nn.init.normal_(fc.weight, 0.0, std)
    nn.init.zeros_(fc.bias)


class BranchTap(nn.Identity):
    """Marks a residual block's branch output (before stochastic depth and SkipInit).

    Every residual block holds one as ``branch_tap`` and an int attribute ``stage``;
    :func:`study.models.spp.signal_propagation` finds blocks by it and hooks both.
    """


def residual_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The NF residual step h + α · f(h / β) (Brock et al. 2021 §3), shared by every block type.

    ``block`` has ``preact`` (γ-scaled activation, or BN + act in a twin), ``beta`` (1/β,
    applied after the activation as the official code does), ``shortcut`` (``None`` for
    identity; it sees the pre-activated, downscaled input), ``branch``, ``branch_tap``,
    ``stochastic_depth``, ``skipinit_gain`` (``None`` when off) and ``alpha``.
    """
    out = block.preact(x) * block.beta
    shortcut = x if block.shortcut is None else block.shortcut(out)
    branch = block.stochastic_depth(block.branch_tap(block.branch(out)))
    if block.skipinit_gain is not None:
        branch = branch * block.skipinit_gain
    return shortcut + block.alpha * branch
