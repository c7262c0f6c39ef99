"""A throwaway single-node Slurm cluster for tests: Debian's ``munge``, ``slurmctld`` and
``slurmd`` (22.05), configured in a temp dir, started and stopped by a ``with`` block::

    from slurm import slurm_cluster        # tests/ is on sys.path under pytest

    with slurm_cluster() as cluster:       # munged + slurmctld + slurmd, node idle
        env = cluster.env                  # SLURM_CONF for sbatch, squeue, scancel
        subprocess.run(["sbatch", "--wrap", "true"], env={**os.environ, **env})

One node named by ``hostname -s`` with this machine's CPUs and memory, one partition with
``OverSubscribe=YES``; ``proctrack/linuxproc`` and ``task/none`` so no cgroups and no
systemd are needed; accounting off. The daemons run as root (``SlurmUser=root``), so the
cluster needs root; as root on Debian the packages are installed with ``apt-get`` when
missing. Its own munge socket and free ports, so it never touches a system Slurm.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from servers import free_port

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _binary(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/usr/bin")
                                       if os.access(f"{d}/{name}", os.X_OK)), None)


def slurm_available() -> str | None:
    """``None`` when a cluster can be started here (installing the packages as root with
    ``apt-get`` when missing); else why not."""
    if os.geteuid() != 0:
        return "a test Slurm cluster runs its daemons as root"
    if not all(_binary(b) for b in _BINARIES) and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    missing = [b for b in _BINARIES if not _binary(b)]
    return f"Slurm is not installed (missing {', '.join(missing)}; Debian: {' '.join(PACKAGES)})" if missing else None


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    node: str

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, scancel) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        """A Slurm client command against this cluster; its stdout."""
        return subprocess.run(list(command), env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=True, timeout=60).stdout

    def jobs(self) -> list[tuple[str, str]]:
        """``(job id, state)`` of every job the controller still lists (array tasks one by one)."""
        out = self.run("squeue", "--noheader", "--array", "--format=%i %T")
        return [tuple(line.split()[:2]) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

    def wait_idle(self, timeout: float) -> None:
        """Wait until no job is pending or running."""
        deadline = time.monotonic() + timeout
        while self.jobs():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Slurm jobs still queued after {timeout} s: {self.jobs()}")
            time.sleep(1)


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512  # what slurmd counts is a little less
    return 1024


def _config(root: Path, node: str, socket_path: Path) -> str:
    cpus = os.cpu_count() or 1
    ctld_port, d_port = free_port(), free_port()
    return "\n".join([
        "ClusterName=nfstudy-test", f"SlurmctldHost={node}(127.0.0.1)", f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={socket_path}",
        "SlurmUser=root", "SlurmdUser=root", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "MpiDefault=none",
        "SchedulerType=sched/backfill", "ReturnToService=2", "KillWait=20", "MinJobAge=2",
        "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "Waittime=0",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "SlurmctldDebug=info", "SlurmdDebug=info",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES",
        ""])


@contextlib.contextmanager
def slurm_cluster(timeout_s: float = 60.0) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd in a fresh temp dir; wait for the node to be idle;
    cancel every job and stop the daemons after.

    Raises:
        RuntimeError: Slurm cannot run here or the node does not come up (logs in the message).
    """
    why = slurm_available()
    if why:
        raise RuntimeError(why)
    root = Path(tempfile.mkdtemp(prefix="nfstudy-slurm-"))
    node = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir()
    os.chmod(root / "munge", 0o700)
    key, munge_socket = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    conf = root / "slurm.conf"
    conf.write_text(_config(root, node, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: list[Path] = []
    try:
        subprocess.run([_binary("munged"), f"--key-file={key}", f"--socket={munge_socket}",
                        f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
                        f"--seed-file={root}/munge/munged.seed", "--force"], check=True, capture_output=True,
                       timeout=30)
        started.append(root / "munge" / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([_binary(daemon), "-f", str(conf)], env=env, check=True, capture_output=True, timeout=30)
            started.append(root / f"{daemon}.pid")
        cluster = SlurmCluster(root, conf, node)
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(subprocess.SubprocessError):
                if cluster.run("sinfo", "--noheader", "--format=%t").strip() == "idle":
                    break
            if time.monotonic() > deadline:
                logs = "".join((root / f"{d}.log").read_text()[-1500:] for d in ("slurmctld", "slurmd")
                               if (root / f"{d}.log").exists())
                raise RuntimeError(f"the Slurm node was not idle after {timeout_s} s: {logs}")
            time.sleep(0.5)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", "--full", "--signal=KILL", "--user=root"], env=env, capture_output=True,
                           timeout=30)
            subprocess.run(["scancel", "--user=root"], env=env, capture_output=True, timeout=30)
        for pid_file in reversed(started):
            _stop(pid_file)
        shutil.rmtree(root, ignore_errors=True)


def _stop(pid_file: Path, timeout: float = 20.0) -> None:
    """SIGTERM the daemon of ``pid_file``; SIGKILL it if it is still there after ``timeout``."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)
