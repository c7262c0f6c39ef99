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


# -- --set on grid and arm keys ------------------------------------------------------------------

def test_set_on_a_grid_key_replaces_the_axis_and_names_the_runs_after_it(study_file):
    spec = load_study(study_file(STUDY))
    runs = plan(spec, overrides={"optim.lr": 0.2})
    assert len(runs) == 2 * 1 * 2 * 2  # the lr axis is one value now
    assert {run.point["optim.lr"] for run in runs} == {0.2} == {run.config.optim.lr for run in runs}
    assert all("lr=0.2" in run.name for run in runs)


def test_set_on_a_key_an_arm_sets_is_refused_saying_what_to_do(study_file):
    spec = load_study(study_file(STUDY))
    with pytest.raises(ConfigError, match=r"--set agc.clipping: the arms of tiny set it \(nf-agc: 0.02\).*copy of "
                                          r"the study file"):
        plan(spec, overrides={"agc.clipping": 0.04})


# -- presets own their scale ----------------------------------------------------------------------

def test_preset_caps_steps_whatever_the_study_fixes_and_says_so(study_file):
    spec = load_study(study_file("name: long\nbase: presets/digits.yaml\nseeds: [0]\n"
                                 "fixed: {train.steps: 250, data.device_batch_size: 128}\n"))
    (run,) = plan(spec, preset="smoke")
    assert run.config.train.steps == 4 and run.config.data.device_batch_size == 32
    assert run.capped == {"train.steps": 250, "data.device_batch_size": 128}
    (pinned,) = plan(spec, preset="smoke", overrides={"train.steps": 10})  # --set comes after the caps
    assert pinned.config.train.steps == 10 and pinned.capped == {"data.device_batch_size": 128}
    (own,) = plan(load_study(study_file("name: b\nbase: presets/smoke.yaml\nfixed: {train.steps: 300}\nseeds: [0]\n")))
    assert own.config.train.steps == 300 and own.capped == {}  # a study's own base is what it asks for


# -- where studies and presets are found -----------------------------------------------------------

def test_local_experiments_add_to_the_builtin_studies_and_presets(tmp_path, monkeypatch):
    local = tmp_path / "experiments"
    (local / "presets").mkdir(parents=True)
    (local / "mine.yaml").write_text("name: mine\nbase: tiny-scale\nseeds: [0]\n")
    (local / "presets" / "tiny-scale.yaml").write_text("train.steps: 2\ndata.image_size: 8\n")
    monkeypatch.chdir(tmp_path)
    assert {"mine", "quickstart", "clip-threshold"} <= set(list_studies())
    (run,) = plan(load_study("mine"))
    assert run.config.train.steps == 2
    assert plan(load_study("clip-threshold"), preset="tiny-scale")[0].config.train.steps == 2
    assert plan(load_study("mine"), preset="smoke")[0].config.data.device_batch_size == 32  # a built-in preset


def test_base_is_found_beside_the_study_file_first(tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    (folder / "presets").mkdir(parents=True)
    (folder / "presets" / "digits.yaml").write_text("train.steps: 7\n")  # shadows the built-in digits
    (folder / "s.yaml").write_text("name: s\nbase: presets/digits.yaml\nseeds: [0]\n")
    (other := tmp_path / "cwd").mkdir()
    monkeypatch.chdir(other)
    assert plan(load_study(folder / "s.yaml"))[0].config.train.steps == 7
    (folder / "presets" / "digits.yaml").unlink()  # then the search path: the built-in preset
    assert plan(load_study(folder / "s.yaml"))[0].config.train.steps == 300


def test_a_local_study_hides_the_builtin_of_its_name_and_says_so(tmp_path, monkeypatch):
    from study.config.study_file import hidden_studies, study_files

    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "quick.yaml").write_text("name: quickstart\nseeds: [0]\n")
    monkeypatch.chdir(tmp_path)
    assert study_files()["quickstart"] == tmp_path / "experiments" / "quick.yaml"
    assert list(hidden_studies().values()) == [tmp_path / "experiments" / "quick.yaml"]
    assert load_study("quickstart").report_key == "quickstart"


def test_two_study_files_with_one_name_get_two_report_folders(study_file):
    a = load_study(study_file("name: same\nseeds: [0]\n", "a.yaml"))
    b = load_study(study_file("name: same\nseeds: [0]\n", "b.yaml"))
    assert a.report_key != b.report_key and a.report_key.startswith("same-")
    assert load_study(study_file("name: same\nseeds: [0]\n", "a.yaml")).report_key == a.report_key
