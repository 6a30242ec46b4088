"""A container on a private network: its lease, veth, published ports, /etc/hosts and
/etc/resolv.conf, from start to release (and ``gc`` after a crash).

The runtime calls ``prepare`` before it forks (the lease, the host's bridge and table, the
files the container's init will bind), ``Attachment.connect`` once the init exists (the veth
into its namespace, the DNAT rules) and ``Attachment.release`` when the container is closed.

Names: every container's /etc/hosts lists the live containers of its network (name and
hostname), and is rewritten in place (a bind-mounted file keeps its inode) under the network's
lock whenever one joins or leaves, so ``wget http://web2:8080/`` resolves without a resolver
process to run.
"""

from __future__ import annotations

import ipaddress
import os

from tophan._internal import meta
from tophan.net import host, ipam, ports
from tophan.net.networks import DEFAULT_NETWORK, Networks

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan._internal.root import StoreRoot
    from tophan.net.networks import Network
    from tophan.net.ports import Port

HOSTS = "hosts"
RESOLV = "resolv.conf"
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
# What podman and docker fall back to when the host's only resolvers are on its loopback.
_FALLBACK4 = ("8.8.8.8", "8.8.4.4")
_FALLBACK6 = ("2001:4860:4860::8888", "2001:4860:4860::8844")


def network_name(mode: str) -> str:
    return DEFAULT_NETWORK if mode == "private" else mode


class Attachment:
    def __init__(self, store: StoreRoot, net: Network, lease: ipam.Lease, published: list[Port]):
        self.store = store
        self.net = net
        self.lease = lease
        self.ports = published
        self.connected = False

    @property
    def owner(self) -> str:
        return self.lease.owner

    def connect(self, pid: int) -> None:
        """The veth into the container's network namespace (``pid``: its init), and its
        published ports."""
        host.connect(self.net, self.owner, pid, self.lease.addresses)
        self.connected = True
        rules = [
            r for p in self.ports for r in ports.nft_rules(p, self.lease.addresses, self.owner)
        ]
        if rules:
            script = "".join(f"add rule {host.TABLE} publish {r}\n" for r in rules)
            host.run(["nft", "-f", "-"], script)

    def release(self) -> None:
        """Remove the port rules, the veth and the lease; other members' /etc/hosts forget it."""
        networks = Networks(self.store)
        with networks.lock(self.net.name):
            _remove_rules(self.owner)
            host.disconnect(self.owner)
            ipam.release(self.store, self.lease)
            _refresh_hosts(self.store, self.net.name)


def prepare(
    store: StoreRoot,
    mode: str,
    owner: str,
    run_dir: str,
    name: str,
    hostname: str,
    published: list[Port],
) -> Attachment:
    """Lease an address on the network ``mode`` names for the run dir ``owner``; write its
    /etc/hosts and /etc/resolv.conf into ``run_dir``. Refuses host ports in use."""
    networks = Networks(store)
    net = networks.get(network_name(mode))
    ports.resolve(published)
    with networks.lock(net.name):
        host.ensure_network(net)
        _check_ports(store, published)
        info: dict[str, str | int | list[str]] = {
            "name": name,
            "hostname": hostname,
            "ports": ports.to_text(published),
        }
        lease = ipam.allocate(store, net, owner, info)
        try:
            write_new(os.path.join(run_dir, RESOLV), resolv_conf(net.subnet6 is not None))
            write_new(os.path.join(run_dir, HOSTS), "")
            # With our lease in place, everyone's /etc/hosts (ours included) lists us all.
            _refresh_hosts(store, net.name, also={owner: run_dir})
        except BaseException:
            ipam.release(store, lease)
            raise
    return Attachment(store, net, lease, published)


def write_new(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(fd, "w") as f:
        f.write(text)


def _check_ports(store: StoreRoot, published: list[Port]) -> None:
    for i, p in enumerate(published):
        for q in published[:i]:
            if ports.clashes(p, q):
                raise ports.PortInUse(f"host port {p.host_port}/{p.proto} is published twice")
    if not published:
        return
    for net in Networks(store).all():
        for lease in ipam.leases(store, net.name):
            theirs = ports.from_text(meta.split_list(lease.info.get("ports", "")))
            for p in published:
                if any(ports.clashes(p, q) for q in theirs) and ipam.is_live(store, lease):
                    who = lease.info.get("name") or lease.owner
                    raise ports.PortInUse(
                        f"host port {p.host_port}/{p.proto} is published by {who}",
                        "publish another host port, or stop it",
                    )
    for p in published:
        ports.check_bindable(p)


def _remove_rules(owner: str) -> None:
    handles = host.rule_handles("publish", owner)
    if handles:
        script = "".join(f"delete rule {host.TABLE} publish handle {h}\n" for h in handles)
        host.run(["nft", "-f", "-"], script, check=False)


def hosts_text(store: StoreRoot, network: str, me: str) -> str:
    """``me``'s /etc/hosts: localhost, then every live container of the network (``me``'s
    own entry first)."""
    members = [lease for lease in ipam.leases(store, network) if ipam.is_live(store, lease)]
    members.sort(key=lambda lease: lease.owner != me)
    lines = [LOCALHOST]
    for lease in members:
        names = []
        for n in (lease.info.get("name", ""), lease.info.get("hostname", "")):
            if n and n not in names:
                names.append(n)
        if not names:
            continue
        for a in lease.addresses:
            lines.append(f"{ipam.ip_of(a)}\t{' '.join(names)}\n")
    return "".join(lines)


def _refresh_hosts(store: StoreRoot, network: str, also: dict[str, str] | None = None) -> None:
    """Rewrite the /etc/hosts of every live member (call with the network's lock held).

    In place: the container sees the file through a bind mount of its inode, so a rename
    would never reach it. One write of a few hundred bytes: a reader sees the old or the new."""
    dirs = dict(also or {})
    for lease in ipam.leases(store, network):
        if lease.owner not in dirs and ipam.is_live(store, lease):
            dirs[lease.owner] = store.path("tmp", lease.owner)
    for owner, d in dirs.items():
        data = hosts_text(store, network, owner).encode()
        try:
            fd = os.open(os.path.join(d, HOSTS), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # not started yet, or gone meanwhile
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)


def resolv_conf(ipv6: bool, path: str = "/etc/resolv.conf") -> str:
    """The host's resolv.conf for a container on a private network: its nameservers on the
    host's loopback (systemd-resolved's 127.0.0.53, dnsmasq…) are unreachable from the
    container, so, as podman does, systemd-resolved's upstream list replaces them, and where
    none is left, public resolvers do."""
    servers, rest = _read_resolv(path)
    reachable = [s for s in servers if not _is_loopback(s)]
    if not reachable and servers:
        upstream, _ = _read_resolv("/run/systemd/resolve/resolv.conf")
        reachable = [s for s in upstream if not _is_loopback(s)]
    if not reachable:
        reachable = list(_FALLBACK4) + (list(_FALLBACK6) if ipv6 else [])
    return "".join(rest) + "".join(f"nameserver {s}\n" for s in reachable)


def _read_resolv(path: str) -> tuple[list[str], list[str]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines(keepends=True)
    except OSError:
        return [], []
    servers, rest = [], []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
        elif fields and not fields[0].startswith(("#", ";")):
            rest.append(line if line.endswith("\n") else line + "\n")
    return servers, rest


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False


def reclaim(store: StoreRoot) -> list[str]:
    """``gc``: the leases, port rules and veths of runs that died without releasing them.
    Returns the addresses freed."""
    freed: list[str] = []
    networks = Networks(store)

    def clean(lease: ipam.Lease) -> None:
        try:
            _remove_rules(lease.owner)
            host.disconnect(lease.owner)
        except host.NetError:
            pass  # no nft or ip here: nothing of ours can be left in the kernel

    for net in networks.all():
        with networks.lock(net.name):
            gone = ipam.reclaim(store, net.name, clean)
            if gone:
                _refresh_hosts(store, net.name)
            freed += [ipam.ip_of(a) for lease in gone for a in lease.addresses]
    return freed
