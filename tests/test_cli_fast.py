"""list and show: answers from the plan cache and MLflow's SQLite store read directly, the
same answers as through MLflow; --json; the bench figure."""

from __future__ import annotations

import json

from cli_studies import tiny

from study.cli import main

TINY = tiny()


def test_show_and_list_json_after_a_run_and_a_copy(study_file, capsys, tmp_path, monkeypatch):
    path = str(study_file(TINY))
    assert main(["run", path, "--only", "agc"]) == 0
    capsys.readouterr()
    assert main(["show", path, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["study"], shown["done"], shown["to_run"], shown["total"]) == ("tiny", 1, 1, 2)
    assert [(r["arm"], r["done"]) for r in shown["runs"]] == [("plain", ""), ("agc", "yes")]
    # Another study planning the same config: a copy, as `run` would make it.
    other = study_file(TINY.replace("name: tiny", "name: tiny-copy"), name="copy.yaml")
    assert main(["show", str(other), "--json"]) == 0
    assert [r["done"] for r in json.loads(capsys.readouterr().out)["runs"]] == ["", "copy"]
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(tmp_path))
    assert main(["list", "--json"]) == 0
    listed = {row["study"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert (listed["tiny"]["done"], listed["tiny"]["runs"]) == (1, 2) and listed["tiny-copy"]["done"] == 0
    assert "quickstart" in listed


def test_the_sqlite_reader_sorts_runs_as_mlflow_does(study_file, capsys):
    from study import paths
    from study.cli.store_reader import survey_sqlite
    from study.config.expand import plan
    from study.config.study_file import load_study
    from study.record.tracking import Tracking
    from study.run.run_cache import Stale, survey

    path = str(study_file(TINY))
    assert main(["run", path]) == 0
    spec = load_study(path)
    runs = plan(spec)
    uri = paths.tracking_uri(None)
    tracking = Tracking(uri)
    stale_id = survey(tracking, "tiny", runs).done[runs[0].config_hash]
    tracking.client.set_tag(stale_id, "nfstudy.code", "0123456789abcdef")  # trained by "other code"
    gone = survey(tracking, "tiny", runs).done[runs[1].config_hash]
    tracking.client.delete_run(gone)  # deleted runs are never reused
    for policy in Stale:
        fast, slow = survey_sqlite(uri, "tiny", runs, policy), survey(tracking, "tiny", runs, policy)
        assert (fast.done, fast.stale, fast.unknown, fast.copies) == (slow.done, slow.stale, slow.unknown,
                                                                        slow.copies)
    assert survey_sqlite(uri, "tiny", runs).stale == {runs[0].config_hash: stale_id}
    assert survey_sqlite("http://127.0.0.1:1", "tiny", runs) is None  # a server: read through MLflow


def test_the_plan_cache_follows_the_study_file(study_file, capsys):
    path = study_file(TINY)
    assert main(["show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 2
    path.write_text(TINY.replace("seeds: [0]", "seeds: [0, 1, 2]"))
    assert main(["show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 6
    assert main(["show", str(path), "--json", "--add-seeds", "1"]) == 0  # the command line is in the key
    assert json.loads(capsys.readouterr().out)["total"] == 8


def test_bench_measures_list_and_show(capsys):
    from study.bench import run_bench

    out = run_bench("cpu", quick=True, only=["cli"])
    names = {r["name"]: r for r in out["results"]}
    assert set(names) == {"cli_list_s", "cli_show_s"}
    assert all(r["value"] > 0 and r["baseline"] > 0 and r["target"] == "value <= 1.5 s" for r in names.values())
