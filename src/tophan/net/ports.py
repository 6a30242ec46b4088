"""Published ports: ``-p [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]`` parsed, checked, as nft rules.

Docker's grammar: ``8080:80``, ``127.0.0.1:8080:80``, ``[::1]:8080:80``, ``80`` or ``IP::80``
(a free host port is picked), ranges of equal length (``8000-8002:80-82``), ``/udp``.
"""

from __future__ import annotations

import ipaddress
import os

from tophan.errors import TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

_MAX_RANGE = 1024  # one rule a port: a larger range is more likely a typo than a wish


class PortInUse(TophanError):
    """A host port is bound by a process or published by another container."""


class Port:
    """One published port; ``host_port`` 0 until a free one is picked (``resolve``)."""

    def __init__(self, host_ip: str, host_port: int, container_port: int, proto: str) -> None:
        self.host_ip = host_ip  # "" for every address
        self.host_port = host_port
        self.container_port = container_port
        self.proto = proto

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Port) and str(self) == str(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Port({self})"

    def __str__(self) -> str:
        """Docker's form: ``[IP:]HOST:CONTAINER/proto``."""
        ip = self.host_ip
        if ":" in ip:
            ip = f"[{ip}]"
        prefix = f"{ip}:" if ip else ""
        return f"{prefix}{self.host_port}:{self.container_port}/{self.proto}"

    def shown(self) -> str:
        """As ``docker ps`` shows it: ``0.0.0.0:8080->80/tcp``."""
        ip = self.host_ip or "0.0.0.0"
        if ":" in ip:
            ip = f"[{ip}]"
        return f"{ip}:{self.host_port}->{self.container_port}/{self.proto}"


def parse(text: str) -> list[Port]:
    """One ``-p`` value (a range gives several ports)."""
    spec, _, proto = text.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"-p {text}: unknown protocol {proto!r}", "use /tcp or /udp")
    host_ip = ""
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0 or spec[end + 1 : end + 2] != ":":
            raise UsageError(f"-p {text}: bad IPv6 address", "e.g. [::1]:8080:80")
        host_ip, spec = spec[1:end], spec[end + 2 :]
        parts = spec.split(":")
    else:
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip = parts.pop(0)
    if len(parts) == 1:
        parts = ["", parts[0]]
    if len(parts) != 2 or not parts[1]:
        raise UsageError(f"-p {text}: expected [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError as e:
            raise UsageError(f"-p {text}: {host_ip!r} is not an IP address") from e
    inner = _range(parts[1], text)
    outer = _range(parts[0], text) if parts[0] else [0] * len(inner)
    if len(outer) != len(inner):
        raise UsageError(f"-p {text}: the host and container ranges differ in length")
    return [Port(host_ip, h, c, proto) for h, c in zip(outer, inner, strict=True)]


def _range(text: str, whole: str) -> list[int]:
    lo, dash, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi) if dash else int(lo)
    except ValueError as e:
        raise UsageError(f"-p {whole}: {text!r} is not a port or a range") from e
    if not (1 <= first <= last <= 65535) or last - first >= _MAX_RANGE:
        raise UsageError(f"-p {whole}: ports are 1-65535, a range low-high of at most 1024")
    return list(range(first, last + 1))


def parse_all(texts: Iterable[str]) -> list[Port]:
    out: list[Port] = []
    for t in texts:
        out += parse(t)
    return out


def from_exposed(exposed: Iterable[str]) -> list[Port]:
    """``-P``: every port the image EXPOSEs (``80/tcp``), on a free host port each."""
    out = []
    for item in exposed:
        port, _, proto = item.partition("/")
        out += parse(f"{port}/{proto or 'tcp'}")
    return out


def resolve(ports: list[Port]) -> None:
    """Pick a free host port for each port published without one."""
    import socket

    for p in ports:
        if p.host_port:
            continue
        family = socket.AF_INET6 if ":" in p.host_ip else socket.AF_INET
        kind = socket.SOCK_DGRAM if p.proto == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as s:
            s.bind((p.host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
            p.host_port = s.getsockname()[1]


def clashes(a: Port, b: Port) -> bool:
    """Whether two published ports would catch the same packets."""
    if a.proto != b.proto or a.host_port != b.host_port:
        return False
    return not a.host_ip or not b.host_ip or a.host_ip == b.host_ip


def check_bindable(p: Port) -> None:
    """Refuse a host port a process of this host holds, naming it."""
    import socket

    family = socket.AF_INET6 if ":" in p.host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if p.proto == "udp" else socket.SOCK_STREAM
    addr = p.host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    with socket.socket(family, kind) as s:
        if kind == socket.SOCK_STREAM:
            # A connection in TIME_WAIT is no holder; a listener is.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, p.host_port))
        except OSError as e:
            who = holder(p.host_port, p.proto)
            raise PortInUse(
                f"host port {p.host_port}/{p.proto} is in use by {who or 'another socket'}",
                "publish another host port, or stop what holds it",
            ) from e


def holder(port: int, proto: str) -> str | None:
    """``pid N (comm)`` of a process with a socket bound to ``port``, from /proc."""
    inodes = set()
    for name in (proto, proto + "6"):
        try:
            with open(f"/proc/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # tcp: only listeners (state 0A) hold a port; udp: any bound socket
            if (
                len(fields) > 9
                and int(fields[1].rsplit(":", 1)[1], 16) == port
                and (proto == "udp" or fields[3] == "0A")
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            for fd in fds:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    with open(f"/proc/{pid}/comm") as f:
                        return f"pid {pid} ({f.read().strip()})"
        except OSError:
            continue
    # A listener whose process we may not look into: /proc/PID/fd is its owner's to read.
    return None if os.geteuid() == 0 else "a process of another user"


def to_text(ports: list[Port]) -> list[str]:
    return [str(p) for p in ports]


def from_text(items: Iterable[str]) -> list[Port]:
    out = []
    for item in items:
        out += parse(item)
    return out


def nft_rules(p: Port, addresses: list[str], comment: str) -> list[str]:
    """The DNAT rules (chain ``publish``) that send ``p`` to the container's ``addresses``."""
    rules = []
    for a in addresses:
        ip = ipaddress.ip_interface(a).ip
        if p.host_ip and ipaddress.ip_address(p.host_ip).version != ip.version:
            continue
        fam = "ip" if ip.version == 4 else "ip6"
        match = f"{fam} daddr {p.host_ip}" if p.host_ip else f"meta nfproto ipv{ip.version}"
        to = f"{ip}" if ip.version == 4 else f"[{ip}]"
        rules.append(
            f"{match} {p.proto} dport {p.host_port} dnat {fam} to {to}:{p.container_port} "
            f'comment "{comment}"'
        )
    return rules
