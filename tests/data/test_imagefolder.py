"""Image-folder trees: splits, the training pipeline per step (crop, RandAugment, mixing,
DDP slices), evaluation, and the errors of bad trees."""

import numpy as np
import pytest
import torch
from PIL import Image

from study.data.imagefolder import ImageRecipe, build_imagefolder, image_splits
from study.errors import DataError

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
COLOURS = {"ant": (200, 30, 30), "bee": (30, 200, 30), "cat": (30, 30, 200)}  # sorted: class 0, 1, 2


def _tree(root, per_class=4, val_per_class=2, size=(40, 30)):
    """root/{train,val}/<class>/ with solid-colour images (PNG for train, JPEG for val)."""
    for split, n, ext in (("train", per_class, "png"), ("val", val_per_class, "JPEG")):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", size, colour).save(folder / f"{name}{i}.{ext}")
    return root


def _flat(root, per_class=12):
    """root/<class>/ with pictures whose pixels differ, so a crop or a mix is visible."""
    rng = np.random.default_rng(0)
    for name in COLOURS:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (36 + i, 44, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


def _denormalise(x):
    """Back to 0..255 pixel values, by the ImageNet statistics written out here."""
    return (x.permute(0, 2, 3, 1).numpy() * STD + MEAN) * 255


def _build(root, recipe=None, **overrides):
    args = dict(batch_size=4, device="cpu", seed=0, num_workers=0, val_size=3)
    args.update(overrides)
    return build_imagefolder(root, recipe or ImageRecipe(16, 24, randaugment=10), **args)


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_shapes_lengths_and_classes(tmp_path):
    data = _build(_tree(tmp_path, per_class=5), val_size=3)
    assert data.num_classes == 3 and data.num_train == 12  # 15 train images, 3 carved for tuning
    assert len(data.train) == 3 and len(data.test) == 2  # 6 test images keep the last partial batch
    x, y = next(iter(data.train))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    vx = [x for x, _ in data.test]
    assert [len(v) for v in vx] == [4, 2] and vx[0].shape[1:] == (3, 24, 24)
    assert sum(len(y) for _, y in data.val) == 3


def test_tuning_split_is_carved_from_train_and_disjoint_from_train_and_test(tmp_path):
    _tree(tmp_path, per_class=10, val_per_class=3)
    splits, classes = image_splits(tmp_path, val_size=6)
    assert classes == list(COLOURS)
    train, val, test = (set(splits[k].indices) for k in ("train", "val", "test"))
    assert len(val) == 6 and len(train) == 24 and not train & val
    assert splits["val"].folder is splits["train"].folder  # carved from train/
    assert splits["test"].folder.root.endswith("val") and len(test) == 9  # ImageNet's val is reported
    again, _ = image_splits(tmp_path, val_size=6)
    assert again["val"].indices == splits["val"].indices  # fixed: no run seed involved
    default, _ = image_splits(tmp_path)
    assert len(default["val"].indices) == 3  # a tenth of a small tree (10,000 for ImageNet)


def test_flat_layout_carves_test_then_tuning_splits(tmp_path):
    _flat(tmp_path, per_class=20)
    splits, classes = image_splits(tmp_path, val_size=5)
    train, val, test = (set(splits[k].indices) for k in ("train", "val", "test"))
    assert classes == list(COLOURS) and len(test) == 6 and len(val) == 5 and len(train) == 49
    assert not (train & val or train & test or val & test) and train | val | test == set(range(60))


def test_a_flat_tree_trains_and_evaluates(tmp_path):
    data = _build(_flat(tmp_path), batch_size=6)
    x, y = next(iter(data.train))
    assert x.shape == (6, 3, 16, 16) and y.shape == (6,)
    assert sum(len(y) for _, y in data.test) == 3 and sum(len(y) for _, y in data.val) == 3


def test_validation_colours_and_labels_survive_resize_crop_and_normalisation(tmp_path):
    data = _build(_tree(tmp_path))
    for split in (data.val, data.test):
        for x, y in split:
            for image, label in zip(_denormalise(x), y.tolist()):
                assert np.abs(image - list(COLOURS.values())[label]).max() < 3  # JPEG rounding only


def test_training_order_is_a_permutation_replayed_by_set_epoch(tmp_path):
    _tree(tmp_path, per_class=9)
    recipe = ImageRecipe(16, 24)
    train = _build(tmp_path, recipe).train
    orders = [torch.cat([y for _, y in train]).tolist() for _ in range(3)]
    assert all(len(order) == 24 and sorted(order) == sorted(orders[0]) for order in orders)  # the same images
    assert orders[0] != orders[1]
    again = _build(tmp_path, recipe).train
    again.set_epoch(2)
    assert torch.cat([y for _, y in again]).tolist() == orders[2]


def test_augmentation_replays_exactly_and_workers_change_nothing(tmp_path):
    _flat(tmp_path)
    recipe = ImageRecipe(16, 24, randaugment=10, randaugment_policy="official", train_crop="official",
                         interpolation="bicubic", mixup=True, mixup_pairing="disjoint", augment_before_mix=False)
    plain = _epoch(_build(tmp_path, recipe, batch_size=6).train)
    workers = _epoch(_build(tmp_path, recipe, batch_size=6, num_workers=2).train)
    for (a, ya), (b, yb) in zip(plain, workers):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    other = _epoch(_build(tmp_path, recipe, batch_size=6, seed=1).train)
    assert not torch.equal(plain[0][0], other[0][0])


@pytest.mark.parametrize("pairing", ["mirror", "disjoint"])
@pytest.mark.parametrize("before", [True, False])
def test_each_ddp_rank_loads_its_rows_of_the_same_global_batch(tmp_path, pairing, before):
    _flat(tmp_path)
    recipe = ImageRecipe(16, 24, randaugment=15, randaugment_policy="official", augment_before_mix=before,
                         mixup=True, mixup_pairing=pairing)
    whole = _epoch(_build(tmp_path, recipe, batch_size=6).train)
    ranks = [_epoch(_build(tmp_path, recipe, batch_size=6, rank=r, world_size=3).train) for r in range(3)]
    for step, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([rank[step][0] for rank in ranks]), x)
        assert torch.equal(torch.cat([rank[step][1] for rank in ranks]), y)


def test_a_rank_decodes_only_the_images_its_rows_need(tmp_path):
    _flat(tmp_path)
    recipe = ImageRecipe(16, 24, mixup=True, mixup_pairing="disjoint")
    plans = [list(_build(tmp_path, recipe, batch_size=6, rank=r, world_size=3).train._plans) for r in range(3)]
    for step in range(len(plans[0])):
        drawn = [plans[r][step].positions for r in range(3)]
        assert [len(d) for d in drawn] == [4, 4, 4]  # 2 rows, 2 images each, of the 12 drawn
        assert sorted(sum(drawn, ())) == list(range(12))  # disjoint: no drawn image decoded twice


def test_disjoint_pairing_reads_2b_images_per_step_and_keeps_the_epoch_length(tmp_path):
    _flat(tmp_path)  # 30 training images
    recipe = ImageRecipe(16, 24, mixup=True, mixup_pairing="disjoint")
    train = _build(tmp_path, recipe, batch_size=6).train
    plans = list(train._plans)
    assert len(train) == len(plans) == 5  # N // B steps, as the official schedule counts an epoch
    assert all(len(plan.samples) == 12 for plan in plans)
    x, targets = next(iter(train))
    assert x.shape == (6, 3, 16, 16) and targets.shape == (6, 3)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


def test_randaugment_changes_training_images_and_none_turns_it_off(tmp_path):
    _tree(tmp_path, per_class=8)

    def colour_errors(magnitude, policy):
        train = _build(tmp_path, ImageRecipe(16, 24, randaugment=magnitude, randaugment_policy=policy)).train
        return np.array([np.abs(image - list(COLOURS.values())[label]).max()
                         for x, y in train for image, label in zip(_denormalise(x), y.tolist())])

    assert colour_errors(None, "official").max() < 1  # crop and flip keep a solid colour
    for policy in ("official", "torchvision"):
        assert (colour_errors(15, policy) > 10).mean() > 0.5  # 4 ops at magnitude 15


def test_squash_evaluation_of_a_non_square_picture(tmp_path):
    _tree(tmp_path)
    picture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for name in COLOURS:
        for path in (tmp_path / "val" / name).iterdir():
            path.unlink()
        Image.fromarray(picture).save(tmp_path / "val" / name / "x.png")
    data = _build(tmp_path, ImageRecipe(16, 24, eval_resize="squash", interpolation="bicubic"))
    x, _ = next(iter(data.test))
    expected = np.asarray(Image.fromarray(picture).resize((56, 56), Image.BICUBIC), dtype=np.float64)[16:40, 16:40]
    assert np.abs(_denormalise(x)[0] - expected).max() < 0.01


def test_channels_last_option(tmp_path):
    data = _build(_tree(tmp_path), channels_last=True)
    for loader in (data.train, data.val, data.test):
        x, _ = next(iter(loader))
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_missing_root_and_split_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        _build(None)
    with pytest.raises(DataError, match="no class folders"):
        _build(tmp_path)
    _tree(tmp_path)
    for path in sorted((tmp_path / "val").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(DataError, match="val"):
        _build(tmp_path)


def test_empty_class_folder_raises_data_error(tmp_path):
    _tree(tmp_path)
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(DataError, match="dog"):
        _build(tmp_path)


def test_different_classes_in_train_and_val_raise_data_error(tmp_path):
    _tree(tmp_path)
    (tmp_path / "val" / "cat").rename(tmp_path / "val" / "cow")
    with pytest.raises(DataError, match="cow"):
        _build(tmp_path)


def test_too_large_batch_or_tuning_split_raise_data_error(tmp_path):
    _tree(tmp_path)
    with pytest.raises(DataError, match="batch_size 10"):
        _build(tmp_path, batch_size=10, val_size=3)
    with pytest.raises(DataError, match="data.val_size"):
        _build(tmp_path, val_size=12)


def test_randaugment_after_mixing_acts_on_each_mixed_image(tmp_path):
    """``augment_before_mix=False`` (official NFNets): the batch is the mixed batch without
    RandAugment, then RandAugment applied to each mixed image with that row's seed."""
    from study.data.imagefolder import _AUGMENT_MIXED
    from study.data.randaugment import RandAugment
    from study.data.seeds import derive_seed

    _flat(tmp_path)
    mix = dict(mixup=True, mixup_pairing="disjoint", train_crop="official", interpolation="bicubic")
    after = _build(tmp_path, ImageRecipe(16, 24, randaugment=15, randaugment_policy="official",
                                         augment_before_mix=False, **mix), batch_size=6).train
    plain = _build(tmp_path, ImageRecipe(16, 24, **mix), batch_size=6).train
    plan = next(iter(after._plans))
    augmented, targets = after.dataset[plan]
    mixed, plain_targets = plain.dataset[plan]
    assert torch.equal(targets, plain_targets)  # RandAugment never changes the labels' weights
    augment = RandAugment(15, 4, "official")
    for row, image in enumerate(mixed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(plan.seed, _AUGMENT_MIXED, row))
            assert torch.equal(augmented[row], augment(image))


def test_a_flat_tree_trains_end_to_end(tmp_path):
    """``root/<class>/*`` (torchvision's layout) trains: splits carved, a real run completes."""
    from study.config.run_config import make_config
    from study.train.trainer import train

    _flat(tmp_path)
    result = train(make_config({"data.name": "imagefolder", "data.root": str(tmp_path), "data.image_size": 8,
                                "data.batch_size": 6, "data.num_workers": 0, "data.mixup": True,
                                "model.name": "nf_resnet_small", "train.steps": 3, "train.device": "cpu"}))
    assert result["outcome"] == "completed" and result["steps"] == 3
    assert 0 <= result["test/top1"] <= 1 and 0 <= result["val/top1"] <= 1
