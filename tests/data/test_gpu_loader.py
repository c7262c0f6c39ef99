import numpy as np
import pytest
import torch

from study.data.augment import Mixing
from study.data.gpu_loader import DeviceLoader
from study.errors import DataError

IDENTITY = dict(mean=(0.0,), std=(1.0 / 255.0,))  # output == stored uint8 value


def _indexed_images(n, channels=2, height=6, width=7):
    """Images whose pixels differ everywhere, so a crop/flip can be recognised exactly."""
    x = torch.arange(n * channels * height * width) % 251
    return x.view(n, channels, height, width).to(torch.uint8), torch.arange(n)


def _epoch(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def test_training_epoch_visits_every_example_once():
    images, labels = _indexed_images(12)
    _, ys = _epoch(DeviceLoader(images, labels, 4, train=True))
    assert sorted(ys.tolist()) == list(range(12))


def test_training_epoch_drops_the_partial_batch():
    images, labels = _indexed_images(10)
    loader = DeviceLoader(images, labels, 4, train=True)
    batches = list(loader)
    assert len(loader) == 2 and len(batches) == 2
    ys = torch.cat([y for _, y in batches])
    assert len(set(ys.tolist())) == 8


def test_same_seed_gives_same_batches_and_other_seed_does_not():
    images, labels = _indexed_images(32)
    kwargs = dict(train=True, crop_pad=2, flip=True, **IDENTITY)
    a, ya = _epoch(DeviceLoader(images, labels, 8, seed=3, **kwargs))
    b, yb = _epoch(DeviceLoader(images, labels, 8, seed=3, **kwargs))
    c, yc = _epoch(DeviceLoader(images, labels, 8, seed=4, **kwargs))
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(ya, yc)


def test_each_epoch_has_a_new_order():
    images, labels = _indexed_images(32)
    loader = DeviceLoader(images, labels, 8, train=True)
    _, first = _epoch(loader)
    _, second = _epoch(loader)
    assert not torch.equal(first, second)
    assert sorted(first.tolist()) == sorted(second.tolist())


def test_set_epoch_replays_an_epoch():
    images, labels = _indexed_images(32)
    kwargs = dict(train=True, crop_pad=1, flip=True, seed=7, **IDENTITY)
    straight = DeviceLoader(images, labels, 8, **kwargs)
    epochs = [_epoch(straight) for _ in range(3)]
    resumed = DeviceLoader(images, labels, 8, **kwargs)
    resumed.set_epoch(2)
    x, y = _epoch(resumed)
    assert torch.equal(x, epochs[2][0]) and torch.equal(y, epochs[2][1])


def _reference_views(image, pad):
    """Every allowed crop of one (C, H, W) image: {(dy, dx, flipped): array}, by numpy."""
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    views = {}
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            crop = padded[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
            views[(dy, dx, False)] = crop
            views[(dy, dx, True)] = crop[:, :, ::-1]
    return views


@pytest.mark.parametrize("flip", [False, True])
def test_crop_shifts_by_at_most_crop_pad(flip):
    pad = 2
    images, labels = _indexed_images(64)
    loader = DeviceLoader(images, labels, 16, train=True, crop_pad=pad, flip=flip, **IDENTITY)
    xs, ys = _epoch(loader)
    seen = set()
    for x, y in zip(xs, ys):
        out = x.round().to(torch.uint8).numpy()
        matches = [k for k, v in _reference_views(images[y].numpy(), pad).items() if np.array_equal(v, out)]
        assert matches, "output is not a reflect-padded crop within crop_pad"
        seen.update(matches)
    shifts = {(dy, dx) for dy, dx, _ in seen}
    assert len(shifts) > 5  # the shifts really vary
    assert {f for *_, f in seen} == ({False, True} if flip else {False})


def test_flip_without_crop_mirrors_about_half_the_images():
    images, labels = _indexed_images(200, height=3, width=5)
    xs, ys = _epoch(DeviceLoader(images, labels, 50, train=True, flip=True, **IDENTITY))
    originals = images[ys].float()
    flipped = [torch.equal(x, o.flip(-1)) for x, o in zip(xs, originals)]
    same = [torch.equal(x, o) for x, o in zip(xs, originals)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 60 < sum(flipped) < 140


def test_evaluation_has_fixed_order_no_augmentation_and_keeps_the_last_batch():
    images, labels = _indexed_images(10)
    loader = DeviceLoader(images, labels, 4, train=False, crop_pad=2, flip=True, **IDENTITY)
    assert len(loader) == 3
    for _ in range(2):
        batches = list(loader)
        assert [len(y) for _, y in batches] == [4, 4, 2]
        xs = torch.cat([x for x, _ in batches])
        ys = torch.cat([y for _, y in batches])
        assert torch.equal(ys, labels)
        assert torch.equal(xs, images.float())


def test_normalisation_per_channel():
    images = torch.empty(4, 3, 2, 2, dtype=torch.uint8)
    images[:, 0], images[:, 1], images[:, 2] = 0, 51, 255
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    x, _ = next(iter(DeviceLoader(images, torch.zeros(4, dtype=torch.long), 4, train=False, mean=mean, std=std)))
    expected = [(0.0 - 0.1) / 0.5, (0.2 - 0.2) / 0.25, (1.0 - 0.3) / 2.0]
    for c in range(3):
        assert torch.allclose(x[:, c], torch.full_like(x[:, c], expected[c]), atol=1e-6)
    assert x.dtype == torch.float32


def test_resize_is_bilinear_with_half_pixel_centres():
    images = torch.tensor([[[[0, 200], [0, 200]]]], dtype=torch.uint8)  # one 1x2x2 image
    x, _ = next(iter(DeviceLoader(images, torch.zeros(1, dtype=torch.long), 1, train=False, image_size=4, **IDENTITY)))
    assert x.shape == (1, 1, 4, 4)
    # align_corners=False: output column j samples input x = (j + 0.5)/2 - 0.5, clamped at 0 and 1.
    expected_row = torch.tensor([0.0, 50.0, 150.0, 200.0])
    assert torch.allclose(x[0, 0], expected_row.expand(4, 4), atol=1e-4)


def test_channels_last_option():
    images, labels = _indexed_images(8, channels=3)
    x, _ = next(iter(DeviceLoader(images, labels, 4, train=True, crop_pad=1, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_num_examples():
    images, labels = _indexed_images(10)
    assert DeviceLoader(images, labels, 3, train=True).num_examples == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=11, train=True), "batch_size 11"),
        (dict(batch_size=0, train=False), "batch_size"),
        (dict(batch_size=2, train=True, crop_pad=6), "crop_pad"),
        (dict(batch_size=2, train=True, mean=(0.1, 0.2, 0.3)), "mean"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs, match):
    images, labels = _indexed_images(10)
    with pytest.raises(DataError, match=match):
        DeviceLoader(images, labels, **kwargs)


def test_wrong_dtype_raises_data_error():
    images, labels = _indexed_images(4)
    with pytest.raises(DataError, match="uint8"):
        DeviceLoader(images.float(), labels, 2, train=False)
    with pytest.raises(DataError, match="int64"):
        DeviceLoader(images, labels.int(), 2, train=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pairing", [None, "mirror", "disjoint"])
def test_no_host_sync_inside_a_cuda_epoch(pairing):
    images, labels = _indexed_images(64, channels=3)
    mixing = Mixing(64, pairing=pairing) if pairing else None
    loader = DeviceLoader(images.cuda(), labels.cuda(), 16, train=True, crop_pad=2, flip=True, image_size=8,
                          mixing=mixing)
    iterator = iter(loader)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(iterator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(batches) == 4 and batches[0][0].is_cuda


def test_replicate_seeds_do_not_share_epochs():
    images, labels = _indexed_images(32)
    seed0 = DeviceLoader(images, labels, 8, train=True, seed=0)
    seed1 = DeviceLoader(images, labels, 8, train=True, seed=1)
    seed0.set_epoch(1)
    assert not torch.equal(_epoch(seed0)[1], _epoch(seed1)[1])


@pytest.mark.parametrize("pairing", ["mirror", "disjoint"])
def test_no_tensor_is_made_from_host_data_in_a_mixing_epoch(host_data, pairing):
    images, labels = _indexed_images(32, channels=3)
    loader = DeviceLoader(images, labels, 8, train=True, crop_pad=1, flip=True, image_size=5,
                          mixing=Mixing(32, pairing=pairing))
    with host_data("cpu") as mode:
        batches = list(loader)
    assert mode.seen == [] and len(batches) == 4


def test_mixing_returns_soft_targets_and_disjoint_pairing_draws_2b_images_per_step():
    images, labels = _indexed_images(32)
    distinct = {}
    for pairing in ("mirror", "disjoint"):
        loader = DeviceLoader(images, labels, 8, train=True, mixing=Mixing(32, pairing=pairing), **IDENTITY)
        batches = list(loader)
        assert len(loader) == len(batches) == 4  # N // B steps either way
        for x, targets in batches:
            assert x.shape == (8, 2, 6, 7) and targets.shape == (8, 32)
            torch.testing.assert_close(targets.sum(1), torch.ones(8))
        distinct[pairing] = [len(set(t.nonzero()[:, 1].tolist())) for _, t in batches]
    assert max(distinct["mirror"]) <= 8  # B images, each own and partner once
    assert min(distinct["disjoint"]) > 8  # 2B images: up to 16 labels per step


@pytest.mark.parametrize("mixing", [None, Mixing(32, pairing="mirror"), Mixing(32, pairing="disjoint")])
def test_each_rank_gets_its_rows_of_the_global_batch(mixing):
    images, labels = _indexed_images(32)
    kwargs = dict(train=True, crop_pad=2, flip=True, image_size=4, seed=3, mixing=mixing, **IDENTITY)
    whole = list(DeviceLoader(images, labels, 8, **kwargs))
    ranks = [list(DeviceLoader(images, labels, 8, rank=r, world_size=4, **kwargs)) for r in range(4)]
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([rank[step][0] for rank in ranks]), x)
        assert torch.equal(torch.cat([rank[step][1] for rank in ranks]), y)
