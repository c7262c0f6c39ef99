"""The NFNet recipe end to end: the ``nfnet`` preset trains on a generated image tree and
reports its EMA weights; the variant table sets the inputs; SAM's ascent runs under the run's
autocast; the recipe's config keys keep recorded runs' hashes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from study.config.run_config import HASH_NEUTRAL_DEFAULTS, RunConfig, make_config
from study.data import build_data
from study.models import input_defaults
from study.train.trainer import train

RECIPE_KEYS = ("data.val_size", "data.mixup_pairing", "data.randaugment_policy", "data.augment_before_mix",
               "data.train_crop", "data.interpolation", "data.eval_resize")


def _jpeg_tree(root, classes=("ant", "bee", "cat"), train=10, val=3):
    """root/{train,val}/<class>/*.JPEG: a few dozen small noisy pictures of varied sizes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
                pixels[..., c] = 255  # a class colour to learn
                Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)
    return root


def test_the_nfnet_preset_resolves_to_the_official_numbers(study_file):
    """``experiment_nfnets.py``'s config, key by key (docs/RECIPE.md)."""
    from study import expand, load_study

    spec = load_study(str(study_file("name: preset\nseeds: [0]\n")))
    (config,) = expand(spec, preset="nfnet", overrides={"data.root": "/data/imagenet"})
    assert config.model.name == "nfnet_f0" and config.model.dropout is None  # the variant's 0.2
    assert config.data.batch_size == 4096 and config.peak_lr == pytest.approx(1.6)
    assert (config.optim.momentum, config.optim.nesterov, config.optim.weight_decay) == (0.9, True, 2e-5)
    assert (config.train.epochs, config.optim.warmup_epochs, config.train.label_smoothing) == (360, 5, 0.1)
    assert config.optim.ema_decay == 0.99999 and config.train.precision == "bf16"
    assert (config.agc.clipping, config.agc.mode, config.agc.eps, config.agc.exclude) == (
        0.01, "unit", 1e-3, ["classifier.weight"])
    data = config.data
    assert (data.mixup, data.mixup_alpha, data.mixup_pairing, data.augment_before_mix) == (True, 0.2, "disjoint", False)
    assert (data.randaugment, data.randaugment_policy) == ("auto", "official")
    assert (data.train_crop, data.interpolation, data.eval_resize, data.val_size) == (
        "official", "bicubic", "squash", 10_000)
    assert config.sam.mode == "off"


def test_reports_lead_with_the_ema_weights_when_every_run_has_them():
    import pandas as pd

    from analysis.roles import headline_metric

    both = pd.DataFrame({"test/top1": [0.5, 0.6], "test/top1_ema": [0.55, 0.65]})
    assert headline_metric(both) == "test/top1_ema"
    mixed = both.assign(**{"test/top1_ema": [0.55, float("nan")]})  # one run without EMA
    assert headline_metric(mixed) == headline_metric(both.drop(columns="test/top1_ema")) == "test/top1"


def test_recipe_keys_are_hash_neutral_at_their_defaults():
    defaults = RunConfig().flat()
    for key in RECIPE_KEYS:
        assert key in HASH_NEUTRAL_DEFAULTS and HASH_NEUTRAL_DEFAULTS[key] == defaults[key], key
    base = {"data.name": "imagefolder", "data.root": "/data"}
    plain = make_config(base).config_hash()
    assert make_config({**base, "data.eval_resize": "squash"}).config_hash() != plain


def test_imagefolder_only_keys_are_refused_elsewhere():
    from study.errors import ConfigError

    with pytest.raises(ConfigError, match="data.randaugment_policy.*only data.name=imagefolder"):
        make_config({"data.randaugment_policy": "official"})
    with pytest.raises(ConfigError, match="data.val_size.*fixed validation split"):
        make_config({"data.val_size": 100})


def test_the_variant_table_sets_sizes_and_randaugment_of_an_imagefolder_run(tmp_path):
    _jpeg_tree(tmp_path)
    assert input_defaults("nfnet_f3") == input_defaults("bn_nfnet_f3")
    assert (input_defaults("nfnet_f3").image_size, input_defaults("nfnet_f3").randaugment) == (320, 15)
    assert input_defaults("nf_resnet50") is None
    base = {"data.name": "imagefolder", "data.root": str(tmp_path), "data.randaugment": "auto",
            "data.num_workers": 0, "data.val_size": 3}
    for name, train_size, test_size, magnitude in (("nfnet_f0", 192, 256, 5), ("nfnet_f3", 320, 416, 15),
                                                   ("nf_resnet50", 224, 224, None)):
        config = make_config({**base, "model.name": name})
        data = build_data(config.data, 4, torch.device("cpu"), 0, model_name=name)
        x, _ = next(iter(data.test))
        assert data.image_size == train_size and x.shape[-1] == test_size, name
        augment = data.train.dataset.augment
        assert (augment.magnitude if augment else None) == magnitude, name
    config = make_config({**base, "model.name": "nfnet_f3", "data.image_size": 64})
    data = build_data(config.data, 4, torch.device("cpu"), 0, model_name="nfnet_f3", channels_last=True)
    x, _ = next(iter(data.test))
    assert data.image_size == 64 and x.shape[-1] == 64  # image_size set: the test size follows it
    assert next(iter(data.train))[0].is_contiguous(memory_format=torch.channels_last)


def test_sam_ascent_runs_under_the_runs_autocast():
    """Every convolution of a bf16 run with SAM runs in bf16: the ascent pass included."""
    dtypes = []

    def record(module, args, out):
        if isinstance(module, torch.nn.Conv2d):
            dtypes.append(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train(make_config({"model.name": "nf_resnet_small", "data.image_size": 8, "data.batch_size": 16,
                                    "train.steps": 2, "train.device": "cpu", "train.precision": "bf16",
                                    "sam.mode": "fraction", "optim.ema_decay": 0.9}))
    finally:
        handle.remove()
    assert result["outcome"] == "completed" and dtypes and set(dtypes) == {torch.bfloat16}
    assert 0 <= result["test/top1_ema"] <= 1 and result["test/loss_ema"] > 0


def test_the_readme_command_validates_with_the_nfnet_preset(tmp_path, nfstudy_home, capsys):
    from study.cli import main

    root = _jpeg_tree(tmp_path / "imagenet")
    code = main(["run", "clip-threshold", "--preset", "nfnet", "--set", f"data.root={root}", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "45 to run" in out  # 3 batch sizes x 5 lambdas x 3 seeds, F0 each


@pytest.mark.slow
def test_the_nfnet_preset_trains_on_a_jpeg_tree_logs_ema_and_reports(tmp_path, study_file, nfstudy_home, capsys):
    from mlflow.tracking import MlflowClient

    from study import paths
    from study.cli import main

    root = _jpeg_tree(tmp_path / "imagenet")
    path = study_file("name: nfnet-smoke\ndescription: the nfnet preset, two steps\nseeds: [0]\n")
    tiny = ["--set", "data.image_size=16", "--set", "data.test_image_size=16", "--set", "data.batch_size=8",
            "--set", "data.val_size=3", "--set", "train.steps=2", "--set", "optim.warmup_epochs=null",
            "--set", "train.checkpoint_every=null", "--set", "data.num_workers=1",
            # fp32: torch 2.14's oneDNN bf16 convolution backward on the CPU gives NaN gradients
            # at random for this net at 16 px (docs/RECIPE.md); the preset's bf16 is for GPUs
            "--set", "train.precision=fp32"]
    args = [str(path), "--preset", "nfnet", "--set", f"data.root={root}", *tiny]
    assert main(["run", *args]) == 0
    assert "1 completed" in capsys.readouterr().out
    client = MlflowClient(paths.tracking_uri())
    experiment = client.get_experiment_by_name("nfnet-smoke")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`nfstudy.role` = 'child'")
    params, metrics = run.data.params, run.data.metrics
    assert params["model.name"] == "nfnet_f0" and params["data.mixup_pairing"] == "disjoint"
    assert params["optim.ema_decay"] == "0.99999" and params["data.randaugment"] == "auto"
    assert metrics["steps"] == 2 and {"test/top1_ema", "test/loss_ema", "val/top1_ema"} <= set(metrics)
    assert metrics["time/images_per_s"] > 0 and metrics["time/step_ms"] > 0
    assert main(["report", *args]) == 0
    report = next((nfstudy_home / "reports").glob("nfnet-smoke-*/*/report.md")).read_text()
    assert "test/top1_ema (95% CI)" in report  # the headline is the EMA weights' accuracy
