"""What users of Hydra and typer apps type: --sweep, --seeds, --add-seeds, --only, --force;
help with examples and metavars, --version, completion, a bare command, a missing argument."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_studies import tiny

from study.cli import main
from study.config.expand import parse_seeds, parse_sweeps, plan, with_axes
from study.config.study_file import load_study
from study.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = tiny(grid="grid:\n  optim.lr: [0.1, 0.2]\n")


def _hashes(spec, **kw) -> dict[tuple, str]:
    return {(r.arm, tuple(r.point.items()), r.seed): r.config_hash for r in plan(with_axes(spec, **kw))}


def test_sweep_adds_an_axis_and_the_runs_at_the_default_keep_their_hash(study_file):
    spec = load_study(study_file(TINY))
    before = _hashes(spec)
    after = _hashes(spec, sweeps=parse_sweeps(["agc.eps=0.001,0.01"]))
    assert len(after) == 2 * len(before)
    # agc.eps=0.001 is the default: those runs are the runs already planned (and recorded).
    same = {key[:1] + (key[1][:1],) + key[2:]: h for key, h in after.items() if dict(key[1])["agc.eps"] == 0.001}
    assert sorted(same.values()) == sorted(before.values())
    runs = plan(with_axes(spec, sweeps=parse_sweeps(["agc.eps=0.001,0.01"])))
    assert "eps=0.01" in runs[1].name  # runs are named by the swept value


def test_sweep_replaces_an_axis_and_refuses_a_key_the_arms_set(study_file):
    spec = load_study(study_file(TINY))
    swept = plan(with_axes(spec, sweeps=parse_sweeps(["optim.lr=0.1,0.4,0.8"])))
    assert sorted({r.point["optim.lr"] for r in swept}) == [0.1, 0.4, 0.8] and len(swept) == 6
    assert {r.config_hash for r in swept if r.point["optim.lr"] == 0.1} <= set(_hashes(spec).values())
    with pytest.raises(ConfigError, match="--sweep agc.clipping: the arms of tiny set it"):
        with_axes(spec, sweeps=parse_sweeps(["agc.clipping=0.01,0.02"]))
    with pytest.raises(ConfigError, match="unknown key 'agc.clip'"):
        with_axes(spec, sweeps=parse_sweeps(["agc.clip=0.1,0.2"]))


@pytest.mark.parametrize("text, seeds", [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("0-1,7", [0, 1, 7])])
def test_seeds_ranges_and_lists(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["4-1", "a", "-1", "1,1", ""])
def test_bad_seeds_are_refused(text):
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(text)


def test_seeds_and_add_seeds_keep_the_arms_paired_and_old_hashes(study_file):
    spec = load_study(study_file(TINY))
    before = _hashes(spec)
    more = plan(with_axes(spec, add_seeds=2))
    by_arm = {arm: sorted(r.seed for r in more if r.arm == arm) for arm in ("plain", "agc")}
    assert by_arm == {"plain": [0, 0, 1, 1, 2, 2], "agc": [0, 0, 1, 1, 2, 2]}
    assert set(before.values()) <= {r.config_hash for r in more}  # seed 0 is the same run
    assert {r.seed for r in plan(with_axes(spec, seeds=parse_seeds("3-4"), add_seeds=1))} == {3, 4, 5}


def test_set_and_sweep_of_one_key_is_one_line(study_file, capsys):
    path = str(study_file(TINY))
    assert main(["show", path, "--set", "optim.lr=0.3", "--sweep", "optim.lr=0.1,0.2"]) == 2
    assert "--set and --sweep both give optim.lr" in capsys.readouterr().err


def test_show_with_sweep_and_seeds_as_the_readme_shows_it(study_file, capsys):
    path = str(study_file(TINY))
    assert main(["show", path, "--sweep", "agc.eps=0.001,0.01", "--seeds", "0-1"]) == 0
    out = capsys.readouterr().out
    assert "tiny: 16 runs" in out and "agc.eps" in out


def test_only_and_force_retrain_one_arm_and_supersede_its_old_run(study_file, capsys):
    from mlflow.tracking import MlflowClient

    from study import paths

    path = str(study_file(TINY))
    assert main(["run", path, "--only", "agc", "--only", "0"]) == 0  # an arm and a run's #
    assert "3 completed" in capsys.readouterr().out
    assert main(["run", path, "--only", "0", "--force", "--dry-run"]) == 0
    assert "1 done but forced (superseded), 1 to run" in capsys.readouterr().out
    assert main(["run", path, "--only", "0", "--force"]) == 0
    assert "1 completed" in capsys.readouterr().out
    client = MlflowClient(paths.tracking_uri(None))
    experiment = client.get_experiment_by_name("tiny").experiment_id
    roles = [r.data.tags["nfstudy.role"] for r in client.search_runs([experiment]) if "nfstudy.config_hash" in r.data.tags]
    assert sorted(roles) == ["child"] * 3 + ["superseded"]
    assert main(["show", path]) == 0
    assert "3 done, 1 to run" in capsys.readouterr().out
    assert main(["run", path, "--only", "nosuch"]) == 2
    assert "--only nosuch: no run has that arm, config hash or #" in capsys.readouterr().err


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **env})


def _commands() -> list[str]:
    """Every command of the app, sub-commands as 'group name' (e.g. 'launch slurm')."""
    import typer

    from study.cli.app import app

    def walk(group, prefix: str) -> list[str]:  # typer's groups carry their own click (no click.Group)
        names = []
        for name, command in group.commands.items():
            full = f"{prefix}{name}"
            names += walk(command, full + " ") if hasattr(command, "commands") else [full]
        return names

    return walk(typer.main.get_command(app), "")


def test_every_command_of_the_app_has_examples():
    from study.cli.examples import EXAMPLES

    assert set(_commands()) <= set(EXAMPLES), "a command without examples at the foot of its help"


@pytest.mark.parametrize("command", ["list", "show", "run", "sync", "ui", "worker", "search", "report", "bench",
                                     "export", "enqueue", "launch slurm", "status"])
def test_every_command_help_has_examples(command):
    done = _cli(*command.split(), "--help")
    assert done.returncode == 0
    assert "Examples:" in done.stdout and f"nfstudy {command}" in done.stdout.split("Examples:")[1]


def test_help_shows_standard_metavars():
    out = _cli("run", "--help").stdout
    for metavar in ("KEY=VALUE", "KEY=V1,V2", "SEEDS", "INTEGER", "NAME", "URI", "ARM|HASH|#", "MODULE"):
        assert metavar in out, metavar


def test_version_debug_and_a_bare_command():
    from study import __version__

    assert _cli("--version").stdout.strip() == f"nfstudy {__version__}"
    bare = _cli()
    assert bare.returncode == 0 and "Usage: nfstudy" in bare.stdout and "--debug" in bare.stdout
    assert not bare.stderr and "error:" not in bare.stdout


def test_a_missing_argument_shows_the_usage_line():
    done = _cli("run")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0].startswith("Usage: nfstudy run [OPTIONS]") and lines[1].startswith("error: Missing argument")


def test_shell_completion_script_and_answers():
    # typer finds the user's shell from the parent process (here python); this switch makes
    # --show-completion take the shell's name instead, as it does without shellingham.
    script = _cli("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert script.returncode == 0 and "_nfstudy_completion" in script.stdout
    answer = _cli(_NFSTUDY_COMPLETE="complete_bash", COMP_WORDS="nfstudy ru", COMP_CWORD="1")
    assert answer.stdout.split() == ["run"]
