"""The training crop and the evaluation resize against the official pipeline
(``nfnets/dataset.py``; TensorFlow's ``sample_distorted_bounding_box``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from study.data.preprocess import TrainCrop, eval_transform, official_crop_box
from study.errors import ConfigError


def _official_mean_area(samples=200_000, seed=0):
    """E[crop area / image area] on a large square image, by the rule the official code
    documents (continuous: aspect ~ U(3/4, 4/3), height uniform between the heights of area
    0.08 and 1 at that aspect, width = height · aspect; retried below 10% coverage)."""
    rng = np.random.default_rng(seed)
    aspect = rng.uniform(3 / 4, 4 / 3, samples)
    low, high = np.sqrt(0.08 / aspect), np.minimum(np.minimum(np.sqrt(1 / aspect), 1.0), 1 / aspect)
    height = rng.uniform(low, high)
    area = height * np.minimum(height * aspect, 1.0)
    return area[area >= 0.1].mean()


def test_official_crop_follows_tensorflows_rules():
    generator = torch.Generator().manual_seed(0)
    height, width = 300, 400
    areas = []
    for _ in range(3000):
        top, left, crop_h, crop_w = official_crop_box(height, width, generator)
        assert 0 <= top and top + crop_h <= height and 0 <= left and left + crop_w <= width
        assert top < height - crop_h or crop_h == height  # TF draws the offset in [0, H - h)
        area = crop_h * crop_w / (height * width)
        assert 0.1 <= area <= 1.0  # min_object_covered = 0.1 over the 0.08..1 area range
        assert 3 / 4 - 0.02 <= crop_w / crop_h <= 4 / 3 + 0.02  # aspect range, up to rounding
        areas.append(area)
    # Height uniform (not area uniform, as torchvision draws, mean 0.54): a smaller mean area.
    square = [official_crop_box(1000, 1000, generator) for _ in range(4000)]
    mean_area = np.mean([h * w / 1e6 for _, _, h, w in square])
    assert mean_area == pytest.approx(_official_mean_area(), abs=0.015)


def test_train_crop_outputs_uint8_squares_and_flips_half():
    picture = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (48, 1))[..., None].repeat(3, 2))
    for mode in ("official", "torchvision"):
        crop = TrainCrop(16, mode, "bicubic")
        increasing = 0
        for seed in range(40):
            torch.manual_seed(seed)
            out = crop(picture)
            assert out.shape == (3, 16, 16) and out.dtype == torch.uint8
            increasing += bool(out[0, 8, -1] > out[0, 8, 0])
        assert 10 <= increasing <= 30  # a horizontal gradient: flipped about half the time


def test_tiny_pictures_fall_back_to_a_centre_crop():
    torch.manual_seed(0)
    out = TrainCrop(8, "official")(Image.new("RGB", (1, 1), (9, 8, 7)))
    assert out.shape == (3, 8, 8) and out[:, 0, 0].tolist() == [9, 8, 7]


def _picture(height=48, width=64):
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_squash_resizes_both_sides_to_test_plus_32_bicubic_then_centre_crops():
    picture = _picture()  # not square: the aspect ratio is not kept
    out = eval_transform(24, "squash", "bicubic")(Image.fromarray(picture))
    reference = np.asarray(Image.fromarray(picture).resize((56, 56), Image.BICUBIC))[16:40, 16:40]
    assert out.shape == (3, 24, 24) and out.dtype == torch.uint8
    assert np.array_equal(out.permute(1, 2, 0).numpy(), reference)


def test_shorter_side_keeps_the_aspect_ratio():
    picture = _picture()
    out = eval_transform(24, "shorter_side", "bilinear")(Image.fromarray(picture))
    # shorter side 48 -> 56, longer side 64 -> int(56 * 64 / 48) = 74, centre 24 x 24
    resized = np.asarray(Image.fromarray(picture).resize((74, 56), Image.BILINEAR), dtype=np.int16)
    top, left = round((56 - 24) / 2), round((74 - 24) / 2)
    assert np.abs(out.permute(1, 2, 0).numpy() - resized[top:top + 24, left:left + 24]).max() <= 1


def test_unknown_modes_are_config_errors():
    with pytest.raises(ConfigError, match="data.train_crop"):
        TrainCrop(8, "inception")
    with pytest.raises(ConfigError, match="data.interpolation"):
        eval_transform(8, "squash", "lanczos")
    with pytest.raises(ConfigError, match="data.eval_resize"):
        eval_transform(8, "stretch")
