"""A data set's layout is checked before anything is written: ``check_layout`` directly, and
through ``nfstudy run`` (one line, exit 2, nothing under $NFSTUDY_HOME)."""

from __future__ import annotations

import pytest
from PIL import Image

from study.cli import main
from study.data.layout import FLAT, SPLIT, check_layout, imagefolder_layout
from study.errors import DataError


def _images(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")


def _split_tree(root):
    for split in ("train", "val"):
        for name in ("a", "b"):
            _images(root / split / name)
    return root


def test_the_two_imagefolder_layouts(tmp_path):
    assert imagefolder_layout(_split_tree(tmp_path / "split")) == SPLIT
    for name in ("a", "b"):
        _images(tmp_path / "flat" / name)
    _images(tmp_path / "flat" / "c" / "nested")  # images in subfolders count, as for torchvision
    assert imagefolder_layout(tmp_path / "flat") == FLAT
    check_layout("imagefolder", tmp_path / "flat")


@pytest.mark.parametrize("damage, match", [
    (lambda root: (root / "train" / "c").mkdir(), "train: class folder.s. c hold no image"),
    (lambda root: (root / "val" / "b").rename(root / "val" / "z"), "only in train: .'b'.*only in val: .'z'"),
    (lambda root: [p.unlink() for p in (root / "val").rglob("*.png")], "hold no image"),
])
def test_broken_split_trees(tmp_path, damage, match):
    root = _split_tree(tmp_path)
    damage(root)
    with pytest.raises(DataError, match=match):
        check_layout("imagefolder", root)


def test_train_without_val_and_a_folder_of_files(tmp_path):
    _images(tmp_path / "t" / "train" / "a")
    with pytest.raises(DataError, match="val does not"):
        check_layout("imagefolder", tmp_path / "t")
    _images(tmp_path / "loose")
    with pytest.raises(DataError, match="no class folders"):
        check_layout("imagefolder", tmp_path / "loose")


@pytest.mark.parametrize("name", ["imagefolder", "cifar10"])
def test_a_plain_file_as_root_is_refused_even_with_download(tmp_path, name):
    path = tmp_path / "data.tar"
    path.write_bytes(b"not a directory")
    for download in (False, True):
        with pytest.raises(DataError, match="is a file, not a directory"):
            check_layout(name, path, download)


def test_cifar_needs_its_batch_files_unless_downloading(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "batches.meta"):
        (folder / name).write_bytes(b"")
    with pytest.raises(DataError, match="missing data_batch_5, test_batch"):
        check_layout("cifar10", tmp_path)
    check_layout("cifar10", tmp_path, download=True)  # the loader fetches the archive
    for name in ("data_batch_5", "test_batch"):
        (folder / name).write_bytes(b"")
    check_layout("cifar10", tmp_path)  # quick: the files are there (reading checks their contents)


def test_missing_roots_and_embedded_data_sets(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        check_layout("imagefolder", tmp_path / "nowhere")
    with pytest.raises(DataError, match="data.root is not set"):
        check_layout("cifar100", None)
    check_layout("digits", None)
    check_layout("fake", tmp_path / "nowhere")


def _run_one_line_error(capsys, home, *args):
    code = main(["run", *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []
    assert written == [], f"bad input wrote {written}"
    return lines[0]


def test_nfstudy_run_refuses_a_bad_layout_before_writing_anything(study_file, tmp_path, nfstudy_home, capsys):
    path = study_file("name: layout\nbase: presets/smoke.yaml\nseeds: [0]\n")
    plain = tmp_path / "images.zip"
    plain.write_bytes(b"zip")
    line = _run_one_line_error(capsys, nfstudy_home, str(path), "--set", "data.name=imagefolder",
                               "--set", f"data.root={plain}")
    assert "is a file, not a directory" in line
    empty = tmp_path / "tree"
    (empty / "cat").mkdir(parents=True)
    line = _run_one_line_error(capsys, nfstudy_home, str(path), "--set", "data.name=imagefolder",
                               "--set", f"data.root={empty}")
    assert "cat hold no image" in line
    line = _run_one_line_error(capsys, nfstudy_home, str(path), "--set", "data.name=cifar10",
                               "--set", f"data.root={tmp_path}")
    assert "cifar10 not found" in line and "data_batch_1" in line
