"""Your own model and data: timm models, plugins in every process, python: data factories,
and the README's worked example (examples/) with several workers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study import make_config
from study.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _children(experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    from study import paths

    client = MlflowClient(paths.tracking_uri(None))
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.`nfstudy.role` = 'child'")


def _nfstudy(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def walkthrough(tmp_path):
    """The README's worked example in a fresh folder: examples/ copied, the ImageFolder made
    by examples/make_shapes.py (as the README says), 30 images a class to stay quick."""
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "examples/make_shapes.py", "shapes", "30"], cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    assert "3 classes" in done.stdout
    return tmp_path


@pytest.mark.slow
def test_the_readme_walkthrough_trains_a_timm_and_a_plugin_model_with_two_workers(walkthrough):
    done = _nfstudy("run", "examples/own_model.yaml", "--workers", "2", "--preset", "smoke", cwd=walkthrough)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "own-model: 4 completed, 0 diverged, 0 failed" in done.stdout
    runs = _children("own-model")
    assert sorted(r.data.params["model.name"] for r in runs) == ["timm/resnet10t"] * 2 + ["tiny_cnn"] * 2
    assert {r.data.params["data.name"] for r in runs} == {"python:my_data:shapes"}
    assert {r.data.params["data.id"] for r in runs} != {"None"}  # the user's files are in each run's identity
    again = _nfstudy("run", "examples/own_model.yaml", "--workers", "2", "--preset", "smoke", cwd=walkthrough)
    assert again.returncode == 0 and "4 were already done" in again.stdout

    # Editing the plugin's code makes its runs stale; a comment does not.
    plugin = walkthrough / "examples" / "my_models.py"
    plugin.write_text(plugin.read_text() + "\n# a comment changes nothing\n")
    shown = _nfstudy("show", "examples/own_model.yaml", "--preset", "smoke", cwd=walkthrough)
    assert "4 done" in shown.stdout, shown.stdout + shown.stderr
    plugin.write_text(plugin.read_text().replace("width=16", "width=8"))
    shown = _nfstudy("show", "examples/own_model.yaml", "--preset", "smoke", cwd=walkthrough)
    assert "stale" in shown.stdout and "4 done" not in shown.stdout, shown.stdout


def test_a_timm_model_builds_with_its_classifier_excluded_from_agc():
    from study.models import build_model
    from study.optim.agc import agc_parameters

    model = build_model("timm/resnet10t", num_classes=3, in_chans=1, dropout=None, stochastic_depth=None,
                        classifier_init_std=0.01)
    head = model.get_classifier()
    assert head.out_features == 3 and abs(head.weight.std().item() - 0.01) < 0.003
    clipped = {id(p) for p in agc_parameters(model)}
    assert id(head.weight) not in clipped and id(head.bias) in clipped
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_an_unknown_timm_model_is_one_line():
    with pytest.raises(ConfigError, match="timm has no model 'resnet_nosuch'"):
        make_config({"model.name": "timm/resnet_nosuch"})


def test_timm_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r"needs timm, an optional extra: pip install 'nfstudy\[timm\]'"):
        make_config({"model.name": "timm/resnet10t"})


PLUGIN = '''
from collections import OrderedDict

import torch
from torch import nn
from study import register_dataset, register_model

@register_model("{model}")
def build(*, num_classes, in_chans=3):
    # A layer named 'classifier': AGC's default exclusion finds it by name.
    return nn.Sequential(OrderedDict(flat=nn.Flatten(), classifier=nn.Linear(in_chans * 8 * 8, num_classes)))

@register_dataset("{data}")
def tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = (x.float().mean((1, 2, 3)) > 127).long()
    return {{"train": (x[:64], y[:64]), "val": (x[64:80], y[64:80]), "test": (x[80:], y[80:]), "num_classes": 2}}
'''


def _study(tmp_path: Path, module: str, model: str, data: str) -> Path:
    (tmp_path / f"{module}.py").write_text(PLUGIN.format(model=model, data=data))
    path = tmp_path / "plugged.yaml"
    path.write_text(f"""name: plugged
plugins: [{module}]
fixed: {{model.name: {model}, data.name: {data}, data.batch_size: 16, train.steps: 3, data.crop_pad: 0}}
arms: {{a: {{}}, b: {{agc.clipping: 0.01}}}}
seeds: [0]
""")
    return path


@pytest.mark.slow
def test_a_plugin_model_and_data_set_train_in_two_worker_processes(tmp_path):
    path = _study(tmp_path, "plugin_two_workers", "flat_linear", "noise_tensors")
    elsewhere = tmp_path / "elsewhere"  # the plugin is found from the study file's folder, not the cwd
    elsewhere.mkdir()
    done = _nfstudy("run", str(path), "--workers", "2", cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 completed, 0 diverged, 0 failed" in done.stdout
    runs = _children("plugged")
    assert {r.data.params["model.name"] for r in runs} == {"flat_linear"}
    assert all(float(r.data.metrics["val/top1"]) >= 0 for r in runs)


def test_a_plugin_that_cannot_be_imported_is_one_line(study_file, capsys):
    from study.cli import main

    path = study_file("name: broken\nplugins: [no_such_plugin_module]\nseeds: [0]\n")
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: plugin 'no_such_plugin_module': cannot import it") and err.count("\n") == 1


def test_a_python_data_factory_of_datasets_is_batched_in_a_seeded_replayable_order(tmp_path, monkeypatch):
    from study.config.run_config import DataConfig
    from study.data import build_data

    (tmp_path / "listed_data.py").write_text('''
import torch
from torch.utils.data import TensorDataset

def splits(root):
    x = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1).expand(40, 1, 4, 4).clone()
    y = torch.arange(40) % 4
    return TensorDataset(x, y), TensorDataset(x[:10], y[:10]), TensorDataset(x[:7], y[:7])
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = DataConfig(name="python:listed_data:splits", num_workers=0)
    data = build_data(cfg, 8, torch.device("cpu"), seed=3)
    assert (data.num_classes, data.in_chans, data.image_size, data.num_train) == (4, 1, 4, 40)
    assert len(data.train) == 5 and len(data.test) == 1
    first = [x[:, 0, 0, 0].tolist() for x, _ in data.train]
    second = [x[:, 0, 0, 0].tolist() for x, _ in data.train]
    assert sorted(sum(first, [])) == list(range(40)) and first != second  # every example once, a new order
    data.train.set_epoch(0)
    assert [x[:, 0, 0, 0].tolist() for x, _ in data.train] == first  # an epoch replays
    halves = [build_data(cfg, 8, torch.device("cpu"), seed=3, rank=r, world_size=2).train for r in (0, 1)]
    rows = [[x[:, 0, 0, 0].tolist() for x, _ in half] for half in halves]
    assert [a + b for a, b in zip(*rows)] == first  # two DDP ranks: the rows of the same global batches


def test_a_bad_python_data_name_is_one_line():
    with pytest.raises(ConfigError, match="expected python:package.module:function"):
        make_config({"data.name": "python:only_a_module"})
    with pytest.raises(ConfigError, match="unknown data set 'nosuch'"):
        make_config({"data.name": "nosuch"})


@pytest.mark.slow
def test_a_plugin_model_and_data_set_train_as_a_two_rank_ddp_job(tmp_path):
    from study.cli import main

    path = _study(tmp_path, "plugin_ddp_ranks", "flat_linear_ddp", "noise_tensors_ddp")
    assert main(["run", str(path), "--nproc-per-node", "2", "--only", "a"]) == 0
    (run,) = _children("plugged")
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == "flat_linear_ddp"
    assert run.data.metrics["steps"] == 3
