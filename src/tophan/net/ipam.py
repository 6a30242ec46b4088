"""Addresses of a network: one lease file per address, taken under the network's lock.

``<root>/networks/<net>/leases/<n>`` (``n``: the host number in the subnet, the same for the
IPv4 and the IPv6 address) records its owner, the run dir of the container that holds it
(``run-<id>``), and what other containers need to know of it (name, hostname, addresses, the
host ports it publishes). A lease is live while its owner's run dir is locked: a crashed run
releases nothing but loses that lock, and ``gc`` (or an allocation that finds the subnet full)
reclaims its leases.
"""

from __future__ import annotations

import ipaddress
import os

from tophan._internal import meta
from tophan._internal.fs import flock_held, write_meta
from tophan.errors import TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from tophan._internal.root import StoreRoot
    from tophan.net.networks import Network


class Lease:
    def __init__(self, network: str, number: int, info: dict[str, str]) -> None:
        self.network = network
        self.number = number
        self.info = info

    @property
    def owner(self) -> str:
        return self.info.get("owner", "")

    @property
    def addresses(self) -> list[str]:
        return meta.split_list(self.info.get("addresses", ""))


def _dir(store: StoreRoot, network: str) -> str:
    return store.path("networks", network, "leases")


def leases(store: StoreRoot, network: str) -> list[Lease]:
    d = _dir(store, network)
    try:
        entries = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(entries):
        if not name.isdigit():
            continue  # a temporary of write_meta
        try:
            out.append(Lease(network, int(name), meta.read(os.path.join(d, name))))
        except OSError:
            continue
    return out


def is_live(store: StoreRoot, lease: Lease) -> bool:
    owner = lease.owner
    if not owner.startswith("run-") or "/" in owner:
        return False
    return flock_held(store.path("tmp", owner))


def addresses_for(net: Network, number: int) -> list[str]:
    out = []
    for subnet in net.subnets():
        addr = subnet.network_address + number
        out.append(f"{addr}/{subnet.prefixlen}")
    return out


def allocate(
    store: StoreRoot, net: Network, owner: str, info: dict[str, str | int | list[str]]
) -> Lease:
    """Lease the lowest free host number (call with the network's lock held). ``info`` is
    recorded with it; ``addresses`` is added (``a.b.c.d/len`` and ``x::n/len``)."""
    taken = {lease.number for lease in leases(store, net.name)}
    number = _first_free(net, taken)
    if number is None:
        reclaim(store, net.name)
        number = _first_free(net, {lease.number for lease in leases(store, net.name)})
    if number is None:
        raise TophanError(
            f"network {net.name} has no free address", "stop a container on it, or run `gc`"
        )
    record = {"owner": owner, **info, "addresses": addresses_for(net, number)}
    os.makedirs(_dir(store, net.name), 0o755, exist_ok=True)
    write_meta(os.path.join(_dir(store, net.name), str(number)), record)
    return Lease(net.name, number, meta.loads(meta.dumps(record)))


def _first_free(net: Network, taken: set[int]) -> int | None:
    sizes = [s.num_addresses for s in net.subnets()]
    size = min(sizes) if sizes else 0
    # 0 is the network, 1 the gateway (the bridge), and the last IPv4 one the broadcast.
    for n in range(2, size - 1):
        if n not in taken:
            return n
    return None


def update(store: StoreRoot, lease: Lease, **changes: str) -> None:
    """Rewrite a lease's info (call with the network's lock held)."""
    lease.info.update(changes)
    write_meta(
        os.path.join(_dir(store, lease.network), str(lease.number)),
        dict[str, str | int | list[str]](lease.info),
    )


def release(store: StoreRoot, lease: Lease) -> None:
    try:
        os.unlink(os.path.join(_dir(store, lease.network), str(lease.number)))
    except FileNotFoundError:
        pass


def reclaim(
    store: StoreRoot, network: str, on_stale: Callable[[Lease], None] | None = None
) -> list[Lease]:
    """Release the leases whose owners are gone (call with the network's lock held);
    ``on_stale`` first removes what else they left (their port rules)."""
    out = []
    for lease in leases(store, network):
        if is_live(store, lease):
            continue
        if on_stale is not None:
            on_stale(lease)
        release(store, lease)
        out.append(lease)
    return out


def ip_of(address: str) -> str:
    """``10.89.0.2/24`` -> ``10.89.0.2``."""
    return str(ipaddress.ip_interface(address).ip)
