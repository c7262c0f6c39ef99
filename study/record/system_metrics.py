"""System metrics on a child run (``train.system_metrics: true``): MLflow's own monitor,
started on the run by its id, so the MLflow UI's "System metrics" tab shows CPU and memory
use, disk and network (``system/*`` metrics) and, when ``nvidia-ml-py`` is installed and a
GPU is present, each GPU's utilisation, memory and power.

It needs ``psutil`` (``pip install 'nfstudy[system-metrics]'``). A run whose tracking server
is away keeps training; the monitor's samples of that time are lost (MLflow logs them
itself, outside the spool).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from study.errors import ConfigError

#: Seconds between samples (``$NFSTUDY_SYSTEM_METRICS_S``; MLflow's default is 10).
SAMPLING_S = float(os.environ.get("NFSTUDY_SYSTEM_METRICS_S", "10"))


def check_system_metrics() -> None:
    """Raise when ``train.system_metrics`` cannot work here.

    Raises:
        ConfigError: psutil is not installed (naming the extra).
    """
    try:
        import psutil  # noqa: F401 - MLflow's CPU and memory monitor reads it
    except ImportError:
        raise ConfigError("train.system_metrics needs psutil: pip install 'nfstudy[system-metrics]'") from None


@contextlib.contextmanager
def system_metrics(run_id: str | None, tracking_uri: str, enabled: bool) -> Iterator[None]:
    """Sample the machine onto run ``run_id`` while the block runs (nothing when not
    ``enabled`` or when the run lives in the spool, ``run_id`` ``None``)."""
    if not enabled or run_id is None:
        yield
        return
    check_system_metrics()
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=SAMPLING_S, samples_before_logging=1,
                                   tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
