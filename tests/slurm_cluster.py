"""A real SLURM cluster for the tests: munged, slurmctld and slurmd started as plain processes.

Each cluster lives in its own folder (config, state, spool, logs, munge's socket) and listens on free
ports, so it never touches a system SLURM or another test cluster, and job ids start again at 1 in every
test session. Two shapes:

- one node, `localhost`, on the host (tests/test_slurm.py);
- one slurmd in each node of a `Nodes` (network namespaces, tests/netns_nodes.py), with slurmctld on the
  host under the name `controller`, reached at the host's address on the nodes' bridge
  (tests/test_multinode.py).

The daemons' processes are kept here and stopped by PID (their process groups), jobs first.

Manual use (as root, SLURM installed):  python tests/slurm_cluster.py /tmp/cluster [--nodes 2]
then `export SLURM_CONF=/tmp/cluster/slurm.conf` in another shell; Ctrl-C or kill stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netns_nodes import Nodes

PROGRAMS = ("munge", "munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo")
MUNGE_KEY = Path("/etc/munge/munge.key")
CONTROLLER = "controller"  # slurmctld's hostname among namespaced nodes (it must match SlurmctldHost)

# %n: the node's name, so that slurmds sharing the file system keep their spool, pid and log apart.
SLURM_CONF = """\
ClusterName=trainer-tests
SlurmctldHost={controller}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
AuthType=auth/munge
# This cluster's own munged. Short credential lifetime: a requeued job may start again after ~15 s, not ~120 s.
AuthInfo=socket={munge_socket},cred_expire=10
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
{node_lines}
PartitionName=debug Nodes={node_names} Default=YES MaxTime=INFINITE State=UP
"""


class ClusterUnavailable(Exception):
    """SLURM cannot run here (not installed, not root); the message says why."""


@dataclass
class SlurmCluster:
    root: Path
    cpus: int = 2  # per node
    nodes: Nodes | None = None  # started namespaced nodes, one slurmd each; None: one node on the host
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Variables a client (sbatch, squeue, ...) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.root / "slurm.conf")}

    @property
    def munge_socket(self) -> Path:
        # A path on the shared file system: reachable from every node, whatever its network namespace.
        return self.root / "munge" / "munge.socket"

    @property
    def node_names(self) -> list[str]:
        return [node.hostname for node in self.nodes.nodes] if self.nodes else ["localhost"]

    def start(self, timeout: float = 60) -> None:
        missing = [name for name in PROGRAMS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
        if missing:
            raise ClusterUnavailable(
                f"SLURM is not installed (no {', '.join(missing)}); apt-get install slurmctld slurmd slurm-client munge"
            )
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd needs root")
        if not MUNGE_KEY.is_file():
            raise ClusterUnavailable(f"no munge key at {MUNGE_KEY}; run mungekey as root")
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        self.munge_socket.parent.mkdir(mode=0o700, exist_ok=True)  # munge's socket: root's alone
        (self.root / "slurm.conf").write_text(self._config())
        try:
            self._start_daemons()
            self._wait_idle(timeout)
        except BaseException:
            self.stop()  # nothing left running when a start fails half-way
            raise

    def _start_daemons(self) -> None:
        self._start_munge()
        env = {**os.environ, **self.env}
        # -D: stay in the foreground (the PID is the daemon's); -i: ignore state left by an earlier cluster.
        if self.nodes is None:
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"], env)
            self._spawn("slurmd-localhost", ["slurmd", "-D", "-N", "localhost"], env)
        else:  # the host's network, its own hostname (a private UTS namespace: the host's name is untouched)
            ctld = ["unshare", "--uts", "sh", "-c", f"hostname {CONTROLLER} && exec slurmctld -D -i"]
            self._spawn("slurmctld", ctld, env)
            for node in self.nodes.nodes:
                self._spawn(f"slurmd-{node.hostname}", node.command(["slurmd", "-D", "-N", node.hostname]), env)

    def _config(self) -> str:
        if self.nodes is None:
            controller = "localhost(127.0.0.1)"
            node_lines = f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN"
        else:
            controller = f"{CONTROLLER}({self.nodes.host_address})"
            node_lines = "\n".join(
                f"NodeName={node.hostname} NodeHostname={node.hostname} NodeAddr={node.address} "
                f"CPUs={self.cpus} State=UNKNOWN"
                for node in self.nodes.nodes
            )
        return SLURM_CONF.format(
            root=self.root, controller=controller, ctld_port=_free_port(), slurmd_port=_free_port(),
            munge_socket=self.munge_socket, node_lines=node_lines, node_names=",".join(self.node_names),
        )  # fmt: skip

    def _start_munge(self) -> None:
        # As root (--force: munged only warns), so that the socket may live in a folder only root can enter.
        folder = self.munge_socket.parent
        command = ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                   f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
                   f"--seed-file={folder / 'munged.seed'}", f"--key-file={MUNGE_KEY}"]  # fmt: skip
        self._spawn("munged", command, dict(os.environ))
        probe = f"munge -n --socket={self.munge_socket} | unmunge --socket={self.munge_socket}"
        for _ in range(50):
            if subprocess.run(probe, shell=True, capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterUnavailable(f"munged did not start; see {self.root / 'munged.out'}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.run(["sinfo", "-h", "-N", "-o", "%t"], check=False).stdout.split()
            if len(states) == len(self.node_names) and all(s in ("idle", "mix", "alloc") for s in states):
                return
            for name, daemon in self.daemons.items():
                if daemon.poll() is not None:
                    raise ClusterUnavailable(f"{name} exited at start; see {self.root / (name + '.out')}")
            time.sleep(0.5)
        raise ClusterUnavailable(f"the SLURM nodes did not become idle in {timeout:.0f} s; see {self.root}/*.log")

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        with open(self.root / f"{name}.out", "ab") as log:
            self.daemons[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def run(
        self, command: list[str], check: bool = True, env: dict[str, str] | None = None, **kwargs
    ) -> subprocess.CompletedProcess:
        """A client command against this cluster; `env` adds variables (a job inherits sbatch's)."""
        environment = {**os.environ, **self.env, **(env or {})}
        return subprocess.run(command, env=environment, capture_output=True, text=True, check=check, **kwargs)

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

    def wait_done(self, job_id: str, timeout: float = 300) -> dict[str, str]:
        """The job's fields once it has ended, whichever way."""
        return self.wait_for(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout)

    def wait_until_logged(self, job_id: str, losses: Callable[[], list[float]], steps: int, timeout: float) -> None:
        """Until the job's run has logged `steps` training losses (`losses` reads them)."""
        deadline = time.monotonic() + timeout
        while len(losses()) < steps:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not reach step {steps}: {self.job_state(job_id)}")
            time.sleep(0.2)

    def cancel_all(self) -> None:
        self.run(["scancel", "--full", "--signal=KILL", "--user=root"], check=False)
        self.run(["scancel", "--user=root"], check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.run(["squeue", "-h"], check=False).stdout.strip():
            time.sleep(0.5)

    def stop(self) -> None:
        """Jobs first (their processes die with them), then every daemon at once, by PID."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.cancel_all()
        _terminate(list(self.daemons.values()))
        self.daemons.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _terminate(daemons: list[subprocess.Popen]) -> None:
    """SIGTERM to each daemon's process group, all at once (one by one takes seconds each), then SIGKILL
    to those that linger."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        alive = [daemon for daemon in daemons if daemon.poll() is None]
        for daemon in alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, sig)
        deadline = time.monotonic() + wait
        for daemon in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=max(0.1, deadline - time.monotonic()))


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="a test SLURM cluster, until Ctrl-C")
    parser.add_argument("root", type=Path)
    parser.add_argument("--nodes", type=int, default=0, help="namespaced nodes (0: one node on the host)")
    args = parser.parse_args()
    root = args.root.resolve()
    nodes = Nodes(root / "nodes", count=args.nodes) if args.nodes else None
    cluster = SlurmCluster(root, nodes=nodes, cpus=1 if nodes else 2)
    try:
        if nodes:
            nodes.start()
        cluster.start()
        print(f"export SLURM_CONF={cluster.root / 'slurm.conf'}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops it as cleanly as Ctrl-C
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        if nodes:
            nodes.stop()
