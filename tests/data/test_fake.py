import pytest
import torch

from study.data.fake import load_fake
from study.data.gpu_loader import DeviceLoader
from study.errors import DataError


def test_shapes_dtypes_and_ranges():
    images, labels = load_fake(300, 8, 5, "cpu", seed=0)
    assert images.shape == (300, 3, 8, 8) and images.dtype == torch.uint8
    assert labels.shape == (300,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(5))
    assert images.min() < 10 and images.max() > 245  # uniform over 0..255, not a constant


def test_rectangular_size():
    images, _ = load_fake(2, (4, 6), 3, torch.device("cpu"))
    assert images.shape == (2, 3, 4, 6)


def test_seed_reproduces_and_varies():
    a = load_fake(16, 4, 10, "cpu", seed=1)
    b = load_fake(16, 4, 10, "cpu", seed=1)
    c = load_fake(16, 4, 10, "cpu", seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_feeds_a_device_loader():
    images, labels = load_fake(32, 8, 4, "cpu", seed=0)
    x, y = next(iter(DeviceLoader(images, labels, 16, train=True, crop_pad=1, flip=True)))
    assert x.shape == (16, 3, 8, 8) and y.shape == (16,)


@pytest.mark.parametrize("args", [(0, 8, 2), (4, 0, 2), (4, 8, 0)])
def test_bad_sizes_raise_data_error(args):
    with pytest.raises(DataError, match="at least 1"):
        load_fake(*args, "cpu")
