"""RandAugment as the official NFNet code applies it, built from torchvision's v2 functional ops.

Cubuk et al., *RandAugment* (arXiv 1909.13719); official code:
``deepmind-research/nfnets/autoaugment.py`` (``distort_image_with_randaugment``, the TPU
EfficientNet implementation). NFNets use 4 layers at magnitude 5 (F0), 10 (F1, F2) or 15
(F3 and up) (``experiment_nfnets.py``: ``augment = '405' … '415'``).

Each layer picks one of 16 operations uniformly at random and applies it, always, at the
fixed magnitude m. An operation's argument is ``level = m / 10`` (``_MAX_LEVEL = 10``) times
its range, so magnitudes above 10 reach past the "maximum" (rotate 45° at m = 15):

=============  ============================================  ======  ======  ======
operation      argument at magnitude m                       m = 5   m = 10  m = 15
=============  ============================================  ======  ======  ======
Rotate         ±3m degrees                                   15      30      45
ShearX/Y       ±0.03m (x' = x + s·y, about the corner)       0.15    0.3     0.45
TranslateX/Y   ±10m pixels (absolute, not relative)          50      100     150
Posterize      keep int(0.4m) bits                           2       4       6
Solarize       invert pixels >= int(25.6m)                   128     256     384
SolarizeAdd    add int(11m) to pixels < 128                  55      110     165
Color, …       blend factor 0.18m + 0.1                      1.0     1.9     2.8
Cutout         grey square of side 2·int(4m) px              40      80      120
AutoContrast, Equalize, Invert: no argument
=============  ============================================  ======  ======  ======

("Color, …" is Color, Contrast, Brightness and Sharpness; ± is a fair coin per use; empty
pixels of geometric ops and the Cutout square are filled with grey 128; geometric ops use
nearest-neighbour sampling as TensorFlow's ``contrib.image.transform`` does.)

Two quirks of the official code are kept on purpose: Posterize and Solarize get *weaker* as m
grows (a Solarize threshold of 256 or more changes nothing), and a probability drawn from
U(0.2, 0.8) for every operation is never used (``tf.cond`` calls the chosen op directly, not
``_apply_func_with_prob``), so the chosen op is always applied. Posterize keeps at most 8 bits
(magnitudes above 20 would ask for more; TensorFlow's behaviour there is undefined).

``policy="torchvision"`` is ``torchvision.transforms.v2.RandAugment(num_ops, magnitude)``:
m/30 of each op's range, 14 ops (no Invert, Cutout or SolarizeAdd; an Identity).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from study.errors import ConfigError

MAX_LEVEL = 10.0
FILL = 128
CUTOUT_CONST = 40
TRANSLATE_CONST = 100
POLICIES = ("official", "torchvision")
_NEAREST = v2.InterpolationMode.NEAREST


@dataclass(frozen=True)
class _Op:
    """An official RandAugment operation: its level-to-argument rule and how it is applied."""

    argument: Callable[[float], float]  # of level = m / 10, before the random sign
    apply: Callable[[torch.Tensor, float, torch.Generator | None], torch.Tensor]
    signed: bool = False


def _enhance(level: float) -> float:
    return level * 1.8 + 0.1


def _solarize(image: torch.Tensor, threshold: float, _) -> torch.Tensor:
    return image if threshold > 255 else F.solarize(image, threshold)


def _solarize_add(image: torch.Tensor, addition: float, _) -> torch.Tensor:
    added = (image.to(torch.int16) + int(addition)).clamp_(0, 255).to(torch.uint8)
    return torch.where(image < 128, added, image)


def _shear(image: torch.Tensor, amount: float, axis: int) -> torch.Tensor:
    # TF's transform [1, s, 0, 0, 1, 0, 0, 0] shears about the top-left corner by s (not an
    # angle): torchvision's shear is an angle about `center`, so pass atan(s) and (0, 0).
    angles = [0.0, 0.0]
    angles[axis] = math.degrees(math.atan(amount))
    return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=angles,
                    interpolation=_NEAREST, fill=FILL, center=[0, 0])


def _translate(image: torch.Tensor, pixels: float, axis: int) -> torch.Tensor:
    shift = [0, 0]
    shift[axis] = round(pixels)
    return F.affine(image, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0],
                    interpolation=_NEAREST, fill=FILL)


def _cutout(image: torch.Tensor, pad: float, generator: torch.Generator | None) -> torch.Tensor:
    """A grey square of side ``2 * pad`` centred on a uniformly drawn pixel, clipped."""
    height, width = image.shape[-2:]
    cy = int(torch.randint(0, height, (), generator=generator))
    cx = int(torch.randint(0, width, (), generator=generator))
    top, left = max(0, cy - int(pad)), max(0, cx - int(pad))
    bottom, right = min(height, cy + int(pad)), min(width, cx + int(pad))
    out = image.clone()
    out[..., top:bottom, left:right] = FILL
    return out


OPS: dict[str, _Op] = {
    "AutoContrast": _Op(lambda level: 0.0, lambda x, _, g: F.autocontrast(x)),
    "Equalize": _Op(lambda level: 0.0, lambda x, _, g: F.equalize(x)),
    "Invert": _Op(lambda level: 0.0, lambda x, _, g: F.invert(x)),
    "Rotate": _Op(lambda level: level * 30.0,
                  lambda x, a, g: F.rotate(x, a, interpolation=_NEAREST, fill=FILL), signed=True),
    "Posterize": _Op(lambda level: int(level * 4), lambda x, a, g: F.posterize(x, min(8, int(a)))),
    "Solarize": _Op(lambda level: int(level * 256), _solarize),
    "Color": _Op(_enhance, lambda x, a, g: F.adjust_saturation(x, a)),
    "Contrast": _Op(_enhance, lambda x, a, g: F.adjust_contrast(x, a)),
    "Brightness": _Op(_enhance, lambda x, a, g: F.adjust_brightness(x, a)),
    "Sharpness": _Op(_enhance, lambda x, a, g: F.adjust_sharpness(x, a)),
    "ShearX": _Op(lambda level: level * 0.3, lambda x, a, g: _shear(x, a, 0), signed=True),
    "ShearY": _Op(lambda level: level * 0.3, lambda x, a, g: _shear(x, a, 1), signed=True),
    "TranslateX": _Op(lambda level: level * TRANSLATE_CONST, lambda x, a, g: _translate(x, a, 0), signed=True),
    "TranslateY": _Op(lambda level: level * TRANSLATE_CONST, lambda x, a, g: _translate(x, a, 1), signed=True),
    "Cutout": _Op(lambda level: int(level * CUTOUT_CONST), _cutout),
    "SolarizeAdd": _Op(lambda level: int(level * 110), _solarize_add),
}
"""The official op list, in the official order (``available_ops``)."""


def op_argument(name: str, magnitude: float) -> float:
    """The official argument of operation ``name`` at ``magnitude``, before its random sign.

    Example:
        >>> op_argument("Rotate", 10)
        30.0
    """
    return OPS[name].argument(magnitude / MAX_LEVEL)


def apply_op(image: torch.Tensor, name: str, magnitude: float, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """Apply one official operation at ``magnitude`` to a uint8 (C, H, W) image (a new tensor)."""
    op = OPS[name]
    argument = op.argument(magnitude / MAX_LEVEL)
    if op.signed and torch.rand((), generator=generator) < 0.5:
        argument = -argument
    return op.apply(image, argument, generator)


class RandAugment:
    """``num_layers`` random operations at a fixed ``magnitude`` on a uint8 (C, H, W) image.

    Args:
        magnitude: m, 0..30 (the official NFNet values are 5, 10 and 15).
        num_layers: operations per image (official NFNets: 4).
        policy: ``"official"`` (the NFNet code's op set and scale, see the module docstring)
            or ``"torchvision"`` (``torchvision.transforms.v2.RandAugment``).

    Raises:
        ConfigError: a magnitude outside 0..30, ``num_layers < 1`` or an unknown policy.

    Example:
        >>> augment = RandAugment(magnitude=10, num_layers=4)
        >>> out = augment(image, generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, magnitude: int, num_layers: int = 4, policy: str = "official") -> None:
        if not 0 <= magnitude <= 30:
            raise ConfigError(f"data.randaugment: got {magnitude!r}; allowed: 0..30, auto or null")
        if num_layers < 1:
            raise ConfigError(f"num_layers: got {num_layers!r}; allowed: >= 1")
        if policy not in POLICIES:
            raise ConfigError(f"data.randaugment_policy: got {policy!r}; allowed: {', '.join(POLICIES)}")
        self.magnitude, self.num_layers, self.policy = magnitude, num_layers, policy
        self._torchvision = v2.RandAugment(num_ops=num_layers, magnitude=magnitude)

    def sample_ops(self, generator: torch.Generator | None = None) -> list[str]:
        """The official policy's ``num_layers`` op names, each uniform over the 16 (with
        replacement)."""
        names = list(OPS)
        return [names[i] for i in torch.randint(0, len(names), (self.num_layers,), generator=generator).tolist()]

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The augmented image, uint8 (C, H, W). ``generator`` drives the official policy;
        torchvision's draws from the global generator."""
        if self.policy == "torchvision":
            return self._torchvision(image)
        for name in self.sample_ops(generator):
            image = apply_op(image, name, self.magnitude, generator)
        return image
