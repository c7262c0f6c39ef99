import numpy as np
import pytest
import torch
from cifar_files import to_rows, write, write_cifar10  # tests/ is on sys.path under pytest
from torchvision.datasets import CIFAR10, CIFAR100

from study.data.cifar import cifar_mean_std, load_cifar
from study.errors import DataError


def _write_cifar100(root, num_train=4, num_test=2, seed=1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    splits = {}
    for split, n in (("train", num_train), ("test", num_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        write(folder / split, {"filenames": ["x.png"] * n, "batch_label": split, "fine_labels": fine,
                                "coarse_labels": [f // 5 for f in fine], "data": to_rows(x)})
        splits[split] = (x, np.array(fine))
    write(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                             "coarse_label_names": [f"s{i}" for i in range(20)]})
    return splits


def test_cifar10_pixels_labels_and_shapes(tmp_path):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path)
    tx, ty, vx, vy, num_classes = load_cifar("cifar10", tmp_path, False, "cpu")
    assert num_classes == 10
    assert tx.shape == (10, 3, 32, 32) and tx.dtype == torch.uint8
    assert vx.shape == (3, 3, 32, 32) and ty.dtype == torch.int64
    assert np.array_equal(tx.permute(0, 2, 3, 1).numpy(), train_x)
    assert np.array_equal(ty.numpy(), train_y)
    assert np.array_equal(vx.permute(0, 2, 3, 1).numpy(), test_x)
    assert np.array_equal(vy.numpy(), test_y)


@pytest.mark.parametrize("name, dataset", [("cifar10", CIFAR10), ("cifar100", CIFAR100)])
def test_agrees_with_torchvisions_reader(tmp_path, name, dataset):
    (write_cifar10 if name == "cifar10" else _write_cifar100)(tmp_path)

    class WithoutChecksums(dataset):  # torchvision's own parser; tiny files cannot match its md5s
        train_list = [[f, None] for f, _ in dataset.train_list]
        test_list = [[f, None] for f, _ in dataset.test_list]
        meta = {**dataset.meta, "md5": None}

    tx, ty, vx, vy, num_classes = load_cifar(name, str(tmp_path), False, "cpu")
    for train, (x, y) in ((True, (tx, ty)), (False, (vx, vy))):
        reference = WithoutChecksums(str(tmp_path), train=train)
        assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), reference.data)
        assert y.tolist() == reference.targets
    assert num_classes == len(reference.classes)


def test_cifar100_uses_fine_labels(tmp_path):
    splits = _write_cifar100(tmp_path)
    tx, ty, vx, vy, num_classes = load_cifar("cifar100", tmp_path, False, torch.device("cpu"))
    assert num_classes == 100
    assert np.array_equal(ty.numpy(), splits["train"][1])
    assert np.array_equal(vx.permute(0, 2, 3, 1).numpy(), splits["test"][0])


def test_missing_directory_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar("cifar10", tmp_path / "nowhere", False, "cpu")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "data.root" in message and "data.download=true" in message
    assert "\n" not in message


def test_incomplete_directory_names_the_missing_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_cifar("cifar10", tmp_path, False, "cpu")


def test_download_is_skipped_when_the_files_are_there(tmp_path):
    write_cifar10(tmp_path)  # no network here: a download attempt would fail the test
    assert load_cifar("cifar10", tmp_path, True, "cpu")[0].shape[0] == 10


def test_truncated_file_raises_data_error(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="test_batch"):
        load_cifar("cifar10", tmp_path, False, "cpu")


def test_foreign_file_raises_data_error(tmp_path):
    write_cifar10(tmp_path)
    write(tmp_path / "cifar-10-batches-py" / "data_batch_1", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(DataError, match="3072"):
        load_cifar("cifar10", tmp_path, False, "cpu")


def test_no_root_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        load_cifar("cifar10", None, False, "cpu")
    with pytest.raises(DataError, match="cifar10, cifar100"):
        load_cifar("cifar20", tmp_path, False, "cpu")


def test_mean_std():
    mean, std = cifar_mean_std("cifar10")
    assert len(mean) == len(std) == 3
    assert all(0.4 < m < 0.52 for m in mean) and all(0.2 < s < 0.3 for s in std)
    assert cifar_mean_std("cifar100") != (mean, std)
    with pytest.raises(DataError):
        cifar_mean_std("mnist")
