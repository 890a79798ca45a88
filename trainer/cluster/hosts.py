"""Whether this node can take part in a multi-node job: the names the rendezvous and the process group use
must resolve, and to an address the other nodes can reach. The failures this catches otherwise show as a
`socket.gaierror` traceback in torchrun's agent or a gloo "connectFullMesh failed" after a long wait.

No torch import: the launch scripts ask before torchrun starts (`trainer nodecheck`).
"""

from __future__ import annotations

import ipaddress
import os
import socket

from trainer.errors import UserError

FIX_HOSTS = "fix /etc/hosts or DNS on this node"


def resolve(name: str) -> list[str]:
    """The IPv4/IPv6 addresses `name` resolves to here; a UserError naming the node when it resolves to none."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise UserError(f"{name!r} does not resolve on node {socket.gethostname()!r} ({err}); {FIX_HOSTS}, "
                        "or give an IP address") from None  # fmt: skip
    return sorted({str(info[4][0]) for info in infos})


def check_rendezvous_host(master_addr: str, nnodes: int = 1) -> None:
    """The head node's name, as every node's torchrun dials it for the rendezvous. Across nodes it must not
    be a loopback address (127.0.0.1, localhost, the default of a one-node launch): each node would then
    hold a rendezvous of its own and wait for the others until torchrun's timeout (10 minutes). On the head
    node its own hostname may resolve to loopback as far as the rendezvous goes (its store listens on every
    address); whether gloo can use it is check_reachable_hostname's question."""
    addresses = resolve(master_addr)
    own_name = master_addr in {socket.gethostname(), socket.gethostname().split(".")[0]}
    if nnodes > 1 and not own_name and all(ipaddress.ip_address(address).is_loopback for address in addresses):
        raise UserError(
            f"the head node {master_addr!r} resolves to {', '.join(addresses)} (loopback), but a job of {nnodes} "
            "nodes needs an address every node reaches; set MASTER_ADDR to the head node's hostname or address"
        )


def check_reachable_hostname() -> None:
    """This node's own hostname: gloo binds each worker to the address it resolves to, so a loopback one
    (Debian's `127.0.1.1 <hostname>` line, say) leaves the other nodes unable to connect. Skipped when
    GLOO_SOCKET_IFNAME names the interface to use instead."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    name = socket.gethostname()
    addresses = resolve(name)
    if all(ipaddress.ip_address(address).is_loopback for address in addresses):
        raise UserError(
            f"this node's hostname {name!r} resolves to {', '.join(addresses)} (loopback), which the other nodes "
            f"cannot reach; {FIX_HOSTS} to map it to the node's network address, or set GLOO_SOCKET_IFNAME to "
            "the network interface to use"
        )
