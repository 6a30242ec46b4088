"""Network definitions in the store: a bridge, an IPv4 and an IPv6 subnet, and their leases.

``<root>/networks/<name>/meta`` holds a network (``key=value``); ``leases/`` beside it holds
the addresses in use (``tophan.net.ipam``) and ``lock`` serialises allocations and the host
setup of that network. The default network ``tophan`` (bridge ``tophan0``) is made on first
use, so ``--network private`` needs no preparation.

Subnets of two networks never overlap: a container's address would be ambiguous, and the two
bridges would fight over the same routes.
"""

from __future__ import annotations

import ipaddress
import os
import time

from tophan._internal import meta, names
from tophan._internal.fs import FileLock, write_meta
from tophan.errors import Exists, InUse, NotFound, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tophan._internal.root import StoreRoot

    Net4 = ipaddress.IPv4Network
    Net6 = ipaddress.IPv6Network

DEFAULT_NETWORK = "tophan"
DEFAULT_BRIDGE = "tophan0"
# The pool user networks' subnets come from when none is given: 10.89.N.0/24 and a ULA /64
# each (podman's default network is 10.88.0.0/16; this stays clear of it).
_POOL4 = "10.89.{}.0/24"
_POOL6 = "fd7e:7068:6e00:{:x}::/64"
# What ``--network`` takes besides network names.
MODES = ("none", "host", "private")
_IFNAMSIZ = 15


class Network:
    """A stored network: ``subnet4``/``subnet6`` (one may be None), ``bridge`` (its interface)."""

    def __init__(
        self, name: str, bridge: str, subnet4: Net4 | None, subnet6: Net6 | None, created: int
    ) -> None:
        self.name = name
        self.bridge = bridge
        self.subnet4 = subnet4
        self.subnet6 = subnet6
        self.created = created

    @property
    def gateway4(self) -> ipaddress.IPv4Address | None:
        return None if self.subnet4 is None else self.subnet4.network_address + 1

    @property
    def gateway6(self) -> ipaddress.IPv6Address | None:
        return None if self.subnet6 is None else self.subnet6.network_address + 1

    def subnets(self) -> list[Net4 | Net6]:
        return [s for s in (self.subnet4, self.subnet6) if s is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bridge": self.bridge,
            "subnets": [str(s) for s in self.subnets()],
            "gateways": [str(g) for g in (self.gateway4, self.gateway6) if g is not None],
            "created_at": self.created,
        }


def bridge_name(network: str) -> str:
    """The bridge of a user network: ``tph-`` and the name, or a digest of a long name
    (interface names have 15 bytes)."""
    if network == DEFAULT_NETWORK:
        return DEFAULT_BRIDGE
    name = f"tph-{network}"
    if len(name) <= _IFNAMSIZ and "." not in network:
        return name
    import hashlib

    return "tph-" + hashlib.sha256(network.encode()).hexdigest()[:11]


def parse_subnet(text: str) -> Net4 | Net6:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise UsageError(f"invalid subnet {text!r}: {e}", "e.g. 10.89.5.0/24 or fd00:1::/64") from e
    # Room for the gateway and a few containers; at most /64 for IPv6 (addresses are numbered
    # from the start of the subnet, so anything larger only wastes the table).
    if net.num_addresses < 8:
        raise UsageError(f"subnet {text} is too small", "use a /29 or larger")
    return net


class Networks:
    def __init__(self, store: StoreRoot) -> None:
        self.store = store
        self.top = store.path("networks")

    def dir(self, name: str) -> str:
        return os.path.join(self.top, names.check(name, "network"))

    def lock(self, name: str) -> FileLock:
        """The network's lock: allocations, releases and its host setup take it."""
        return FileLock(os.path.join(self.dir(name), "lock"))

    def get(self, name: str) -> Network:
        if name == DEFAULT_NETWORK and not os.path.exists(os.path.join(self.dir(name), "meta")):
            return self._default()
        try:
            info = meta.read(os.path.join(self.dir(name), "meta"))
        except OSError as e:
            raise NotFound(f"no such network: {name}", "see `tophan network ls`") from e
        s4, s6 = info.get("subnet4", ""), info.get("subnet6", "")
        return Network(
            name,
            info.get("bridge", bridge_name(name)),
            ipaddress.IPv4Network(s4) if s4 else None,
            ipaddress.IPv6Network(s6) if s6 else None,
            int(info.get("created_at", "0")),
        )

    def _default(self) -> Network:
        try:
            return self.create(DEFAULT_NETWORK)
        except Exists:
            return self.get(DEFAULT_NETWORK)

    def all(self) -> list[Network]:
        try:
            entries = sorted(os.listdir(self.top))
        except FileNotFoundError:
            entries = []
        out = []
        for name in entries:
            if names.is_valid(name) and os.path.exists(os.path.join(self.top, name, "meta")):
                out.append(self.get(name))
        return out

    def create(self, name: str, subnets: list[str] | None = None) -> Network:
        """A new network; ``subnets``: at most one IPv4 and one IPv6 (default: the next free
        pair of the pool). Refused where a subnet overlaps another network's."""
        d = self.dir(name)
        if name in MODES:
            raise UsageError(f"{name!r} is a network mode, not a name", "pick another name")
        s4, s6 = self._subnets(name, subnets or [])
        os.makedirs(self.top, 0o755, exist_ok=True)
        with self.store.lock():
            if os.path.exists(os.path.join(d, "meta")):
                raise Exists(f"network exists: {name}", "use it, or `network rm` it first")
            if not subnets:
                s4, s6 = self._free_pool_pair(name)
            self._check_overlap(name, [s for s in (s4, s6) if s is not None])
            net = Network(name, bridge_name(name), s4, s6, int(time.time()))
            os.makedirs(os.path.join(d, "leases"), 0o755, exist_ok=True)
            write_meta(
                os.path.join(d, "meta"),
                {
                    "name": name,
                    "bridge": net.bridge,
                    "subnet4": str(s4 or ""),
                    "subnet6": str(s6 or ""),
                    "created_at": net.created,
                },
            )
        return net

    def _subnets(self, name: str, subnets: list[str]) -> tuple[Net4 | None, Net6 | None]:
        s4: Net4 | None = None
        s6: Net6 | None = None
        for text in subnets:
            net = parse_subnet(text)
            if isinstance(net, ipaddress.IPv4Network):
                if s4 is not None:
                    raise UsageError(f"network {name}: more than one IPv4 subnet")
                s4 = net
            else:
                if s6 is not None:
                    raise UsageError(f"network {name}: more than one IPv6 subnet")
                s6 = net
        return s4, s6

    def _free_pool_pair(self, name: str) -> tuple[Net4, Net6]:
        taken = [s for n in self.all() for s in n.subnets()]
        # The default network takes the pool's first pair; user networks the next free one.
        for i in range(0 if name == DEFAULT_NETWORK else 1, 256):
            s4 = ipaddress.IPv4Network(_POOL4.format(i))
            s6 = ipaddress.IPv6Network(_POOL6.format(i))
            if not any(s4.overlaps(t) or s6.overlaps(t) for t in taken):
                return s4, s6
        raise UsageError("no free subnet left in 10.89.0.0/16", "give one with --subnet")

    def _check_overlap(self, name: str, subnets: list[Net4 | Net6]) -> None:
        for other in self.all():
            if other.name == name:
                continue
            for mine in subnets:
                for theirs in other.subnets():
                    if mine.version == theirs.version and mine.overlaps(theirs):
                        raise UsageError(
                            f"subnet {mine} overlaps network {other.name}'s {theirs}",
                            "pick a subnet of its own",
                        )

    def remove(self, name: str) -> None:
        """Remove a network nothing is attached to (its bridge and rules go too)."""
        from tophan.net import host, ipam

        net = self.get(name)
        with self.lock(name):
            live = [
                lease for lease in ipam.leases(self.store, name) if ipam.is_live(self.store, lease)
            ]
            if live:
                who = live[0].info.get("name") or live[0].owner
                raise InUse(f"network {name} is in use by {who}", "stop what uses it first")
            host.remove_network(net)
            self.store.trash(self.dir(name))
