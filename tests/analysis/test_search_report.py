"""The search report: trials written into a real Optuna storage (as ``nfstudy search``
records them), then the report read back from report.md and the figure files."""

from __future__ import annotations

import json

import pandas as pd
from optuna.trial import TrialState

from analysis.search_report import build_search_report, good_region
from analysis.trials import load_trials
from study import paths
from study.cli import main
from study.config.study_file import load_study

STUDY = """\
name: lam
base: presets/smoke.yaml
fixed: {{model.norm: nf, data.device_batch_size: 512, train.steps: 2}}
search:
  agc.clipping: {{low: 0.001, high: 1.0, log: true}}
{extra}
"""


def test_the_report_puts_the_best_lambda_per_batch_beside_the_paper(study_file, search_filler):
    spec = load_study(study_file(STUDY.format(extra="")))
    storage = paths.optuna_storage()
    (paths.home()).mkdir(parents=True, exist_ok=True)
    done, pruned = TrialState.COMPLETE, TrialState.PRUNED
    search_filler(storage, "lam", "nfstudy-search:lam:aaaa1111", 1024, [
        ({"agc.clipping": 0.002}, 0.80, done, "completed"),
        ({"agc.clipping": 0.01}, 0.95, done, "completed"),
        ({"agc.clipping": 0.03}, 0.948, done, "completed"),
        ({"agc.clipping": 0.5}, 0.10, done, "diverged"),
        ({"agc.clipping": 0.9}, 0.30, pruned, "pruned"),
    ])
    search_filler(storage, "lam", "nfstudy-search:lam:bbbb2222", 4096, [
        ({"agc.clipping": 0.005}, 0.90, done, "completed"),
        ({"agc.clipping": 0.2}, 0.70, done, "completed"),
    ])
    search_filler(storage, "other", "nfstudy-search:other:cccc3333", 1024,
                  [({"agc.clipping": 0.1}, 0.99, done, "completed")])

    written = build_search_report(spec, storage, None, paths.reports_dir("lam"), "nfstudy report lam")
    by_batch = {row["batch"]: row for row in written["best"]}
    assert set(by_batch) == {1024, 4096}  # the other search's study is not read
    assert by_batch[1024]["params"] == {"agc.clipping": 0.01} and by_batch[1024]["value"] == 0.95
    assert by_batch[4096]["params"] == {"agc.clipping": 0.005}
    markdown = written["markdown"].read_text()
    row_1024 = next(line for line in markdown.splitlines() if "aaaa1111` | 1024 | 4/" in line)
    # 3 complete + 1 diverged-complete, 1 pruned; good region: within one point of 0.95.
    assert "| 4/1/1 | 0.01 | 0.9500 |" in row_1024 and "0.01 – 0.03" in row_1024 and row_1024.endswith("| 0.01 | yes |")
    assert "λ = 0.01 for batch 1024–4096" in markdown
    names = sorted(p.name for p in written["figures"])
    assert names == ["history.png", "history.svg", "param-agc_clipping.png", "param-agc_clipping.svg"]
    assert all(p.stat().st_size > 1000 for p in written["figures"])
    assert "data:image/png;base64," in written["html"].read_text()
    assert json.loads(written["summary"].read_text())["n_results"] == 6


def test_importance_is_drawn_when_more_than_one_key_is_searched(study_file, search_filler):
    spec = load_study(study_file(STUDY.format(extra="  data.batch_size: {low: 64, high: 4096}\n")))
    storage = paths.optuna_storage()
    paths.home().mkdir(parents=True, exist_ok=True)
    rows = [({"agc.clipping": lam, "data.batch_size": batch}, 0.9 - abs(lam - 0.01) * 2, TrialState.COMPLETE,
             "completed") for lam, batch in [(0.001, 64), (0.01, 4096), (0.1, 1024), (0.5, 256), (0.05, 2048)]]
    search_filler(storage, "lam", "nfstudy-search:lam:dddd4444", None, rows)
    written = build_search_report(spec, storage, None, paths.reports_dir("lam"), "nfstudy report lam")
    assert any(p.name == "importance.png" for p in written["figures"])
    trials, _ = load_trials("lam", storage)
    assert sorted(trials["batch"]) == [64, 256, 1024, 2048, 4096]  # searched batch sizes colour the λ plot


def test_no_trials_yet_writes_a_report_that_says_so(study_file, capsys):
    path = study_file(STUDY.format(extra=""))
    assert main(["report", str(path)]) == 0
    report = paths.reports_dir(load_study(path).report_key) / "report.md"  # a file's own folder
    assert "No trials yet" in report.read_text()
    assert not (paths.home() / "optuna.db").exists()  # reading never creates the storage


def test_good_region_ignores_diverged_and_pruned_trials():
    rows = pd.DataFrame({
        "agc.clipping": [0.001, 0.01, 0.02, 0.5, 0.9],
        "value": [0.5, 0.95, 0.941, 0.95, 0.99],
        "state": ["COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"],
        "outcome": ["completed", "completed", "completed", "diverged", "pruned"],
    })
    assert good_region(rows, "agc.clipping", "maximize") == (0.01, 0.02)


def test_a_searched_key_without_a_paper_recommendation_gets_no_paper_columns(study_file, search_filler):
    text = STUDY.format(extra="").replace("agc.clipping: {{low: 0.001, high: 1.0, log: true}}".format(),
                                          "optim.lr: {low: 0.01, high: 1.0, log: true}")
    spec = load_study(study_file(text))
    storage = paths.optuna_storage()
    paths.home().mkdir(parents=True, exist_ok=True)
    search_filler(storage, "lam", "nfstudy-search:lam:eeee5555", 1024,
                  [({"optim.lr": lr}, 0.9 - lr / 10, TrialState.COMPLETE, "completed") for lr in (0.02, 0.1, 0.5)])
    markdown = build_search_report(spec, storage, None, paths.reports_dir("lam"), "nfstudy report lam")["markdown"]
    text = markdown.read_text()
    assert "No paper result recommends a value for `optim.lr`." in text and "paper recommends" not in text
    row = next(line for line in text.splitlines() if "eeee5555` | 1024 | 3/" in line)
    assert row.endswith("| 3/0/0 | 0.02 | 0.8980 | 0.8980 | 0.02 – 0.1 |")
