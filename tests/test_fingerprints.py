"""What a run's identity covers besides its config: the code that trains it and the data it
reads. Real files, edited for real."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from study.config.code_fingerprint import PACKAGE, TRAINING_SOURCES, code_fingerprint, source_fingerprint
from study.data.fingerprint import data_fingerprint


@pytest.fixture
def package(tmp_path):
    """A copy of the package's training sources, to edit."""
    root = tmp_path / "study"
    for source in TRAINING_SOURCES:
        if source.endswith(".py"):
            (root / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE / source, root / source)
        else:
            shutil.copytree(PACKAGE / source, root / source, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_copy_has_the_packages_fingerprint(package):
    assert source_fingerprint(package, TRAINING_SOURCES) == code_fingerprint()


def test_comments_docstrings_and_blank_lines_leave_the_fingerprint(package):
    before = source_fingerprint(package, TRAINING_SOURCES)
    trainer = package / "train" / "trainer.py"
    _edit(trainer, '"""One training run:', '"""One training run, reworded:')
    _edit(trainer, "def train(", "# a new comment\n\n\ndef train(")
    _edit(trainer, '    """Train one run and return its final metrics.', '    """Train one run; return its metrics.')
    (package / "models" / "notes.txt").write_text("not python")
    assert source_fingerprint(package, TRAINING_SOURCES) == before


@pytest.mark.parametrize("path, old, new", [
    ("train/trainer.py", "DIVERGENCE_CHECK_EVERY = 25", "DIVERGENCE_CHECK_EVERY = 26"),
    ("optim/agc.py", "import torch", "import torch\n_UNUSED = 1"),
    ("config/run_config.py", "return self.optim.lr * self.data.batch_size / 256",
     "return self.optim.lr * self.data.batch_size / 255"),
])
def test_a_change_to_a_statement_changes_it(package, path, old, new):
    before = source_fingerprint(package, TRAINING_SOURCES)
    _edit(package / path, old, new)
    assert source_fingerprint(package, TRAINING_SOURCES) != before


def test_code_outside_the_training_sources_does_not_count(package):
    before = source_fingerprint(package, TRAINING_SOURCES)
    (package / "cli").mkdir()
    (package / "cli" / "app.py").write_text("print('a CLI change')\n")
    (package / "config" / "describe.py").write_text("x = 1\n")
    assert source_fingerprint(package, TRAINING_SOURCES) == before


def _image_tree(root, seed: int, classes=("a", "b"), per_class: int = 3) -> None:
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_imagefolder_fingerprint_follows_the_contents_not_the_path(tmp_path):
    _image_tree(tmp_path / "one", seed=0)
    shutil.copytree(tmp_path / "one", tmp_path / "copy")
    _image_tree(tmp_path / "other", seed=1)  # same names, other pixels
    one = data_fingerprint("imagefolder", tmp_path / "one")
    assert one.startswith("content:")
    assert data_fingerprint("imagefolder", tmp_path / "copy") == one
    assert data_fingerprint("imagefolder", tmp_path / "other") != one
    (tmp_path / "copy" / ".cache").write_text("hidden files are not data")
    assert data_fingerprint("imagefolder", tmp_path / "copy") == one
    (tmp_path / "copy" / "train" / "a" / "0.png").unlink()
    assert data_fingerprint("imagefolder", tmp_path / "copy") != one
    assert data_fingerprint("imagefolder", tmp_path / "missing") is None


def test_large_trees_are_fingerprinted_by_listing(tmp_path, monkeypatch):
    import study.data.fingerprint as fingerprint

    _image_tree(tmp_path / "one", seed=0)
    monkeypatch.setattr(fingerprint, "CONTENT_LIMIT", 10)
    assert data_fingerprint("imagefolder", tmp_path / "one").startswith("listing:")


def test_cifar_fingerprint_reads_the_batches_and_predicts_a_download(tmp_path):
    from cifar_files import write_cifar10

    write_cifar10(tmp_path / "a")
    write_cifar10(tmp_path / "b", seed=1)
    a = data_fingerprint("cifar10", tmp_path / "a")
    assert a.startswith("cifar:") and a != data_fingerprint("cifar10", tmp_path / "b")
    assert data_fingerprint("cifar10", tmp_path / "empty") is None
    official = data_fingerprint("cifar10", tmp_path / "empty", download=True)
    assert official.startswith("cifar:") and official != a  # the official files' MD5s, from torchvision


# -- through the CLI: stale runs are never reused silently, other data trains ---------------------

STUDY = "name: tiny\nbase: presets/smoke.yaml\ngrid: {model.norm: [nf, bn]}\nseeds: [0, 1]\n"


def _children(name: str, role: str = "child"):
    from mlflow.tracking import MlflowClient

    from study import paths

    client = MlflowClient(paths.tracking_uri())
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], f"tags.`nfstudy.role` = '{role}'")


@pytest.fixture
def edited_code(package, monkeypatch):
    """Point the running code's fingerprint at ``package`` and return an editor for it: what
    the fingerprint sees then is an edited copy of the training code."""
    import study.config.code_fingerprint as fingerprint

    def edit(path: str, old: str, new: str) -> str:
        _edit(package / path, old, new)
        monkeypatch.setattr(fingerprint, "PACKAGE", package)
        fingerprint._package_fingerprint.cache_clear()
        return fingerprint.code_fingerprint()

    yield edit
    fingerprint._package_fingerprint.cache_clear()


def test_a_code_change_makes_finished_runs_stale(study_file, edited_code, nfstudy_home, capsys):
    from study.cli import main

    path = str(study_file(STUDY))
    assert main(["run", path]) == 0
    old = {run.info.run_id: run.data.tags["nfstudy.code"] for run in _children("tiny")}
    assert len(old) == 4 and set(old.values()) == {code_fingerprint()}
    capsys.readouterr()

    edited_code("train/trainer.py", '"""Train one run', '"""Train one run (reworded docstring)')
    assert main(["run", path]) == 0  # a docstring cannot move a number: still done
    assert "tiny: 4 done, 0 to run" in capsys.readouterr().out

    new_code = edited_code("train/trainer.py", "DIVERGENCE_CHECK_EVERY = 25", "DIVERGENCE_CHECK_EVERY = 24")
    assert main(["run", path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 4 runs, 0 done, 4 stale found (trained by other code), 0 to run (dry run)" in out
    assert "a real run would stop here" in out and "--rerun-stale" in out
    assert main(["run", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tiny: 4 finished runs were trained by other code") and "\n" not in err
    assert len(_children("tiny")) == 4  # nothing trained, nothing marked

    assert main(["run", path, "--reuse-stale"]) == 0
    assert "tiny: 0 done, 4 stale reused (trained by other code), 0 to run" in capsys.readouterr().out
    assert main(["run", path, "--rerun-stale"]) == 0
    assert "tiny: 0 done, 4 stale superseded (trained by other code), 4 to run" in capsys.readouterr().out
    fresh = _children("tiny")
    assert len(fresh) == 4 and {run.data.tags["nfstudy.code"] for run in fresh} == {new_code}
    assert {run.info.run_id for run in _children("tiny", "superseded")} == set(old)
    assert main(["run", path]) == 0
    assert "tiny: 4 done, 0 to run" in capsys.readouterr().out


def test_runs_recorded_before_fingerprints_are_stale_with_a_hint(study_file, nfstudy_home, capsys):
    from mlflow.tracking import MlflowClient

    from study import paths
    from study.cli import main

    path = str(study_file(STUDY))
    assert main(["run", path]) == 0
    client = MlflowClient(paths.tracking_uri())
    for run in _children("tiny"):
        client.delete_tag(run.info.run_id, "nfstudy.code")  # as nfstudy recorded runs before
    capsys.readouterr()
    assert main(["run", path]) == 2
    assert "(4 recorded before nfstudy fingerprinted code)" in capsys.readouterr().err
    assert main(["show", path]) == 0
    assert "4 stale found (trained by other code, 4 of them unfingerprinted)" in capsys.readouterr().out


def test_a_second_imagefolder_with_other_images_trains(tmp_path, study_file, nfstudy_home, capsys):
    """Same file names, other pixels: the second study trains instead of copying the first's runs."""
    from study.cli import main

    _image_tree(tmp_path / "a", seed=0)
    _image_tree(tmp_path / "b", seed=1)
    template = ("name: {name}\nbase: presets/smoke.yaml\nseeds: [0]\nfixed:\n  data.name: imagefolder\n"
                "  data.root: {root}\n  data.batch_size: 4\n  data.num_workers: 0\n  train.steps: 2\n")
    assert main(["run", str(study_file(template.format(name="first", root=tmp_path / "a"), "a.yaml"))]) == 0
    capsys.readouterr()
    second = str(study_file(template.format(name="second", root=tmp_path / "b"), "b.yaml"))
    assert main(["run", second, "--dry-run"]) == 0
    assert "second: 1 runs, 0 done, 1 to run (dry run)" in capsys.readouterr().out
    assert main(["run", second]) == 0
    assert "0 done, 1 to run" in capsys.readouterr().out
    (first_run,), (second_run,) = _children("first"), _children("second")
    assert "nfstudy.copied_from" not in second_run.data.tags
    assert first_run.data.params["data.id"] != second_run.data.params["data.id"]
    assert first_run.data.tags["nfstudy.config_hash"] != second_run.data.tags["nfstudy.config_hash"]
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "a", moved)  # the same data elsewhere: the same run
    again = str(study_file(template.format(name="first", root=moved), "a.yaml"))
    assert main(["run", again]) == 0
    assert "first: 1 done, 0 to run" in capsys.readouterr().out


def test_a_symlink_loop_is_walked_once(tmp_path):
    _image_tree(tmp_path / "one", seed=0)
    before = data_fingerprint("imagefolder", tmp_path / "one")
    (tmp_path / "one" / "train" / "loop").symlink_to(tmp_path / "one" / "train")
    assert data_fingerprint("imagefolder", tmp_path / "one") == before
