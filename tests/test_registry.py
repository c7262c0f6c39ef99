import pytest

from study.config.expand import expand, parse_overrides, plan
from study.config.study_file import list_studies, load_study
from study.errors import ConfigError
from study.models import list_models

STUDY = """
name: tiny
base: presets/smoke.yaml
fixed: {data.batch_size: 64}
arms:
  nf: {model.norm: nf}
  nf-agc: {model.norm: nf, agc.clipping: 0.02}
grid:
  optim.lr: [0.1, 0.4]
  agc.mode: [unit, layer, unit]
seeds: [0, 1]
"""


def test_expansion_counts_arms_times_grid_times_seeds(study_file):
    spec = load_study(study_file(STUDY))
    runs = plan(spec)
    # 2 arms × 2 lr × 2 distinct modes ('unit' twice resolves to the same hash) × 2 seeds
    assert len(runs) == 2 * 2 * 2 * 2
    assert len({r.config_hash for r in runs}) == len(runs)
    assert len(expand(spec)) == len(runs)


def test_merge_order_preset_fixed_arm_grid_seed_set(study_file):
    spec = load_study(study_file(STUDY))
    runs = plan(spec, overrides={"agc.eps": 0.01})
    run = next(r for r in runs if r.arm == "nf-agc" and r.point["optim.lr"] == 0.4 and r.seed == 1)
    cfg = run.config
    assert cfg.train.steps == 4  # preset
    assert cfg.data.batch_size == 64  # fixed
    assert cfg.agc.clipping == 0.02  # arm
    assert cfg.optim.lr == 0.4  # grid
    assert cfg.seed == 1
    assert cfg.agc.eps == 0.01  # --set, last


def test_same_seeds_for_every_arm_even_with_overrides(study_file):
    spec = load_study(study_file(STUDY))
    runs = plan(spec, preset="digits", overrides={"train.steps": 2})
    seeds = {arm: sorted({r.seed for r in runs if r.arm == arm}) for arm in spec.arms}
    assert seeds == {"nf": [0, 1], "nf-agc": [0, 1]}


def test_the_registered_studies_include_the_quickstart():
    assert "quickstart" in list_studies()


@pytest.mark.parametrize("name", list_studies())
@pytest.mark.parametrize("preset", [None, "smoke"])
def test_registered_study_expands(name, preset):
    spec = load_study(name)
    runs = plan(spec, preset=preset)
    assert {r.arm for r in runs} == (set(spec.arms) if spec.arms else {""})  # every arm has runs
    assert {r.seed for r in runs} == set(spec.seeds)
    assert len({r.config_hash for r in runs}) == len(runs)
    assert all(r.config.model.resolved_name in list_models() for r in runs)


def test_set_values_are_yaml_scalars():
    assert parse_overrides(["agc.clipping=null", "data.flip=true", "optim.lr=0.4"]) == {
        "agc.clipping": None, "data.flip": True, "optim.lr": 0.4,
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["agc.clipping"])
    with pytest.raises(ConfigError, match="seeds"):
        parse_overrides(["seed=3"])


def test_invalid_grid_point_names_the_run(study_file):
    spec = load_study(study_file(STUDY.replace("[0.1, 0.4]", "[0.1, -1]")))
    with pytest.raises(ConfigError, match="optim.lr"):
        plan(spec)


def test_unknown_study_suggests_close_match():
    with pytest.raises(ConfigError, match="did you mean 'quickstart'"):
        load_study("quikstart")


def test_two_files_with_the_same_name_are_an_error(tmp_path, monkeypatch):
    (tmp_path / "a.yaml").write_text("name: same\n")
    (tmp_path / "b.yaml").write_text("name: same\n")
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(tmp_path))
    with pytest.raises(ConfigError, match="two study files are named 'same'"):
        load_study("same")
