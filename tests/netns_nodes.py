"""Two hosts emulated on one machine for the multinode tests, the way a cluster looks to the code: each node a
network namespace with its own address on a private bridge, its own hostname and hosts file (a private UTS
and mount namespace, so nothing of the host changes), and the host's file system shared by all.

A node is entered with `nsenter --net=/run/netns/<ns>`, not `ip netns exec`: the latter remounts /sys and
hides /sys/fs/cgroup (slurmd then refuses to start). Names and the subnet carry a per-run suffix so that two
runs on one host do not collide; traffic goes only to the addresses made here.

Manual use (as root):  python tests/netns_nodes.py  (prints how to enter each node; Ctrl-C tears down)
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("ip", "nsenter", "unshare", "mount", "hostname")
NETNS_DIR = Path("/run/netns")


class NodesUnavailable(Exception):
    """Namespaces cannot be made here (not root, no iproute2, no permission); the message says why."""


@dataclass(frozen=True)
class Node:
    hostname: str
    address: str
    netns: str  # the namespace's name under /run/netns
    hosts_file: Path  # bind-mounted over /etc/hosts inside the node

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as run on this node: its network, its hostname, its /etc/hosts."""
        inside = 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"'
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", "unshare", "--uts", "--mount", "--", "sh", "-c",
                inside, self.hostname, str(self.hosts_file), *argv]  # fmt: skip


@dataclass
class Nodes:
    """`count` nodes node1..nodeN on a bridge; the host is .1 on it (the controller, for SLURM)."""

    root: Path
    count: int = 2
    suffix: str = field(default_factory=lambda: f"{os.getpid() % 10000:04d}{random.randrange(100):02d}")
    nodes: list[Node] = field(default_factory=list)
    subnet: str = ""  # "10.a.b", chosen free at start
    _made: list[list[str]] = field(default_factory=list)  # undo commands, newest last

    @property
    def bridge(self) -> str:
        return f"tbr{self.suffix}"  # interface names: 15 characters at most

    @property
    def host_address(self) -> str:
        return f"{self.subnet}.1"

    def start(self) -> None:
        missing = [name for name in PROGRAMS if shutil.which(name) is None]
        if missing:
            raise NodesUnavailable(f"missing {', '.join(missing)} (apt-get install iproute2 util-linux)")
        if os.geteuid() != 0:
            raise NodesUnavailable("network namespaces need root")
        self.root.mkdir(parents=True, exist_ok=True)
        self.subnet = _free_subnet()
        try:
            self._ip("link", "add", self.bridge, "type", "bridge", undo=["ip", "link", "del", self.bridge])
            self._ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")
            for index in range(1, self.count + 1):
                self.nodes.append(self._make_node(index))
        except subprocess.CalledProcessError as err:
            self.stop()
            raise NodesUnavailable(f"{' '.join(err.cmd)}: {err.stderr.strip()}") from None

    def _make_node(self, index: int) -> Node:
        netns, host_end, node_end = f"tn{self.suffix}n{index}", f"tv{self.suffix}{index}", f"te{self.suffix}{index}"
        address = f"{self.subnet}.{10 + index}"
        self._ip("netns", "add", netns, undo=["ip", "netns", "del", netns])
        self._ip(
            "link", "add", host_end, "type", "veth", "peer", "name", node_end, undo=["ip", "link", "del", host_end]
        )
        self._ip("link", "set", node_end, "netns", netns)
        self._ip("link", "set", host_end, "master", self.bridge)
        self._ip("link", "set", host_end, "up")
        inside = ["nsenter", f"--net={NETNS_DIR / netns}", "ip"]
        self._run([*inside, "link", "set", node_end, "name", "eth0"])
        self._run([*inside, "addr", "add", f"{address}/24", "dev", "eth0"])
        self._run([*inside, "link", "set", "eth0", "up"])
        self._run([*inside, "link", "set", "lo", "up"])
        hostname = f"node{index}"
        return Node(hostname, address, netns, self.write_hosts(hostname, {}))

    def write_hosts(self, hostname: str, overrides: dict[str, str]) -> Path:
        """`hostname`'s /etc/hosts: every node at its address, unless `overrides` maps a name elsewhere."""
        names = {f"node{i}": f"{self.subnet}.{10 + i}" for i in range(1, self.count + 1)}
        names.update(overrides)
        path = self.root / f"hosts.{hostname}"
        path.write_text("127.0.0.1 localhost\n" + "".join(f"{address} {name}\n" for name, address in names.items()))
        return path

    def _ip(self, *args: str, undo: list[str] | None = None) -> None:
        self._run(["ip", *args])
        if undo is not None:
            self._made.append(undo)

    @staticmethod
    def _run(argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, text=True)

    def stop(self) -> None:
        """Namespaces, veths and the bridge, newest first; /run/netns unmounted when nothing else uses it."""
        while self._made:
            subprocess.run(self._made.pop(), capture_output=True)
        self.nodes.clear()
        if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
            subprocess.run(["umount", str(NETNS_DIR)], capture_output=True)


def _free_subnet() -> str:
    """A 10.x.y.0/24 that no route of the host uses."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for _ in range(100):
        subnet = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        if f"{subnet}." not in routes:
            return subnet
    raise NodesUnavailable("no free 10.x.y.0/24 subnet for the test nodes")


if __name__ == "__main__":
    import signal
    import tempfile

    nodes = Nodes(Path(tempfile.mkdtemp(prefix="nodes-")))
    nodes.start()
    for node in nodes.nodes:
        print(f"{node.hostname} {node.address}: {' '.join(node.command(['bash']))}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        nodes.stop()
