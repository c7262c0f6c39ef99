import numpy as np
import pytest
import torch
from PIL import Image

from study.data.imagefolder import build_imagefolder_loaders
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


def _denormalise(x):
    """Back to 0..255 pixel values, by the ImageNet statistics written out here."""
    return (x.permute(0, 2, 3, 1).numpy() * STD + MEAN) * 255


def _build(root, **overrides):
    args = dict(batch_size=4, train_size=16, test_size=24, randaugment_magnitude=10, num_workers=0,
                device="cpu", seed=0)
    args.update(overrides)
    return build_imagefolder_loaders(root, **args)


def test_shapes_lengths_and_classes(tmp_path):
    train, val, num_classes = _build(_tree(tmp_path))
    assert num_classes == 3
    assert len(train) == 3 and len(val) == 2  # 12 train images drop nothing; 6 val keep the last 2
    batches = list(train)
    assert len(batches) == 3
    x, y = batches[0]
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    vx = [x for x, _ in val]
    assert [len(v) for v in vx] == [4, 2] and vx[0].shape[1:] == (3, 24, 24)
    assert train.num_examples == len(train.dataset) == 12


def test_validation_colours_and_labels_survive_resize_crop_and_normalisation(tmp_path):
    _, val, _ = _build(_tree(tmp_path))
    for x, y in val:
        pixels = _denormalise(x)
        for image, label in zip(pixels, y.tolist()):
            colour = list(COLOURS.values())[label]
            assert np.abs(image - colour).max() < 3  # JPEG rounding only


def test_evaluation_resizes_shorter_side_to_test_plus_32_then_centre_crops(tmp_path):
    _tree(tmp_path)
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)  # height 48, width 64
    for name in COLOURS:
        for path in (tmp_path / "val" / name).iterdir():
            path.unlink()
        Image.fromarray(picture).save(tmp_path / "val" / name / "x.png")
    _, val, _ = _build(tmp_path, test_size=24)
    x, _ = next(iter(val))
    # Reference by PIL: shorter side 48 -> 56, longer side 64 -> int(56 * 64 / 48) = 74, centre 24x24.
    resized = np.asarray(Image.fromarray(picture).resize((74, 56), Image.BILINEAR), dtype=np.float64)
    top, left = round((56 - 24) / 2), round((74 - 24) / 2)
    expected = resized[top:top + 24, left:left + 24]
    assert np.abs(_denormalise(x)[0] - expected).max() < 1.5


def test_training_order_is_a_permutation_replayed_by_set_epoch(tmp_path):
    _tree(tmp_path, per_class=8)
    train, _, _ = _build(tmp_path, randaugment_magnitude=None)
    orders = [torch.cat([y for _, y in train]).tolist() for _ in range(3)]
    assert all(sorted(order) == [0] * 8 + [1] * 8 + [2] * 8 for order in orders)
    assert orders[0] != orders[1]
    again, _, _ = _build(tmp_path, randaugment_magnitude=None)
    again.set_epoch(2)
    assert torch.cat([y for _, y in again]).tolist() == orders[2]


def test_worker_processes_give_the_same_order(tmp_path):
    _tree(tmp_path)
    plain, _, _ = _build(tmp_path)
    workers, _, _ = _build(tmp_path, num_workers=2)
    for _ in range(2):
        assert torch.cat([y for _, y in workers]).tolist() == torch.cat([y for _, y in plain]).tolist()


def test_channels_last_option(tmp_path):
    train, _, _ = _build(_tree(tmp_path), channels_last=True)
    x, _ = next(iter(train))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_missing_root_and_split_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        _build(tmp_path / "nowhere")
    with pytest.raises(DataError, match="data.root"):
        _build(None)
    _tree(tmp_path)
    for path in sorted((tmp_path / "val").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (tmp_path / "val").rmdir()
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


def test_bad_batch_size_and_magnitude_raise_data_error(tmp_path):
    _tree(tmp_path)
    with pytest.raises(DataError, match="batch_size 13"):
        _build(tmp_path, batch_size=13)
    with pytest.raises(DataError, match="0..30"):
        _build(tmp_path, randaugment_magnitude=31)


def test_randaugment_changes_training_images_and_none_turns_it_off(tmp_path):
    _tree(tmp_path, per_class=8)

    def colour_errors(magnitude):
        torch.manual_seed(0)  # with num_workers=0 the augmentation draws from the global generator
        train, _, _ = _build(tmp_path, randaugment_magnitude=magnitude)
        errors = []
        for x, y in train:
            for image, label in zip(_denormalise(x), y.tolist()):
                errors.append(np.abs(image - list(COLOURS.values())[label]).max())
        return np.array(errors)

    assert colour_errors(None).max() < 1  # crop and flip keep a solid colour
    assert (colour_errors(15) > 10).mean() > 0.5  # 4 ops at magnitude 15 recolour, rotate, shear...
