"""The catalogue of bad inputs: each one is answered by the real CLI with ONE line
on stderr that names the problem and what is allowed, exit code 2, no traceback, and
nothing written (no MLflow database, no run, no queue) under $NFSTUDY_HOME.

Most cases drive ``study.cli.main`` in-process; a few run ``python -m study`` to prove
that no traceback reaches a user's terminal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY = "name: tiny\nbase: presets/smoke.yaml\nseeds: [0]\n"


@pytest.fixture
def experiments(tmp_path, monkeypatch):
    """A registry with one valid study (``tiny``) and the smoke preset."""
    root = tmp_path / "experiments"
    (root / "presets").mkdir(parents=True)
    (root / "presets" / "smoke.yaml").write_text((REPO / "experiments/presets/smoke.yaml").read_text())
    (root / "tiny.yaml").write_text(TINY)
    monkeypatch.setenv("NFSTUDY_EXPERIMENTS", str(root))
    return root


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def assert_one_line_error(code: int, err: str, home: Path, *expected: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []
    assert written == [], f"bad input wrote {written}"
    return lines[0]


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


# (id, extra files {name: text}, argv, substrings the one line must contain)
CASES = [
    ("unknown-study", {}, ["run", "tnyi"], ["unknown study 'tnyi'", "did you mean 'tiny'", "registered: agc-lambda",
                                            ", tiny, "]),
    ("unknown-key", {}, ["run", "tiny", "--set", "agc.clipin=0.1"],
     ["unknown key 'agc.clipin'", "did you mean 'agc.clipping'"]),
    ("wrong-type", {}, ["run", "tiny", "--set", "data.batch_size=abc"], ["data.batch_size", "valid integer", "'abc'"]),
    ("batch-size-0", {}, ["run", "tiny", "--set", "data.batch_size=0"], ["data.batch_size", "greater than 0"]),
    ("batch-size-negative", {}, ["run", "tiny", "--set", "data.batch_size=-8"], ["data.batch_size", "greater than 0"]),
    ("lambda-negative", {}, ["run", "tiny", "--set", "agc.clipping=-0.01"], ["agc.clipping", "greater than 0"]),
    ("fraction-0", {}, ["run", "tiny", "--set", "sam.fraction=0"], ["sam.fraction", "greater than 0"]),
    ("fraction-above-1", {}, ["run", "tiny", "--set", "sam.fraction=1.5"], ["sam.fraction", "less than or equal to 1"]),
    ("epochs-0", {}, ["run", "tiny", "--set", "train.epochs=0"], ["train.epochs", "greater than or equal to 1"]),
    ("unknown-model", {}, ["run", "tiny", "--set", "model.name=nfnet_f9"],
     ["unknown model 'nfnet_f9'", "did you mean 'nfnet_f6'", "registered:"]),
    ("unknown-dataset", {}, ["run", "tiny", "--set", "data.name=mnist"], ["data.name", "'digits'", "'mnist'"]),
    ("unknown-preset", {}, ["run", "tiny", "--preset", "huge"],
     ["unknown preset 'huge'", "available: cifar10, digits, imagenet, nfnet, smoke"]),
    ("unknown-agc-mode", {}, ["run", "tiny", "--set", "agc.mode=row"], ["agc.mode", "'unit' or 'layer'", "'row'"]),
    ("unknown-sam-mode", {}, ["run", "tiny", "--set", "sam.mode=half"],
     ["sam.mode", "'off', 'full' or 'fraction'", "'half'"]),
    ("set-without-equals", {}, ["run", "tiny", "--set", "agc.clipping"], ["expected key=value"]),
    ("broken-yaml", {"broken.yaml": "name: [unclosed\n"}, ["run", "{dir}/broken.yaml"], ["broken YAML", "line 2"]),
    ("yaml-not-mapping", {"list.yaml": "- a\n- b\n"}, ["run", "{dir}/list.yaml"],
     ["expected a mapping of keys to values, got list"]),
    ("empty-grid-axis", {"g.yaml": "name: g\ngrid:\n  agc.clipping: []\n"}, ["run", "{dir}/g.yaml"],
     ["grid axis 'agc.clipping' is empty", "at least one value"]),
    ("unknown-grid-key", {"g.yaml": "name: g\ngrid:\n  agc.clipp: [0.1]\n"}, ["run", "{dir}/g.yaml"],
     ["grid: unknown key 'agc.clipp'", "did you mean 'agc.clipping'"]),
    ("unknown-study-field", {"g.yaml": "name: g\nseed: [1]\n"}, ["run", "{dir}/g.yaml"],
     ["unknown field 'seed' (did you mean 'seeds'?)", "allowed: name, description", "grid, seeds"]),
    ("unknown-figure-field", {"g.yaml": "name: g\nfigures:\n  - {x: agc.clipping, ttle: t}\n"},
     ["run", "{dir}/g.yaml"], ["unknown field 'figures.0.ttle' (did you mean 'title'?)", "allowed: kind, x, y"]),
    ("unknown-sampler-field", {"g.yaml": "name: g\nsearch:\n  agc.clipping: [0.01]\n  sampler: {name: grid, sed: 1}\n"},
     ["search", "{dir}/g.yaml"], ["unknown field 'search.sampler.sed' (did you mean 'seed'?)", "allowed: name"]),
    ("missing-data-dir", {"c.yaml": "name: c\nfixed:\n  data.name: cifar10\n  data.root: /nonexistent/cifar\n"},
     ["run", "{dir}/c.yaml"], ["data.root '/nonexistent/cifar' does not exist", "data.download=true"]),
    ("malformed-tracking-uri", {}, ["run", "tiny", "--tracking-uri", "notaurl://x"],
     ["unsupported scheme 'notaurl'", "allowed: sqlite:///PATH, http(s)://HOST:PORT"]),
    ("tracking-uri-without-host", {}, ["run", "tiny", "--tracking-uri", "http://"], ["no host", "http://HOST:PORT"]),
    ("workers-0", {}, ["run", "tiny", "--workers", "0"], ["--workers", "greater than or equal to 1"]),
    ("workers-not-integer", {}, ["run", "tiny", "--workers", "two"], ["--workers", "valid integer"]),
    ("unknown-option", {}, ["run", "tiny", "--wrokers", "2"], ["No such option: --wrokers"]),
    ("study-not-utf8", {"l.yaml": "name: l\ndescription: caf\xe9\n".encode("latin-1")}, ["run", "{dir}/l.yaml"],
     ["l.yaml: not UTF-8 text (byte 0xe9 at offset 24)", "save the file as UTF-8"]),
    ("unknown-metric", {"m.yaml": "name: m\nmetric: val/acc\n"}, ["run", "{dir}/m.yaml"],
     ["metric: unknown metric 'val/acc'; recorded: train/loss"]),
    ("unknown-figure-metric", {"f.yaml": "name: f\nfigures:\n  - {x: arm, y: test/accuracy}\n"},
     ["run", "{dir}/f.yaml", "--dry-run"], ["figures.0: y: unknown metric 'test/accuracy'; recorded: train/loss"]),
    ("set-on-an-arm-key", {"a.yaml": "name: a\narms:\n  off: {sam.mode: off}\n  full: {sam.mode: full}\n"},
     ["run", "{dir}/a.yaml", "--set", "sam.mode=fraction"],
     ["--set sam.mode: the arms of a set it (off: 'off', full: 'full')", "copy of the study file"]),
    ("both-stale-policies", {}, ["run", "tiny", "--reuse-stale", "--rerun-stale"],
     ["--reuse-stale and --rerun-stale exclude each other"]),
    ("dry-run-cifar-without-root", {}, ["run", "tiny", "--dry-run", "--set", "data.name=cifar10"],
     ["data.root is not set for data.name=cifar10"]),
    ("dry-run-root-is-a-file", {"plain.txt": "not a data set"},
     ["run", "tiny", "--dry-run", "--set", "data.name=cifar10", "--set", "data.root={dir}/plain.txt"],
     ["data.root", "plain.txt"]),
    ("show-config-out-of-range", {}, ["show", "tiny", "--config", "7"], ["--config 7: no such run", "0…0"]),
    ("search-storage-twice", {}, ["search", "tiny", "--storage", "a.db", "--search-storage", "b.db"],
     ["give --search-storage only"]),
]


@pytest.mark.parametrize("files,argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(files, argv, expected, experiments, tmp_path,
                                                         nfstudy_home, capsys):
    for name, text in files.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = cli(capsys, *(a.replace("{dir}", str(tmp_path)) for a in argv))
    assert_one_line_error(code, err, nfstudy_home, *expected)


def test_two_study_files_with_the_same_name(experiments, nfstudy_home, capsys):
    (experiments / "copy.yaml").write_text(TINY)
    code, err = cli(capsys, "run", "tiny")
    assert_one_line_error(code, err, nfstudy_home, "two study files are named 'tiny'", "copy.yaml", "tiny.yaml")


def test_unreachable_tracking_server_answers_within_seconds(experiments, nfstudy_home, capsys):
    port = closed_port()
    start = time.monotonic()
    code, err = cli(capsys, "run", "tiny", "--tracking-uri", f"http://127.0.0.1:{port}")
    elapsed = time.monotonic() - start
    assert_one_line_error(code, err, nfstudy_home, f"tracking server http://127.0.0.1:{port} is unreachable",
                          "Connection refused")
    assert elapsed < 30, f"took {elapsed:.1f} s"  # MLflow's own retries would take ~4 minutes


def test_unreachable_databases_answer_with_the_password_redacted(experiments, nfstudy_home, capsys):
    url = f"postgresql://alice:s3cret@127.0.0.1:{closed_port()}/nfstudy"
    for option in ("--tracking-uri", "--storage"):
        code, err = cli(capsys, "run", "tiny", option, url)
        line = assert_one_line_error(code, err, nfstudy_home, f"{option} 'postgresql://alice:***@127.0.0.1",
                                     "is unreachable")
        assert "s3cret" not in line


def test_errors_name_the_problem_not_a_traceback_from_a_real_process(experiments, tmp_path, nfstudy_home):
    (tmp_path / "broken.yaml").write_text("fixed: {agc.clipping: [\n")
    env = {**os.environ, "NFSTUDY_HOME": str(nfstudy_home), "NFSTUDY_EXPERIMENTS": str(experiments)}
    for argv, expected in [
        (["run", "nosuch"], "unknown study 'nosuch'"),
        (["run", str(tmp_path / "broken.yaml")], "broken YAML"),
        (["run", "tiny", "--tracking-uri", f"http://127.0.0.1:{closed_port()}"], "is unreachable"),
        (["run", "tiny", "--workers", "-1"], "--workers"),
    ]:
        done = subprocess.run([sys.executable, "-m", "study", *argv], env=env, capture_output=True, text=True,
                              timeout=120)
        assert_one_line_error(done.returncode, done.stderr, nfstudy_home, expected)
        assert done.stdout.strip() == ""


def test_debug_shows_the_traceback(experiments, nfstudy_home):
    env = {**os.environ, "NFSTUDY_HOME": str(nfstudy_home), "NFSTUDY_EXPERIMENTS": str(experiments)}
    done = subprocess.run([sys.executable, "-m", "study", "run", "nosuch", "--debug"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr and "ConfigError" in done.stderr
