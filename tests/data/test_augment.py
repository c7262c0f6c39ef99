"""MixUp on half the batch, CutMix on the other half (arXiv 2102.06171 App. A; official
``nfnets/dataset.py`` ``my_mixup_cutmix``)."""

from __future__ import annotations

import pytest
import torch

from study.data.augment import Mixing, mix_rows, mixup_cutmix
from study.errors import ConfigError, DataError
from study.train.trainer import _loss


def constant_images(batch, size=16):
    """Image i is the constant i + 1, so every output pixel shows where it came from."""
    return (torch.arange(batch, dtype=torch.float64) + 1).view(-1, 1, 1, 1).expand(
        batch, 3, size, size).clone()


def test_targets_are_distributions_over_own_and_partner_label():
    batch = 10
    images, labels = constant_images(batch), torch.arange(batch)
    mixed, targets = mixup_cutmix(images, labels, num_classes=batch,
                                  generator=torch.Generator().manual_seed(0))
    assert mixed.shape == images.shape and mixed.dtype == images.dtype
    assert targets.shape == (batch, batch) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(batch))
    partner = [4, 3, 2, 1, 0, 9, 8, 7, 6, 5]  # mirror within each half
    for i in range(batch):
        support = set(targets[i].nonzero().flatten().tolist())
        assert support <= {i, partner[i]}


def test_mixup_half_mixes_pixels_with_the_target_weight():
    batch = 8
    images, labels = constant_images(batch), torch.arange(batch)
    mixed, targets = mixup_cutmix(images, labels, batch, generator=torch.Generator().manual_seed(1))
    for i in range(batch // 2):
        j = batch // 2 - 1 - i
        lam = targets[i, i].double() if i != j else torch.tensor(1.0, dtype=torch.float64)
        expected = lam * (i + 1) + (1 - lam) * (j + 1)
        torch.testing.assert_close(mixed[i], torch.full_like(mixed[i], expected.item()),
                                   rtol=1e-6, atol=1e-6)


def test_cutmix_half_weights_equal_pixel_fractions():
    batch, size = 64, 12
    images, labels = constant_images(batch, size), torch.arange(batch)
    mixed, targets = mixup_cutmix(images, labels, batch, generator=torch.Generator().manual_seed(2))
    fractions = []
    for i in range(batch // 2, batch):
        j = batch // 2 + batch - 1 - i
        own = (mixed[i] == i + 1).double().mean()
        other = (mixed[i] == j + 1).double().mean()
        assert own + other == 1  # every pixel comes from one of the two images
        assert targets[i, i].item() == pytest.approx(own.item())
        fractions.append(own.item())
        box = (mixed[i, 0] == i + 1).nonzero()
        if len(box):  # the own image is one rectangle pasted into the partner (official orientation)
            (y0, x0), (y1, x1) = box.min(0).values, box.max(0).values
            assert len(box) == (y1 - y0 + 1) * (x1 - x0 + 1)
    assert 0 < min(fractions) < max(fractions) < 1  # boxes of different sizes


def test_mixup_ratio_follows_beta_alpha_alpha():
    batch = 40000
    images, labels = torch.zeros(batch, 1, 2, 2), torch.zeros(batch, dtype=torch.long)
    labels[batch // 4:batch // 2] = 1  # mixup pairs are (class 0, class 1)
    _, targets = mixup_cutmix(images, labels, 2, alpha=0.2,
                              generator=torch.Generator().manual_seed(3))
    lam = targets[: batch // 4, 0].double()
    assert lam.mean().item() == pytest.approx(0.5, abs=0.01)
    assert lam.var().item() == pytest.approx(1 / (4 * (2 * 0.2 + 1)), rel=0.03)  # Beta(.2,.2)
    assert ((lam < 0.05) | (lam > 0.95)).float().mean().item() > 0.4  # U-shaped at alpha 0.2


def test_reproducible_with_a_generator_and_input_untouched():
    images, labels = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    copy = images.clone()
    a = mixup_cutmix(images, labels, 5, generator=torch.Generator().manual_seed(7))
    b = mixup_cutmix(images, labels, 5, generator=torch.Generator().manual_seed(7))
    c = mixup_cutmix(images, labels, 5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert torch.equal(images, copy)


def _official_loss(logits, labels, mix_labels, ratio, smoothing, num_classes):
    """The official training loss (nfnets/experiment.py ``_loss_fn``), written out in float64:
    one-hot labels mixed by ``ratio``, then smoothed to (1 − s)·y + s/C, then the mean softmax
    cross-entropy of the float32-cast logits."""
    eye = torch.eye(num_classes, dtype=torch.float64)
    y = ratio[:, None] * eye[labels] + (1 - ratio[:, None]) * eye[mix_labels]
    y = (1 - smoothing) * y + smoothing / num_classes
    z = logits.float().double()
    log_softmax = z - z.max(1, keepdim=True).values
    log_softmax = log_softmax - log_softmax.exp().sum(1, keepdim=True).log()
    return -(y * log_softmax).sum(1).mean()


@pytest.mark.parametrize("logits_dtype", [torch.float32, torch.bfloat16])
def test_training_loss_on_mixed_targets_is_the_official_loss(logits_dtype):
    """Our targets (mixup_cutmix) through our training loss (the trainer's, with label
    smoothing 0.1) against the official recipe computed independently: every example's own
    and partner label, its ratio (MixUp weight or CutMix pixel fraction), smoothing after
    mixing, logits cast up from bf16 as autocast leaves them."""
    batch, num_classes = 12, 10
    images = constant_images(batch)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    mixed, targets = mixup_cutmix(images, labels, num_classes, generator=torch.Generator().manual_seed(4))
    partner = torch.cat([torch.arange(batch // 2).flip(0), torch.arange(batch // 2, batch).flip(0)])
    # Each example's ratio read back from its pixels (image i is the constant i + 1), not from
    # the targets under test: the mean pixel is ratio·own + (1 − ratio)·partner.
    own, other = torch.arange(batch) + 1.0, partner + 1.0
    ratio = (mixed.mean(dim=(1, 2, 3)) - other) / (own - other)
    logits = torch.randn(batch, num_classes, generator=torch.Generator().manual_seed(5)).to(logits_dtype)
    ours = _loss(logits, targets, label_smoothing=0.1)
    reference = _official_loss(logits, labels, labels[partner], ratio, 0.1, num_classes)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-6)
    # Hard labels (no MixUp): the same loss with ratio 1.
    hard = _official_loss(logits, labels, labels, torch.ones(batch, dtype=torch.float64), 0.1, num_classes)
    torch.testing.assert_close(_loss(logits, labels, label_smoothing=0.1).double(), hard, rtol=1e-5, atol=1e-6)


def test_bad_inputs():
    images, labels = torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError):
        mixup_cutmix(images, labels, 3, alpha=0.0)
    with pytest.raises(ConfigError):
        mixup_cutmix(images, labels, 0)
    with pytest.raises(DataError):
        mixup_cutmix(images.to(torch.uint8), labels, 3)
    with pytest.raises(DataError):
        mixup_cutmix(images, labels[:3], 3)
    with pytest.raises(DataError, match="even"):
        mixup_cutmix(images[:3], labels[:3], 3, pairing="disjoint")
    with pytest.raises(ConfigError, match="mixup_pairing"):
        mixup_cutmix(images, labels, 3, pairing="other")


def test_disjoint_pairing_reads_2b_images_and_mixes_the_official_quarters():
    """The official ``my_mixup_cutmix`` on 2B images: quarter 1 MixUp'ed with quarter 2,
    quarter 3 CutMix'ed (its box) into quarter 4; labels from quarters 1 and 3."""
    batch = 8
    quarter = batch // 2
    images, labels = constant_images(2 * batch), torch.arange(2 * batch)
    mixed, targets = mixup_cutmix(images, labels, 2 * batch, generator=torch.Generator().manual_seed(4),
                                  pairing="disjoint")
    assert mixed.shape == (batch, 3, 16, 16) and targets.shape == (batch, 2 * batch)
    pairs = [(k, quarter + k) for k in range(quarter)] + [(2 * quarter + k, 3 * quarter + k) for k in range(quarter)]
    for row, (own, partner) in enumerate(pairs):
        assert set(targets[row].nonzero().flatten().tolist()) <= {own, partner}
        weight = targets[row, own].double()
        if row < quarter:  # MixUp: every pixel weight * own + (1 - weight) * partner
            expected = weight * (own + 1) + (1 - weight) * (partner + 1)
            torch.testing.assert_close(mixed[row], torch.full_like(mixed[row], expected.item()))
        else:  # CutMix: the own label's weight is its pixel fraction
            own_pixels = (mixed[row] == own + 1).double().mean()
            assert ((mixed[row] == own + 1) | (mixed[row] == partner + 1)).all()
            assert weight.item() == pytest.approx(own_pixels.item())
    assert sorted(sum(pairs, ())) == list(range(2 * batch))  # every drawn image used once


def test_mirror_pairing_reads_b_images_each_used_twice():
    own, partner = Mixing(10, pairing="mirror").sources(6)
    assert own.tolist() == [0, 1, 2, 3, 4, 5] and partner.tolist() == [2, 1, 0, 5, 4, 3]
    assert Mixing(10, pairing="mirror").draws(6) == 6 and Mixing(10, pairing="disjoint").draws(6) == 12


def test_rows_of_a_slice_equal_the_same_rows_of_the_whole_batch():
    """A DDP rank mixes only its rows, with the pairs and draws one process uses."""
    mixing = Mixing(7, pairing="disjoint")
    images, labels = torch.randn(12, 3, 8, 8), torch.randint(0, 7, (12,))
    own, partner = mixing.sources(6)
    draw = mixing.draw(6, 8, 8, torch.Generator().manual_seed(0), "cpu")
    whole = mix_rows(images[own], images[partner], labels[own], labels[partner], draw, range(6), 7)
    for rows in (range(0, 3), range(3, 6), range(2, 4)):
        part = mix_rows(images[own[rows.start:rows.stop]], images[partner[rows.start:rows.stop]],
                        labels[own[rows.start:rows.stop]], labels[partner[rows.start:rows.stop]], draw, rows, 7)
        assert torch.equal(part[0], whole[0][rows.start:rows.stop])
        assert torch.equal(part[1], whole[1][rows.start:rows.stop])


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("pairing", ["mirror", "disjoint"])
def test_mixing_builds_every_tensor_on_the_device(pairing, device, host_data):
    """No tensor is made from a Python number or list in a step (on a GPU: a host-to-device
    copy that syncs); on the meta device nothing is read back either (``.item()``)."""
    images = torch.randn(16, 3, 8, 8, device=device)
    labels = torch.zeros(16, dtype=torch.long, device=device)
    with host_data(device) as mode:
        mixed, targets = mixup_cutmix(images, labels, 10, pairing=pairing)
    assert mode.seen == []
    assert mixed.device.type == targets.device.type == device
