"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd started as plain processes.

Each cluster lives in its own folder (config, state, spool, logs) and listens on free ports, so it
never touches a system SLURM, and job ids start again at 1 in every test session. The daemons'
processes are kept here and stopped by PID (their process groups), jobs first.

Manual use (as root, SLURM installed):  python tests/slurm_cluster.py /tmp/cluster
then `export SLURM_CONF=/tmp/cluster/slurm.conf` in another shell; Ctrl-C or kill stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MUNGE_KEY = Path("/etc/munge/munge.key")

SLURM_CONF = """\
ClusterName=trainer-tests
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
AuthType=auth/munge
# Short credential lifetime: a requeued job may start again after ~15 s instead of ~120 s.
AuthInfo=cred_expire=10
SchedulerParameters=bf_interval=5,sched_interval=2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class ClusterUnavailable(Exception):
    """SLURM cannot run here (not installed, not root); the message says why."""


@dataclass
class SlurmCluster:
    root: Path
    cpus: int = 2
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Variables a client (sbatch, squeue, ...) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.root / "slurm.conf")}

    def start(self, timeout: float = 60) -> None:
        missing = [name for name in PROGRAMS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
        if missing:
            raise ClusterUnavailable(
                f"SLURM is not installed (no {', '.join(missing)}); apt-get install slurmctld slurmd slurm-client munge"
            )
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd needs root")
        for name in ("state", "spool"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        conf = SLURM_CONF.format(root=self.root, ctld_port=_free_port(), slurmd_port=_free_port(), cpus=self.cpus)
        (self.root / "slurm.conf").write_text(conf)
        self._start_munge()
        env = {**os.environ, **self.env}
        # -D: stay in the foreground (the PID is the daemon's); -i: ignore state left by an earlier cluster.
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"], env)
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost"], env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run(["sinfo", "-h", "-n", "localhost", "-o", "%t"], check=False).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return
            for name, daemon in self.daemons.items():
                if daemon.poll() is not None:
                    raise ClusterUnavailable(f"{name} exited at start; see {self.root / (name + '.log')}")
            time.sleep(0.5)
        self.stop()
        raise ClusterUnavailable(f"the SLURM node did not become idle in {timeout:.0f} s; see {self.root}/*.log")

    def _start_munge(self) -> None:
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return  # a munged is already serving the default socket
        if not MUNGE_KEY.is_file():
            raise ClusterUnavailable(f"no munge key at {MUNGE_KEY}; run mungekey as root")
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
        command = ["runuser", "-u", "munge", "--", "munged", "-F", "--force"]
        self._spawn("munged", command, dict(os.environ))
        for _ in range(50):
            if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterUnavailable("munged did not start; see " + str(self.root / "munged.log"))

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with open(self.root / f"{name}.out", "ab") as log:
            self.daemons[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def run(self, command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, env={**os.environ, **self.env}, capture_output=True, text=True, check=check, **kwargs
        )

    # ------------------------------------------------------------------ jobs

    def job_state(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a mapping (JobState, RestartCnt, ExitCode, ...); empty once forgotten."""
        result = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        fields: dict[str, str] = {}
        for word in result.stdout.split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_for(self, job_id: str, states: tuple[str, ...], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job_state(job_id)
            if fields.get("JobState") in states:
                return fields
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not in {states} after {timeout:.0f} s: {fields}")
            time.sleep(0.5)

    def cancel_all(self) -> None:
        self.run(["scancel", "--full", "--signal=KILL", "--user=root"], check=False)
        self.run(["scancel", "--user=root"], check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.run(["squeue", "-h"], check=False).stdout.strip():
            time.sleep(0.5)

    def stop(self) -> None:
        """Jobs first (their processes die with them), then the daemons by PID."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.cancel_all()
        for name in ("slurmd", "slurmctld", "munged"):
            daemon = self.daemons.pop(name, None)
            if daemon is not None:
                _terminate(daemon)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(daemon: subprocess.Popen) -> None:
    """SIGTERM to the daemon's process group (runuser and munged, say), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(daemon.pid, sig)
        except ProcessLookupError:
            return
        try:
            daemon.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


if __name__ == "__main__":
    import sys

    cluster = SlurmCluster(Path(sys.argv[1]).resolve())
    cluster.start()
    print(f"export SLURM_CONF={cluster.root / 'slurm.conf'}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops it as cleanly as Ctrl-C
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
