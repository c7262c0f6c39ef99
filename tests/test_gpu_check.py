"""``scripts/gpu_check.sh --dry-run``: the GPU check's every section runs on the CPU at tiny
sizes, with MLflow and Optuna absent (as on a bare GPU machine), and saves its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCK = '''import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mlflow", "optuna"):
            raise ModuleNotFoundError(f"No module named {name!r} (absent on a bare GPU machine)")
sys.meta_path.insert(0, _Absent())
'''


@pytest.mark.slow  # trains ~25 tiny runs, a killed subprocess and a one-rank torchrun job
def test_dry_run_runs_every_section_without_mlflow_or_optuna(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": str(tmp_path / "site"),
           "NFSTUDY_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    sections = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [s["section"] for s in sections] == ["environment", "cuda_tests", "agc", "sync_audit", "crash_matrix",
                                                "resume", "ab_costs", "digits_preset", "ddp", "bench_f0", "bench_cifar"]
    assert all(s["ok"] and s["dry_run"] for s in sections)
    by = {s["section"]: s for s in sections}
    assert "gpu" not in by["environment"] and by["cuda_tests"]["skipped"]  # no CUDA-only lines
    assert "mlflow" not in by["environment"] and "optuna" not in by["environment"]
    assert by["agc"]["misaligned_tensors"]["aligned"] == 0 < by["agc"]["misaligned_tensors"]["unaligned"]
    assert all(r["outcome"] == "completed" for r in by["crash_matrix"].values() if isinstance(r, dict))
    assert all(by["resume"]["kill"]["equal_to_uninterrupted"].values())
    assert by["ddp"]["eager"]["outcome"] == "completed"
    assert "trainer_overhead" in by["bench_f0"]["figures"]
    assert "tracking_overhead" not in by["bench_f0"]["figures"]  # MLflow absent: left out, not failed
    assert (out / "gpu_check.log").read_text().count("== ") == len(sections)
