"""A real single-node Slurm cluster on localhost for tests: Debian's `slurm-wlm` and `munge`, installed with apt when
missing, daemons started directly (no systemd) with every file (config, key, state, logs, pid files) in one dir,
ports picked free, and stopped by their pid files.

    with LocalSlurm(tmp_dir) as cluster:      # raises Unavailable (the reason to skip) when it cannot run
        env = cluster.env                     # SLURM_CONF for sbatch/squeue/scontrol and submitit
        cluster.job(job_id)                   # scontrol's fields of one job: JobState, Restarts, StartTime, ...
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("slurmd", "slurmctld", "munged")  # stopped in this order


class Unavailable(Exception):
    """Why no cluster can run here (a test skips with it)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install() -> None:
    """apt-get install Slurm and munge unless their binaries are already there."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")):
        return
    if os.geteuid() != 0:
        raise Unavailable("Slurm is not installed and installing it with apt-get needs root")
    if not shutil.which("apt-get"):
        raise Unavailable("Slurm is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise Unavailable(f"{' '.join(cmd)} failed: {tail[0]}")


def wait_for(what: str, ready, deadline_s: float = 120, every_s: float = 0.2):
    """Poll `ready()` until it returns something truthy (returned) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise Unavailable("cannot read MemTotal from /proc/meminfo")


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._started: list[str] = []

    def pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def _write_config(self) -> None:
        for d in ("state", "spool", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        r = self.root
        self.conf.write_text(f"""\
ClusterName=toolturn-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (120 s by default)
AuthInfo=socket={r / 'munge' / 'munge.socket'},cred_expire=20
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={self.pid_file('slurmctld')}
SlurmdPidFile={self.pid_file('slurmd')}
SlurmctldLogFile={r / 'slurmctld.log'}
SlurmdLogFile={r / 'slurmd.log'}
# no cgroups in a container: track processes by parentage, no task containment
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# a job whose dependency is met starts at once, and finished jobs stay visible to scontrol for the test's checks
SchedulerParameters=sched_interval=1,bf_interval=1
MinJobAge=3600
KillWait=10
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={max(1024, _mem_mb() - 512)} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, daemon: str, argv: list[str]) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
        if proc.returncode != 0:
            raise Unavailable(f"{daemon} did not start: {(proc.stderr or proc.stdout).strip()[-300:]}")
        self._started.append(daemon)
        wait_for(f"{daemon}'s pid file", lambda: self.pid(daemon), 30)

    def start(self) -> "LocalSlurm":
        install()
        if os.geteuid() != 0:
            raise Unavailable("a local Slurm cluster's daemons need root")
        self._write_config()
        m = self.root / "munge"
        key = m / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True, timeout=60)
        self._start("munged", ["munged", "--force", f"--key-file={key}", f"--socket={m / 'munge.socket'}",
                               f"--pid-file={self.pid_file('munged')}", f"--log-file={m / 'munged.log'}",
                               f"--seed-file={m / 'munged.seed'}"])
        self._start("slurmctld", ["slurmctld", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-f", str(self.conf)])
        wait_for("the node to be idle", lambda: "idle" in self.run("sinfo", "-h", "-o", "%T").stdout, 60)
        return self

    def run(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=60, check=check)

    def job(self, job_id: str) -> dict[str, str]:
        """scontrol's `Key=Value` fields of a job (the first record for an array)."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=True).stdout.splitlines()[0]
        fields = {}
        for item in out.split():
            key, _, value = item.partition("=")
            fields[key] = value
        return fields

    def jobs(self) -> list[str]:
        """Ids of the jobs still pending or running."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def pid(self, daemon: str) -> int | None:
        try:
            pid = int(self.pid_file(daemon).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        """Cancel what still runs, then stop every daemon this cluster started (SIGTERM, SIGKILL after 30 s)."""
        if "slurmctld" in self._started and self.jobs():
            self.run("scancel", "--full", *self.jobs())
            try:
                wait_for("cancelled jobs to end", lambda: not self.jobs(), 60)
            except AssertionError:
                pass
        for daemon in DAEMONS:
            if daemon not in self._started:
                continue
            pid = self.pid(daemon)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            try:
                wait_for(f"{daemon} to stop", lambda: not _alive(pid), 30)
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
        self._started.clear()

    def __enter__(self) -> "LocalSlurm":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie we do not own counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
