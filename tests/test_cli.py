"""What the command line prints, as a user and a script see it: whole names, plain text,
the documented spellings."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from study.cli import main
from study.config.study_file import list_studies

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _nfstudy(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_list_piped_gives_one_whole_name_per_line():
    done = _nfstudy("list")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == list_studies()
    assert all(len(row) == 5 and row[1].isdigit() and row[2] == f"0/{row[1]}" for row in rows)  # done/total


def test_list_at_an_80_column_terminal_cuts_descriptions_not_names():
    done = _nfstudy("list", COLUMNS="80", LINES="40", FORCE_COLOR="1", TTY_COMPATIBLE="1")
    assert done.returncode == 0, done.stderr
    lines = ANSI.sub("", done.stdout).splitlines()
    assert "┃ study" in lines[1] and max(len(line) for line in lines) <= 80
    cells = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert cells == list_studies()
    assert any(line.rstrip().endswith("… │") for line in lines)  # long descriptions are shortened


def test_run_names_are_printed_as_written_not_as_markup(study_file, capsys):
    path = study_file('name: m\nbase: presets/smoke.yaml\nseeds: [0]\narms:\n  "[red]x": {}\n  ":smile:": '
                      "{agc.clipping: 0.01}\n")
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[red]x/seed=0" in out and ":smile:/seed=0" in out


def test_set_sam_mode_off_and_an_arm_named_off(study_file, capsys):
    path = study_file("name: s\nbase: presets/smoke.yaml\nseeds: [0]\narms:\n  off: {sam.mode: off}\n"
                      "  full: {sam.mode: full}\n")
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "off/seed=0" in capsys.readouterr().out
    assert main(["run", "quickstart", "--preset", "smoke", "--set", "sam.mode=off", "--dry-run"]) == 0
    assert "quickstart: 9 runs, 0 done, 9 to run (dry run)" in capsys.readouterr().out


def test_show_config_prints_a_runs_resolved_config(capsys):
    from study.config.expand import plan
    from study.config.run_config import RunConfig
    from study.config.study_file import load_study

    assert main(["show", "quickstart", "--preset", "smoke", "--config", "4"]) == 0
    out = capsys.readouterr().out
    header, body = out.split("\n", 1)
    run = plan(load_study("quickstart"), preset="smoke")[4]
    assert header == f"# {run.name}  config hash {run.config_hash}"
    config = RunConfig.model_validate(yaml.safe_load(body))
    assert config.config_hash() == run.config_hash and config.train.steps == 4
    assert main(["show", "quickstart", "--preset", "smoke", "--config", run.config_hash]) == 0
    assert capsys.readouterr().out == out


def test_the_old_storage_spelling_of_searches_still_works_with_a_note(study_file, tmp_path, capsys):
    path = study_file("name: s\nbase: presets/smoke.yaml\nseeds: [0]\n")
    storage = f"sqlite:///{tmp_path / 'searches.db'}"
    assert main(["report", str(path), "--storage", storage]) == 0
    captured = capsys.readouterr()
    assert "--storage is now spelt --search-storage" in captured.err
    assert main(["report", str(path), "--search-storage", storage]) == 0
    assert capsys.readouterr().err == ""


def test_set_on_a_grid_axis_as_the_readme_shows_it(capsys):
    assert main(["run", "clip-threshold", "--set", "agc.clipping=0.02", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "clip-threshold: 9 runs, 0 done, 9 to run (dry run)" in out
    names = [line.split()[-1] for line in out.splitlines() if line.startswith("    ")]
    assert len(names) == 9 and all("/clipping=0.02/" in name for name in names)
