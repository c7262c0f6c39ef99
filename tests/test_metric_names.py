"""One list of the metric names a run records (``study.record.tags.METRICS``): the trainer
records nothing outside it, and the report reads nothing outside it."""

from __future__ import annotations

import re
from pathlib import Path

from study.config.preset import load_preset
from study.config.run_config import make_config
from study.record.tags import AGC_GROUP_PREFIX, EPOCH_METRICS, METRICS
from study.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    def __init__(self):
        self.names: set[str] = set()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.names |= set(metrics)


def test_the_trainer_records_only_listed_names():
    recorder = Recorder()
    config = make_config({**load_preset("smoke"), "train.steps": 2, "optim.ema_decay": 0.9, "agc.clipping": 0.01})
    result = train(config, tracker=recorder)
    finals = {k for k, v in result.items() if isinstance(v, (int, float))}
    finals |= {f"final/{k}" for k in finals if k.startswith(("val/", "train/"))}  # as ChildRun.finish logs them
    groups = {name for name in recorder.names if name.startswith(AGC_GROUP_PREFIX)}
    assert groups and recorder.names - groups <= set(METRICS), recorder.names - groups - set(METRICS)
    assert finals <= set(METRICS), finals - set(METRICS)
    assert set(EPOCH_METRICS) <= recorder.names  # the pruner's list is what an epoch logs (EMA on)


def test_the_report_reads_only_recorded_names():
    quoted = re.compile(r"[\"'`]((?:train|val|test|time|final)/[a-z0-9_/]+)[\"'`]")
    used = {name for path in (ROOT / "analysis").glob("*.py") for name in quoted.findall(path.read_text())}
    assert used and used <= set(METRICS), used - set(METRICS)
