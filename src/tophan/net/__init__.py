"""Private networks: stored network definitions, their address leases, the host's bridges,
veth pairs and nftables rules, and published ports.

Modules: ``networks`` (``Networks``: create, ls, rm, the default ``tophan`` network), ``ipam``
(file-locked leases), ``host`` (``ip`` and ``nft``: what tophan makes on the host, and only
that), ``ports`` (``-p`` parsed and checked), ``attach`` (a container's lease, veth, ports,
/etc/hosts and /etc/resolv.conf, from start to release; ``gc``'s reclaim).

Only imported when a container asks for a private network: ``tophan run``'s default (``none``)
never loads it.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False

__all__ = ["NetError", "Network", "Networks", "Port", "PortInUse"]

_LAZY = {
    "NetError": "tophan.net.host",
    "Network": "tophan.net.networks",
    "Networks": "tophan.net.networks",
    "Port": "tophan.net.ports",
    "PortInUse": "tophan.net.ports",
}

if TYPE_CHECKING:
    from tophan.net.host import NetError
    from tophan.net.networks import Network, Networks
    from tophan.net.ports import Port, PortInUse


__getattr__ = exports(__name__, _LAZY)
