"""``nfstudy run STUDY --until-resolved [--max-seeds K]``: paired seeds are added, one round at a
time, only to the cells an unresolved claim needs, up to K seeds, and a rerun resumes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from analysis.runs import load_runs, results
from analysis.sequential import claim_status
from study.cli import main
from study.config.study_file import load_study

QUICK = ["quickstart", "--preset", "smoke", "--set", "train.steps=20"]


def _nfstudy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True, timeout=3600,
                          env=os.environ.copy())


def test_max_seeds_below_the_planned_seeds_is_one_line_and_exit_2(nfstudy_home, capsys):
    assert main(["run", *QUICK, "--until-resolved", "--max-seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "--max-seeds 2: below the 3 seeds quickstart plans (0, 1, 2)" in err and "Traceback" not in err
    assert not (nfstudy_home / "mlflow.db").exists()  # nothing written


def test_a_study_without_claims_is_refused_before_training(nfstudy_home, study_file, capsys):
    path = study_file("name: noclaims\nbase: presets/smoke.yaml\nseeds: [0]\narms:\n  a: {}\n")
    assert main(["run", str(path), "--until-resolved"]) == 2
    assert "--until-resolved: noclaims has no 'paper:' key" in capsys.readouterr().err
    assert not (nfstudy_home / "mlflow.db").exists()


@pytest.mark.slow  # 11 short training runs, a rerun and a report: 6 min on a loaded 2-core machine, 20+ at load 15
def test_seeds_go_only_to_the_needed_cells_stop_at_max_seeds_and_a_rerun_resumes(nfstudy_home):
    # At 20 steps and lr 1.6 plain NF diverges and BN barely trains: fig2a-nf-degrades (NF − BN)
    # stays open at 3 pairs, while fig2a-agc-recovers cannot be resolved by seeds (one batch size).
    done = _nfstudy("run", *QUICK, "--until-resolved", "--max-seeds", "4")
    assert done.returncode == 0, done.stderr
    assert "round 1: seed 3 for 2 run(s) in bn, nf (needed by fig2a-nf-degrades)" in done.stdout
    assert "stopped at --max-seeds 4" in done.stdout and "seed 4" not in done.stdout

    spec = load_study("quickstart")
    uri = f"sqlite:///{nfstudy_home / 'mlflow.db'}"
    frame = results(load_runs("quickstart", uri))
    by_seed = {seed: sorted(rows["arm"]) for seed, rows in frame.groupby("seed")}
    assert by_seed == {0: ["bn", "nf", "nf-agc"], 1: ["bn", "nf", "nf-agc"], 2: ["bn", "nf", "nf-agc"],
                       3: ["bn", "nf"]}
    # The cells the round added are exactly those the planned seeds' claim status asked for.
    planned = frame[frame["seed"].isin(spec.seeds)]
    needs = {cell.arm for status in claim_status(planned, spec.paper) for cell in status.needs}
    assert needs == {"bn", "nf"}

    again = _nfstudy("run", *QUICK, "--until-resolved", "--max-seeds", "4")
    assert again.returncode == 0, again.stderr
    assert "round 1: seed 3 for 2 run(s) in bn, nf" in again.stdout and "trained 0 (0 diverged)" in again.stdout
    assert len(results(load_runs("quickstart", uri))) == len(frame)  # nothing trained twice

    report = _nfstudy("report", *QUICK)
    assert report.returncode == 0, report.stderr
    assert "4 pairs" in report.stdout  # the report counts the added seed
