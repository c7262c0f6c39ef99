
import pandas as pd
import pytest

from analysis import runs as runs_module
from analysis.runs import HISTORY_COLUMNS, RUN_COLUMNS, load_history, load_runs, parse_param, results

STUDY = "layout"


def _runs():
    base = {"agc.clipping": 0.01, "agc.exclude": ["head.fc.weight"], "sam.mode": "off", "optim.nesterov": True,
            "model.name": "nf_resnet_small", "data.batch_size": 256, "agc.eps": 1e-3}
    return [
        {"params": {**base, "seed": 0}, "arm": "agc", "hash": "a0",
         "metrics": {"test/top1": 0.91, "time/step_ms": 12.5}, "history": {"val/top1": [0.3, 0.6, 0.9]}},
        {"params": {**base, "agc.clipping": None, "seed": 0}, "arm": "nf", "hash": "n0", "outcome": "diverged",
         "metrics": {"test/top1": 0.1}, "history": {"val/top1": [0.1]}},
        {"params": {**base, "seed": 1}, "arm": "agc", "hash": "a1", "status": "FAILED", "metrics": {}},
        {"params": {**base, "seed": 2}, "arm": "agc", "hash": "a2", "status": "RUNNING", "metrics": {}},
        {"params": {**base, "seed": 3}, "arm": "agc", "hash": "a3", "status": "KILLED", "metrics": {}},
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory, store_filler):
    uri = f"sqlite:///{tmp_path_factory.mktemp('runs')}/mlflow.db"
    ids = store_filler(uri, STUDY, _runs())
    return uri, ids


@pytest.mark.parametrize("text, value", [
    ("None", None), ("True", True), ("false", False), ("0.01", 0.01), ("1e-3", 0.001), ("256", 256),
    ("off", "off"), ("nf_resnet_small", "nf_resnet_small"), ('["head.fc.weight"]', ["head.fc.weight"]), ("[]", []),
])
def test_parse_param(text, value):
    assert parse_param(text) == value and type(parse_param(text)) is type(value)


def test_load_runs_one_row_per_child_with_parsed_params(store):
    uri, ids = store
    frame = load_runs(STUDY, uri)
    assert list(frame.columns[:len(RUN_COLUMNS)]) == RUN_COLUMNS
    assert sorted(frame["run_id"]) == sorted(ids["children"])  # the parent is not a row
    first = frame.set_index("config_hash").loc["a0"]
    assert first["agc.clipping"] == 0.01 and first["agc.exclude"] == ["head.fc.weight"]
    assert first["optim.nesterov"] is True and first["sam.mode"] == "off" and first["seed"] == 0
    assert first["agc.eps"] == pytest.approx(1e-3) and first["arm"] == "agc"
    assert first["test/top1"] == pytest.approx(0.91) and first["time/step_ms"] == pytest.approx(12.5)
    assert first["val/top1"] == pytest.approx(0.9)  # the last logged value
    assert frame.set_index("config_hash").loc["n0"]["agc.clipping"] is None
    assert set(frame["status"]) == {"FINISHED", "FAILED", "RUNNING", "KILLED"}


def test_results_keep_finished_completed_and_diverged_only(store):
    frame = results(load_runs(STUDY, store[0]))
    assert sorted(frame["config_hash"]) == ["a0", "n0"]
    assert sorted(frame["outcome"]) == ["completed", "diverged"]


def test_results_count_a_rerun_config_once():
    frame = pd.DataFrame({"status": ["FINISHED", "FINISHED"], "outcome": ["completed", "completed"],
                          "config_hash": ["x", "x"], "end_time": pd.to_datetime([1, 2], unit="s"),
                          "test/top1": [0.5, 0.7]})
    assert results(frame)["test/top1"].tolist() == [0.7]


def test_load_runs_pages_through_every_run(store, monkeypatch):
    monkeypatch.setattr(runs_module, "_PAGE_SIZE", 2)
    assert len(load_runs(STUDY, store[0])) == 5


def test_load_history_long_format(store):
    history = load_history(STUDY, store[0], keys=["val/top1"])
    assert list(history.columns) == HISTORY_COLUMNS
    agc = history[history["arm"] == "agc"]
    assert agc["step"].tolist() == [0, 1, 2] and agc["value"].tolist() == pytest.approx([0.3, 0.6, 0.9])
    assert set(history["seed"]) == {0}


def test_missing_study_gives_empty_frames(store):
    assert load_runs("no-such-study", store[0]).empty
    assert list(load_runs("no-such-study", store[0]).columns) == RUN_COLUMNS
    assert list(load_history("no-such-study", store[0]).columns) == HISTORY_COLUMNS
