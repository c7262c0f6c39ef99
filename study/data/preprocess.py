"""How one ImageNet-style picture becomes a training or evaluation image (before mixing and
RandAugment): the random crop, the flip, the resize; the evaluation resize and centre crop.

Official code: ``deepmind-research/nfnets/dataset.py`` (``_decode_and_random_crop``,
``_decode_and_center_crop``, ``_decode_and_resize_then_crop``), all resizing bicubic.

Training crop, ``train_crop="official"``: TensorFlow's ``sample_distorted_bounding_box``
with the whole image as the box, ``min_object_covered=0.1``, aspect ratio in [3/4, 4/3],
area in [0.08, 1] of the image, 10 attempts; each attempt draws the aspect ratio uniformly
(not log-uniformly) and then the crop's *height* uniformly between the heights of the
smallest and the largest allowed area, so the area is not uniform; a crop must cover at
least 10% of the picture. When no attempt fits (or the crop is the whole picture) the
centre crop of evaluation is used. ``train_crop="torchvision"``:
``torchvision.transforms.v2.RandomResizedCrop`` (area uniform in [0.08, 1], log-uniform
aspect ratio, 10 attempts, then a centre crop of the whole picture).

Evaluation, ``eval_resize``: ``"shorter_side"`` resizes the shorter side to ``test + 32`` and
centre-crops ``test`` (the official ``crop_resize``, used for NF-ResNets; the aspect ratio is
kept); ``"squash"`` resizes both sides to ``test + 32`` and centre-crops (the official
``resize_crop_32``, used for NFNets; the aspect ratio is not kept).

Where we differ: resizing is PIL's (antialiased when shrinking, output rounded to uint8);
TensorFlow's ``tf.image.resize`` does not antialias and keeps bicubic overshoots as floats
(the official code notes values in [-51, 337]).
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from study.errors import ConfigError

EVAL_CROP_PADDING = 32  # resize to test + 32 px, centre-crop test (official ``crop_padding``)
TRAIN_CROPS = ("torchvision", "official")
EVAL_RESIZES = ("shorter_side", "squash")
INTERPOLATIONS = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}
_AREA, _ASPECT, _MIN_COVERED, _ATTEMPTS = (0.08, 1.0), (3 / 4, 4 / 3), 0.1, 10


def _check(value: str, allowed, key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: got {value!r}; allowed: {', '.join(allowed)}")


def official_crop_box(height: int, width: int, generator: torch.Generator | None = None
                      ) -> tuple[int, int, int, int] | None:
    """A random crop ``(top, left, crop_height, crop_width)`` drawn as TensorFlow's
    ``sample_distorted_bounding_box`` does for the official NFNet pipeline, or ``None``
    when all 10 attempts fail."""
    for _ in range(_ATTEMPTS):
        aspect = _ASPECT[0] + (_ASPECT[1] - _ASPECT[0]) * float(torch.rand((), generator=generator))
        box = _crop_for_aspect(height, width, aspect, generator)
        if box is not None and box[2] * box[3] >= _MIN_COVERED * height * width:
            return box
    return None


def _crop_for_aspect(height: int, width: int, aspect: float, generator) -> tuple[int, int, int, int] | None:
    """TensorFlow's ``GenerateRandomCrop``: the height uniform in [h_min, h_max], then the width."""
    min_area, max_area = _AREA[0] * height * width, _AREA[1] * height * width
    low = round(math.sqrt(min_area / aspect))
    high = round(math.sqrt(max_area / aspect))
    if round(high * aspect) > width:
        high = int((width + 0.5 - 1e-7) / aspect)
        if round(high * aspect) > width:
            high -= 1
    high = min(high, height)
    low = min(low, high)
    if low < high:
        low += int(torch.randint(0, high - low + 1, (), generator=generator))
    crop_h = low
    crop_w = round(crop_h * aspect)
    if crop_w * crop_h < min_area:
        crop_h += 1
        crop_w = round(crop_h * aspect)
    if crop_w * crop_h > max_area:
        crop_h -= 1
        crop_w = round(crop_h * aspect)
    if not (min_area <= crop_w * crop_h <= max_area and 0 < crop_w <= width and 0 < crop_h <= height):
        return None
    top = int(torch.randint(0, height - crop_h, (), generator=generator)) if crop_h < height else 0
    left = int(torch.randint(0, width - crop_w, (), generator=generator)) if crop_w < width else 0
    return top, left, crop_h, crop_w


def _padded_centre_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """The official fallback (``_decode_and_center_crop``): the centred square whose side is
    ``size / (size + 32)`` of the shorter side."""
    scale = min(height / (size + EVAL_CROP_PADDING), width / (size + EVAL_CROP_PADDING))
    side = max(1, int(scale * size))  # a picture smaller than 33 px still gives one pixel
    return (height - side + 1) // 2, (width - side + 1) // 2, side, side


class TrainCrop:
    """The random crop, flip and resize of a training picture (PIL in, uint8 (3, S, S) out).

    Args:
        size: output side S.
        train_crop: ``"official"`` or ``"torchvision"`` (module docstring).
        interpolation: ``"bilinear"`` or ``"bicubic"`` (official).

    Raises:
        ConfigError: an unknown crop or interpolation.
    """

    def __init__(self, size: int, train_crop: str = "torchvision", interpolation: str = "bilinear") -> None:
        _check(train_crop, TRAIN_CROPS, "data.train_crop")
        _check(interpolation, INTERPOLATIONS, "data.interpolation")
        self.size, self.train_crop = size, train_crop
        self.interpolation = INTERPOLATIONS[interpolation]
        self._torchvision = v2.RandomResizedCrop(size, interpolation=self.interpolation, antialias=True)

    def __call__(self, picture: Image.Image) -> torch.Tensor:
        """Draws from torch's global generator (the pipeline seeds it per image)."""
        if self.train_crop == "torchvision":
            params = self._torchvision.make_params([picture])
            top, left, crop_h, crop_w = params["top"], params["left"], params["height"], params["width"]
        else:
            width, height = picture.size
            box = official_crop_box(height, width)
            if box is None or box == (0, 0, height, width):
                box = _padded_centre_box(height, width, self.size)
            top, left, crop_h, crop_w = box
        picture = F.resized_crop(picture, top, left, crop_h, crop_w, [self.size, self.size],
                                 interpolation=self.interpolation, antialias=True)
        if torch.rand(()) < 0.5:
            picture = F.horizontal_flip(picture)
        return F.pil_to_tensor(picture)


def eval_transform(test_size: int, eval_resize: str = "shorter_side", interpolation: str = "bilinear"
                   ) -> v2.Compose:
    """Resize to ``test_size + 32`` (the shorter side, or both sides for ``"squash"``), then
    centre-crop ``test_size``; PIL in, uint8 (3, test, test) out.

    Raises:
        ConfigError: an unknown resize or interpolation.
    """
    _check(eval_resize, EVAL_RESIZES, "data.eval_resize")
    _check(interpolation, INTERPOLATIONS, "data.interpolation")
    padded = test_size + EVAL_CROP_PADDING
    size = [padded, padded] if eval_resize == "squash" else padded
    return v2.Compose([
        v2.Resize(size, interpolation=INTERPOLATIONS[interpolation], antialias=True),
        v2.CenterCrop(test_size),
        v2.PILToTensor(),
    ])
