import pytest

from study.config.run_config import RunConfig, make_config
from study.config.study_file import StudySpec
from study.errors import ConfigError


def test_defaults_match_design():
    cfg = RunConfig()
    assert cfg.data.name == "digits"
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9 and cfg.optim.nesterov
    assert cfg.optim.weight_decay == 2e-5
    assert cfg.agc.clipping is None and cfg.agc.mode == "unit" and cfg.agc.eps == 1e-3
    assert cfg.agc.exclude == ["classifier.weight"]
    assert cfg.sam.mode == "off" and cfg.sam.rho == 0.05 and cfg.sam.fraction == 0.2
    assert cfg.seed == 0


def test_dotted_overrides_build_nested_config():
    cfg = make_config({"agc.clipping": 0.02, "data.batch_size": 64, "sam.mode": "fraction"})
    assert cfg.agc.clipping == 0.02 and cfg.data.batch_size == 64 and cfg.sam.mode == "fraction"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"agc.cliping": 0.1}, "did you mean 'agc.clipping'"),
        ({"data.batch_size": 0}, "data.batch_size"),
        ({"data.batch_size": "large"}, "data.batch_size"),
        ({"agc.clipping": -0.01}, "agc.clipping"),
        ({"sam.fraction": 1.5}, "sam.fraction"),
        ({"train.epochs": 0}, "train.epochs"),
        ({"model.name": "resnet9000"}, "unknown model 'resnet9000'"),
        ({"data.name": "mnist"}, "data.name"),
        ({"agc.mode": "row"}, "agc.mode"),
        ({"train.device": "tpu"}, "unknown device"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(overrides, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        make_config(overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_every_problem_is_reported_not_only_the_first():
    with pytest.raises(ConfigError) as info:
        make_config({"data.batch_size": 0, "agc.clipping": -1})
    assert "data.batch_size" in str(info.value) and "agc.clipping" in str(info.value)


def test_hash_is_independent_of_key_order_and_source():
    a = make_config({"agc.clipping": 0.01, "data.batch_size": 256})
    b = make_config({"data.batch_size": 256, "agc.clipping": 0.01})
    c = make_config({"data.batch_size": 256, "agc.clipping": 0.01, "optim.lr": 0.1})  # the default
    assert a.config_hash() == b.config_hash() == c.config_hash()


def test_any_value_change_changes_the_hash():
    base = make_config({"agc.clipping": 0.01})
    for key, value in [("agc.clipping", 0.02), ("seed", 1), ("agc.mode", "layer"), ("data.batch_size", 64)]:
        assert make_config({"agc.clipping": 0.01, key: value}).config_hash() != base.config_hash()


def test_machine_local_keys_do_not_change_the_hash():
    assert make_config({"train.device": "cpu"}).config_hash() == make_config({}).config_hash()


def test_norm_twin_resolves_model_name():
    assert make_config({"model.name": "nf_resnet_small", "model.norm": "bn"}).model.resolved_name == "bn_resnet_small"
    assert make_config({"model.name": "bn_resnet_small", "model.norm": "nf"}).model.resolved_name == "nf_resnet_small"


def test_study_spec_rejects_extra_keys_and_empty_axes():
    with pytest.raises(Exception, match="extra"):
        StudySpec.model_validate({"name": "x", "grids": {}})
    with pytest.raises(Exception, match="empty"):
        StudySpec.model_validate({"name": "x", "grid": {"agc.clipping": []}})
    with pytest.raises(ConfigError, match="did you mean 'agc.clipping'"):
        StudySpec.model_validate({"name": "x", "grid": {"agc.clip": [0.1]}})


# -- YAML 1.1 traps: off/on/yes/no where a string is expected ---------------------------------

def test_off_is_a_string_in_study_files_and_set_values(study_file):
    from study.config.expand import parse_overrides, plan
    from study.config.study_file import load_study

    spec = load_study(study_file("name: s\nbase: presets/smoke.yaml\nseeds: [0]\n"
                                 "arms:\n  off: {sam.mode: off}\n  on: {sam.mode: full}\n"))
    assert list(spec.arms) == ["off", "on"]
    assert [run.config.sam.mode for run in plan(spec)] == ["off", "full"]
    assert parse_overrides(["sam.mode=off", "data.flip=yes", "optim.lr=1e-3", "train.steps=010"]) == {
        "sam.mode": "off", "data.flip": "yes", "optim.lr": 0.001, "train.steps": 10}
    assert make_config(parse_overrides(["data.flip=yes"])).data.flip is True  # a boolean key still reads yes/no


def test_a_study_file_that_is_not_utf8_is_one_line(tmp_path):
    from study.config.study_file import load_study

    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 24\)"):
        load_study(path)


# -- names the report reads are checked when the study is read -------------------------------

@pytest.mark.parametrize("study, fragment", [
    ({"metric": "val/acc"}, "metric: unknown metric 'val/acc'; recorded: train/loss, val/loss, val/top1"),
    ({"figures": [{"x": "arm", "y": "test/accuracy"}]}, "y: unknown metric 'test/accuracy'"),
    ({"figures": [{"x": "agc.clip", "y": "test/top1"}]}, "x: unknown column 'agc.clip' (did you mean 'agc.clipping'?)"),
    ({"figures": [{"x": "arm", "hue": "batch_size"}]}, "hue: unknown column 'batch_size'"),
    ({"nuisance": ["seeds"]}, "nuisance: unknown column 'seeds' (did you mean 'seed'?)"),
    ({"figures": [{"x": "arm", "style": "arm"}]}, "unknown field 'figures.0.style'"),
])
def test_names_the_report_reads_are_checked_at_load_time(study, fragment):
    from study.config.describe import describe

    with pytest.raises(Exception) as info:
        StudySpec.model_validate({"name": "x", **study})
    message = describe(info.value, StudySpec) if hasattr(info.value, "errors") else str(info.value)
    assert fragment in message


def test_every_registered_figure_and_metric_is_a_recorded_name():
    from study.config.study_file import list_studies, load_study
    from study.record.tags import METRICS

    for name in list_studies():
        spec = load_study(name)
        assert spec.metric in METRICS and all(f.y in METRICS for f in spec.figures), name


def test_a_study_without_seeds_warns_naming_the_consequence():
    assert StudySpec.model_validate({"name": "x", "seeds": [0]}).warnings == []
    (warning,) = StudySpec.model_validate({"name": "x"}).warnings
    assert "seed 0 only" in warning and "no interval over seeds" in warning and "seeds: [0, 1, 2]" in warning


# -- data.id: the data set's identity --------------------------------------------------------

def test_data_id_is_hash_neutral_when_unset_and_hashed_when_set():
    assert make_config({"data.id": None}).config_hash() == make_config({}).config_hash()
    assert make_config({"data.id": "imagenet-2012"}).config_hash() != make_config({}).config_hash()
    assert make_config({"data.root": "/a"}).config_hash() == make_config({"data.root": "/b"}).config_hash()
