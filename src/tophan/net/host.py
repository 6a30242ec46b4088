"""The host's side of private networks: bridges, veth pairs, addresses, routes and nftables.

Done with the ``ip`` (iproute2) and ``nft`` (nftables) programs rather than a netlink library:
both are on every Debian host, speak the kernel's current interfaces, and keep tophan free of a
dependency that would be imported on the start path. Everything tophan makes carries its mark
and nothing else is ever touched:

- bridges ``tophan0`` and ``tph-<network>``; host ends of veth pairs ``tv<run id>``;
- one nftables table, ``inet tophan``: the networks' subnets and bridges (sets), masquerade for
  their outbound traffic, isolation between bridges, and published ports (chain ``publish``,
  each rule's comment naming the run dir that owns it).

A published port reaches the container by DNAT, for traffic from outside (prerouting) and from
the host itself (output), 127.0.0.1 included: the bridge gets ``route_localnet`` (a packet from
127.0.0.1 may leave through it) and such packets are masqueraded to the bridge's address, so
the container answers the host. No userspace proxy sits in the data path (see docs/network.md).
"""

from __future__ import annotations

from tophan.errors import TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan.net.networks import Network

TABLE = "inet tophan"
_TABLE_SCRIPT = """\
table inet tophan {
  set nets4 { type ipv4_addr; flags interval; }
  set nets6 { type ipv6_addr; flags interval; }
  set bridges { type ifname; }
  chain publish {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump publish
  }
  chain output {
    type nat hook output priority -100; policy accept;
    fib daddr type local jump publish
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr @nets4 ip daddr != @nets4 masquerade
    ip6 saddr @nets6 ip6 daddr != @nets6 masquerade
    ip saddr @nets4 ct status dnat masquerade
    ip6 saddr @nets6 ct status dnat masquerade
    oifname @bridges ip saddr 127.0.0.0/8 masquerade
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
  }
}
"""


class NetError(TophanError):
    """The host's network could not be set up for a container."""


def run(argv: list[str], input: str | None = None, *, check: bool = True) -> str:
    """Run a network tool; a failure is one line naming the tool and what it said."""
    import subprocess

    try:
        p = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        pkg = {"ip": "iproute2", "nft": "nftables", "nsenter": "util-linux"}.get(argv[0], argv[0])
        raise NetError(f"{argv[0]} is not installed", f"install {pkg}") from e
    if p.returncode != 0 and check:
        said = (p.stderr.strip().splitlines() or ["failed"])[0]
        raise NetError(f"{' '.join(argv[:3])}: {said}")
    return p.stdout


def exists(ifname: str) -> bool:
    # /proc/self/net is this thread's network namespace; /sys/class/net is the one of whoever
    # mounted /sys, which is another when we run in a namespace made without remounting /sys
    # (`unshare -n`, a container, a test's namespace).
    with open("/proc/thread-self/net/dev") as f:
        return any(line.split(":", 1)[0].strip() == ifname for line in f.readlines()[2:])


def _sysctl(key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path) as f:
        if f.read().strip() == value:
            return
    with open(path, "w") as f:
        f.write(value)


def _table_exists() -> bool:
    return bool(run(["nft", "list", "table", *TABLE.split()], check=False).strip())


def ensure_table() -> None:
    if not _table_exists():
        run(["nft", "-f", "-"], _TABLE_SCRIPT)


def ensure_network(net: Network) -> None:
    """The network's bridge (up, with its gateway addresses), forwarding, and its place in our
    table. Idempotent; call with the network's lock held."""
    if not exists(net.bridge):
        run(["ip", "link", "add", net.bridge, "type", "bridge"])
    batch = []
    have = run(["ip", "-o", "addr", "show", "dev", net.bridge])
    for subnet, gw in ((net.subnet4, net.gateway4), (net.subnet6, net.gateway6)):
        if subnet is not None and f" {gw}/" not in have:
            nodad = " nodad" if subnet.version == 6 else ""
            batch.append(f"addr add {gw}/{subnet.prefixlen} dev {net.bridge}{nodad}")
    batch.append(f"link set {net.bridge} up")
    run(["ip", "-batch", "-"], "\n".join(batch) + "\n")
    if net.subnet4 is not None:
        _sysctl("net.ipv4.ip_forward", "1")
        # Published ports reach the container from the host's 127.0.0.1 (see the docstring).
        _sysctl(f"net.ipv4.conf.{net.bridge}.route_localnet", "1")
    if net.subnet6 is not None:
        _sysctl("net.ipv6.conf.all.forwarding", "1")
    ensure_table()
    _ensure_elements(net)


def _ensure_elements(net: Network) -> None:
    listing = run(["nft", "list", "chain", *TABLE.split(), "forward"])
    script = [f'add element {TABLE} bridges {{ "{net.bridge}" }}']
    if net.subnet4 is not None:
        script.append(f"add element {TABLE} nets4 {{ {net.subnet4} }}")
    if net.subnet6 is not None:
        script.append(f"add element {TABLE} nets6 {{ {net.subnet6} }}")
    if _mark(net) not in listing:
        # Isolation: nothing of this bridge is forwarded to another bridge of ours.
        script.append(
            f'add rule {TABLE} forward iifname "{net.bridge}" oifname != "{net.bridge}" '
            f'oifname @bridges drop comment "{_mark(net)}"'
        )
    run(["nft", "-f", "-"], "\n".join(script) + "\n")


def _mark(net: Network) -> str:
    return f"network {net.name}"


def remove_network(net: Network) -> None:
    """Undo ensure_network: our bridge, its set elements and its rule (only what we made)."""
    if exists(net.bridge):
        run(["ip", "link", "del", net.bridge], check=False)
    if not _table_exists():
        return
    script = []
    for handle in rule_handles("forward", _mark(net)):
        script.append(f"delete rule {TABLE} forward handle {handle}")
    script.append(f'delete element {TABLE} bridges {{ "{net.bridge}" }}')
    for subnet, name in ((net.subnet4, "nets4"), (net.subnet6, "nets6")):
        if subnet is not None:
            script.append(f"delete element {TABLE} {name} {{ {subnet} }}")
    for line in script:  # one at a time: an element already gone must not stop the rest
        run(["nft", line], check=False)


def rule_handles(chain: str, comment: str) -> list[str]:
    """Handles of our rules in ``chain`` whose comment is ``comment``."""
    out = run(["nft", "-a", "list", "chain", *TABLE.split(), chain], check=False)
    handles = []
    for line in out.splitlines():
        if f'comment "{comment}"' in line and "# handle " in line:
            handles.append(line.rsplit("# handle ", 1)[1].strip())
    return handles


def veth_name(owner: str) -> str:
    """The host end of a run's veth pair: ``tv`` and its run dir's id (15 bytes at most)."""
    return "tv" + owner.removeprefix("run-")[:13]


def connect(net: Network, owner: str, pid: int, addresses: list[str]) -> None:
    """A veth pair from the network's bridge into ``pid``'s network namespace, as its
    ``eth0`` with ``addresses``, a default route through the bridge, and ``lo`` up."""
    veth = veth_name(owner)
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(pid)])
    try:
        run(["ip", "-batch", "-"], f"link set {veth} master {net.bridge}\nlink set {veth} up\n")
        inside = ["link set lo up"]
        for a in addresses:
            inside.append(f"addr add {a} dev eth0" + (" nodad" if ":" in a else ""))
        inside.append("link set eth0 up")
        for gw in (net.gateway4, net.gateway6):
            if gw is not None:
                inside.append(f"route add default via {gw} dev eth0")
        argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-batch", "-"]
        run(argv, "\n".join(inside) + "\n")
    except BaseException:
        disconnect(owner)
        raise


def disconnect(owner: str) -> None:
    """Remove a run's veth pair (gone already when its namespace died: nothing to do)."""
    veth = veth_name(owner)
    if exists(veth):
        run(["ip", "link", "del", veth], check=False)
