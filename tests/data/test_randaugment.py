"""RandAugment against the official NFNet code (``nfnets/autoaugment.py``): the level-to-
argument formulas written out here from that file, each op's effect, the op count and choice."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from study.data.randaugment import OPS, RandAugment, apply_op, op_argument
from study.errors import ConfigError

OFFICIAL_ORDER = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
                  "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout",
                  "SolarizeAdd"]


def _image(height=48, width=64, seed=0):
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_official_op_list_in_its_order():
    assert list(OPS) == OFFICIAL_ORDER


@pytest.mark.parametrize("magnitude", [5, 10, 15])
def test_level_to_argument_matches_the_official_formulas(magnitude):
    level = magnitude / 10  # _MAX_LEVEL = 10
    expected = {
        "Rotate": level * 30, "ShearX": level * 0.3, "ShearY": level * 0.3,
        "TranslateX": level * 100, "TranslateY": level * 100,  # translate_const = 100 for RandAugment
        "Posterize": int(level * 4), "Solarize": int(level * 256), "SolarizeAdd": int(level * 110),
        "Color": level * 1.8 + 0.1, "Contrast": level * 1.8 + 0.1, "Brightness": level * 1.8 + 0.1,
        "Sharpness": level * 1.8 + 0.1, "Cutout": int(level * 40),  # cutout_const = 40
    }
    for name, value in expected.items():
        assert op_argument(name, magnitude) == pytest.approx(value), name


def test_rotate_is_30_degrees_at_10_and_45_at_15():
    assert op_argument("Rotate", 10) == 30 and op_argument("Rotate", 15) == 45


def test_rotate_applies_plus_or_minus_the_angle_with_grey_fill():
    image = _image()
    seen = set()
    for seed in range(12):
        out = apply_op(image, "Rotate", 15, torch.Generator().manual_seed(seed))
        matches = [angle for angle in (45.0, -45.0)
                   if torch.equal(out, F.rotate(image, angle, interpolation=F.InterpolationMode.NEAREST, fill=128))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {45.0, -45.0}


def test_shear_moves_row_y_by_level_times_y_about_the_corner():
    """TF's transform [1, s, 0, 0, 1, 0, 0, 0]: output (x, y) reads input (x + s·y, y)."""
    image = _image(40, 40)
    shear = 0.3
    for seed in range(6):
        out = apply_op(image, "ShearX", 10, torch.Generator().manual_seed(seed))
        sign = 1 if torch.equal(out[:, 0], image[:, 0]) and torch.equal(out[:, 20, :28], image[:, 20, 6:34]) else -1
        for y in (10, 20, 30):
            shift = round(shear * y)
            if sign == 1:
                assert torch.equal(out[:, y, :40 - shift], image[:, y, shift:])
            else:
                assert torch.equal(out[:, y, shift:], image[:, y, :40 - shift])


def test_translate_moves_by_absolute_pixels_and_fills_grey():
    image = _image(200, 200)
    out = apply_op(image, "TranslateX", 5, torch.Generator().manual_seed(0))  # 50 px
    moved_right = torch.equal(out[:, :, 50:], image[:, :, :150])
    moved_left = torch.equal(out[:, :, :150], image[:, :, 50:])
    assert moved_right or moved_left
    fill = out[:, :, :50] if moved_right else out[:, :, 150:]
    assert (fill == 128).all()


@pytest.mark.parametrize("magnitude, bits", [(5, 2), (10, 4), (15, 6), (30, 8)])
def test_posterize_keeps_int_0_4_m_bits(magnitude, bits):
    image = _image()
    out = apply_op(image, "Posterize", magnitude)
    mask = (0xFF << (8 - bits)) & 0xFF
    assert torch.equal(out, image & mask)


@pytest.mark.parametrize("magnitude", [5, 10, 15])
def test_solarize_threshold_and_solarize_add(magnitude):
    image = _image()
    threshold = int(magnitude / 10 * 256)
    expected = torch.where(image.int() < threshold, image, 255 - image)
    assert torch.equal(apply_op(image, "Solarize", magnitude), expected)  # m >= 10: unchanged
    addition = int(magnitude / 10 * 110)
    added = torch.where(image < 128, (image.int() + addition).clamp(0, 255).to(torch.uint8), image)
    assert torch.equal(apply_op(image, "SolarizeAdd", magnitude), added)


def test_enhance_ops_blend_with_factor_0_18_m_plus_0_1():
    image = _image()
    assert torch.equal(apply_op(image, "Brightness", 5), image)  # factor 1.0 at m = 5
    brighter = (image.float() * 1.9).clamp(0, 255)
    assert (apply_op(image, "Brightness", 10).float() - brighter).abs().max() <= 1
    assert torch.equal(apply_op(image, "Color", 10), F.adjust_saturation(image, 1.9))


def test_cutout_is_a_grey_square_of_side_2_int_4m():
    image = torch.zeros(3, 200, 200, dtype=torch.uint8)
    for seed in range(10):
        out = apply_op(image, "Cutout", 10, torch.Generator().manual_seed(seed))  # pad 40
        rows = (out[0] == 128).any(dim=1).nonzero().flatten()
        cols = (out[0] == 128).any(dim=0).nonzero().flatten()
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert height <= 80 and width <= 80
        assert (out[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1] == 128).all()
        assert int((out[0] == 128).sum()) == height * width


def test_invert_autocontrast_equalize():
    image = _image()
    assert torch.equal(apply_op(image, "Invert", 10), 255 - image)
    assert torch.equal(apply_op(image, "AutoContrast", 10), F.autocontrast(image))
    assert torch.equal(apply_op(image, "Equalize", 10), F.equalize(image))


def test_each_layer_picks_one_op_uniformly():
    augment = RandAugment(magnitude=10, num_layers=4)
    generator = torch.Generator().manual_seed(0)
    counts = Counter()
    for _ in range(1000):
        ops = augment.sample_ops(generator)
        assert len(ops) == 4
        counts.update(ops)
    expected = 4000 / 16
    assert set(counts) == set(OFFICIAL_ORDER)
    assert all(abs(n - expected) < 4 * math.sqrt(expected) for n in counts.values())


def test_every_chosen_op_is_applied():
    """The official code draws a probability U(0.2, 0.8) per op but never uses it: the image
    is exactly the chosen ops applied in turn."""
    image, augment = _image(), RandAugment(magnitude=10, num_layers=4)
    for seed in range(10):
        out = augment(image, torch.Generator().manual_seed(seed))
        replay = torch.Generator().manual_seed(seed)
        expected = image
        for name in augment.sample_ops(replay):
            expected = apply_op(expected, name, 10, replay)
        assert torch.equal(out, expected)


def test_output_is_uint8_in_range_and_seeded():
    image = _image()
    augment = RandAugment(magnitude=15)
    a = augment(image, torch.Generator().manual_seed(3))
    b = augment(image, torch.Generator().manual_seed(3))
    assert a.dtype == torch.uint8 and a.shape == image.shape and torch.equal(a, b)
    outs = [augment(image, torch.Generator().manual_seed(s)) for s in range(20)]
    assert sum(not torch.equal(o, image) for o in outs) >= 18


def test_torchvision_policy_and_bad_arguments():
    out = RandAugment(magnitude=9, policy="torchvision")(_image())
    assert out.dtype == torch.uint8 and out.shape == (3, 48, 64)
    for kwargs in ({"magnitude": 31}, {"magnitude": 5, "num_layers": 0}, {"magnitude": 5, "policy": "tf"}):
        with pytest.raises(ConfigError):
            RandAugment(**kwargs)
