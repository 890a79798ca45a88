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


# IPv6 prefixes whose last 32 bits are an IPv4 address: IPv4-compatible (::a.b.c.d), IPv4-mapped
# (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d) and NAT64's well-known prefix (64:ff9b::a.b.c.d).
_EMBEDDING_IPV4 = tuple(
    ipaddress.ip_network(net) for net in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)


def unreachable_kind(address: str) -> str | None:
    """Why other nodes cannot dial `address`, in words, or None when they may: the unspecified address
    (0.0.0.0, ::) and loopback (127.0.0.0/8, ::1, and any IPv6 spelling of 127.x) each lead a node to itself,
    a link-local address (169.254/16, fe80::/10) only works on one link, with a scope no URL carries, and a
    multicast or broadcast address is no host at all."""
    ip = ipaddress.ip_address(address.split("%")[0])  # fe80::1%eth0: the scope, not part of the address
    special = ip.is_unspecified or ip == ipaddress.IPv6Address("::1")  # inside ::/96, but IPv6's own
    if isinstance(ip, ipaddress.IPv6Address) and not special and any(ip in net for net in _EMBEDDING_IPV4):
        ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "multicast or broadcast"
    return None


def _unreachable(addresses: list[str]) -> str | None:
    """The kind when every address is unreachable from other nodes (one reachable address suffices)."""
    kinds = [unreachable_kind(address) for address in addresses]
    return None if None in kinds else ", ".join(sorted(set(kinds)))  # type: ignore[arg-type]


def check_rendezvous_host(master_addr: str, nnodes: int = 1) -> None:
    """The head node's name, as every node's torchrun dials it for the rendezvous. Across nodes it must be
    an address the others reach: not loopback in any spelling (127.0.0.1, localhost, ::1, ::ffff:127.0.0.1,
    the default of a one-node launch), not 0.0.0.0 or ::, not link-local. Each node would otherwise dial
    itself, hold a rendezvous of its own and wait for the others until torchrun's timeout (10 minutes). On
    the head node its own hostname may resolve to loopback as far as the rendezvous goes (its store listens
    on every address); whether gloo can use it is check_reachable_hostname's question."""
    addresses = resolve(master_addr)
    own_name = master_addr in {socket.gethostname(), socket.gethostname().split(".")[0]}
    kind = _unreachable(addresses)
    if nnodes > 1 and kind is not None and not (own_name and kind == "loopback"):
        raise UserError(
            f"the head node {master_addr!r} resolves to {', '.join(addresses)} ({kind}), but a job of {nnodes} "
            "nodes needs an address every node reaches; set MASTER_ADDR to the head node's hostname or address"
        )


def check_reachable_hostname() -> None:
    """This node's own hostname: gloo binds each worker to the address it resolves to, so a loopback one
    (Debian's `127.0.1.1 <hostname>` line, say), an unspecified or a link-local one leaves the other nodes
    unable to connect. Skipped when GLOO_SOCKET_IFNAME names the interface to use instead."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    name = socket.gethostname()
    addresses = resolve(name)
    kind = _unreachable(addresses)
    if kind is not None:
        raise UserError(
            f"this node's hostname {name!r} resolves to {', '.join(addresses)} ({kind}), which the other nodes "
            f"cannot reach; {FIX_HOSTS} to map it to the node's network address, or set GLOO_SOCKET_IFNAME to "
            "the network interface to use"
        )
