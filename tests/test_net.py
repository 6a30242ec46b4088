"""Private networks and published ports (docs/network.md), with real bridges, veths and nftables.

The machine's own network is never touched: every test makes a network namespace that plays
"the host" (``ip netns add``, a unique name, deleted afterwards whatever happens) and runs
tophan inside it, so the bridge, the sysctls and the ``inet tophan`` table are that
namespace's and vanish with it. Clients on "the host" are Python in that namespace; "the
outside world" is another namespace behind a veth.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, busybox_full_rootfs, run_cli
from rootless import RootlessUser, kill_user_processes, user_env, user_pids

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces as root")

HTTPD = "echo hello-$(hostname) > /tmp/index.html; exec httpd -f -p 80 -h /tmp"


class HostNs:
    """A network namespace standing in for the host, and a store to run tophan with."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv("sh", "-c", script), capture_output=True, text=True, timeout=timeout
        )

    def tophan(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self.argv(str(BIN / "tophan"), "--root", str(self.root), *args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``tophan run --init ARGS`` in the background (stopped at teardown: the init passes
        our SIGTERM on to a server that, as pid 1, would ignore it)."""
        argv = self.argv(str(BIN / "tophan"), "--root", str(self.root), "run", "--init", *args)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def py(self, code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(sys.executable, "-c", code), capture_output=True, text=True, timeout=timeout
        )

    def fetch(self, url: str, deadline: float = 15) -> str:
        """GET ``url`` from the host, retrying while the container comes up."""
        code = (
            "import sys, time, urllib.request\n"
            f"end = time.time() + {deadline}\n"
            "while True:\n"
            "    try:\n"
            f"        print(urllib.request.urlopen({url!r}, timeout=2).read().decode()); break\n"
            "    except OSError as e:\n"
            "        if time.time() > end: sys.exit(f'unreachable: {e}')\n"
            "        time.sleep(0.1)\n"
        )
        r = self.py(code, timeout=deadline + 10)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def links(self) -> list[str]:
        out = self.sh("ip -o link show").stdout
        return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]

    def publish_rules(self) -> list[str]:
        out = self.sh("nft list chain inet tophan publish").stdout
        return [line.strip() for line in out.splitlines() if "dnat" in line]

    def leases(self, network: str = "tophan") -> list[str]:
        d = self.root / "networks" / network / "leases"
        return sorted(os.listdir(d)) if d.exists() else []

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def assert_clean(self) -> None:
        assert [x for x in self.links() if x.startswith("tv")] == []
        assert self.publish_rules() == []
        assert self.leases() == []


def _ns_name() -> str:
    return f"tphn{os.getpid() % 100000}{os.urandom(2).hex()}"


@pytest.fixture(scope="module")
def udpecho(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("udpecho")
    src = Path(__file__).parent / "data/udpecho.c"
    cc = subprocess.run(["cc", "-static", "-O2", "-o", str(d / "udpecho"), str(src)])
    assert cc.returncode == 0, "a C compiler with static libc (gcc, libc6-dev) is needed"
    return d / "udpecho"


@pytest.fixture
def ns(root: Path, tmp_path: Path, udpecho: Path) -> Iterator[HostNs]:
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    (rootfs / "bin/udpecho").write_bytes(udpecho.read_bytes())
    (rootfs / "bin/udpecho").chmod(0o755)
    assert run_cli("--root", str(root), "layer", "create", "base", "--from", str(rootfs)).rc == 0
    name = _ns_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    host = HostNs(name, root)
    try:
        host.sh("ip link set lo up")
        yield host
    finally:
        host.stop_all()
        subprocess.run(["ip", "netns", "del", name], check=False)
        for extra in getattr(host, "extra_ns", []):
            subprocess.run(["ip", "netns", "del", extra], check=False)
    assert os.listdir(root / "tmp") == [], "a run dir was left behind"


def _outside(host: HostNs) -> str:
    """Another namespace, "the internet", behind a veth from the host (192.0.2.0/24): it has
    no route to the containers' subnets, so only NAT gets their packets answered."""
    name = _ns_name()
    subprocess.run(["ip", "netns", "add", name], check=True)
    host.extra_ns = [*getattr(host, "extra_ns", []), name]  # type: ignore[attr-defined]
    veth = f"o{name[-10:]}"
    script = (
        f"ip link add {veth} type veth peer name uplink netns {name} && "
        f"ip addr add 192.0.2.1/24 dev {veth} && ip link set {veth} up && "
        f"ip -n {name} addr add 192.0.2.2/24 dev uplink && ip -n {name} link set uplink up && "
        f"ip -n {name} link set lo up"
    )
    r = host.sh(script)
    assert r.returncode == 0, r.stderr
    return name


def _web_server(netns: str) -> subprocess.Popen[bytes]:
    """An HTTP server of tests/data on 192.0.2.2:8000 in "the outside" (its log on stderr)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "http.server", "--bind",
         "192.0.2.2", "8000", "--directory", str(Path(__file__).parent / "data")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _address_of(ns: HostNs, network: str, name: str) -> str:
    """The IPv4 address of container ``name`` on ``network``, once it has one."""
    import json

    deadline = time.time() + 15
    while time.time() < deadline:
        doc = json.loads(ns.tophan("network", "inspect", network).stdout)[0]
        for c in doc["containers"]:
            if c["name"] == name:
                return str(c["addresses"][0].split("/")[0])
        time.sleep(0.1)
    raise AssertionError(f"{name} never joined {network}")


def test_private_network_addresses_routes_and_files(ns: HostNs) -> None:
    r = ns.tophan(
        "run", "--network", "private", "--name", "c1", "-l", "base", "--",
        "sh", "-c", "ip -o addr show eth0; ip route; ip -6 route; cat /etc/hosts /etc/resolv.conf",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "inet 10.89.0.2/24" in r.stdout
    assert "inet6 fd7e:7068:6e00::2/64" in r.stdout
    assert "default via 10.89.0.1 dev eth0" in r.stdout
    assert "default via fd7e:7068:6e00::1 dev eth0" in r.stdout
    assert "10.89.0.2\tc1" in r.stdout
    assert "nameserver" in r.stdout and "nameserver 127." not in r.stdout
    links = ns.links()
    assert "tophan0" in links
    ns.assert_clean()


def test_outbound_through_nat(ns: HostNs) -> None:
    outside = _outside(ns)
    server = _web_server(outside)
    try:
        r = ns.tophan(
            "run", "--network", "private", "-l", "base", "--", "sh", "-c",
            "for i in $(seq 50); do wget -q -O - http://192.0.2.2:8000/udpecho.c && exit 0; "
            "sleep 0.1; done; exit 1",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "UDP echo server" in r.stdout
    finally:
        server.kill()
        err = server.communicate()[1].decode()
    # the server saw the host's address, not the container's: masqueraded
    assert "192.0.2.1" in err and "10.89." not in err
    ns.assert_clean()


def test_two_containers_same_port_published_on_two_host_ports(ns: HostNs) -> None:
    ns.start("--network", "private", "--hostname", "one", "-p", "18080:80", "-l", "base",
             "--", "sh", "-c", HTTPD)  # fmt: skip
    ns.start("--network", "private", "--hostname", "two", "-p", "127.0.0.1:18081:80/tcp",
             "-l", "base", "--", "sh", "-c", HTTPD)  # fmt: skip
    assert ns.fetch("http://127.0.0.1:18080/index.html") == "hello-one"
    assert ns.fetch("http://127.0.0.1:18081/index.html") == "hello-two"
    assert len(ns.publish_rules()) == 3  # 18080 for IPv4 and IPv6, 18081 on 127.0.0.1
    ns.stop_all()
    ns.assert_clean()


def test_publish_udp(ns: HostNs) -> None:
    ns.start("--network", "private", "-p", "15353:53/udp", "-l", "base", "--", "udpecho", "53")
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)\n"
        "for _ in range(50):\n"
        "    s.sendto(b'ping', ('127.0.0.1', 15353))\n"
        "    try:\n"
        "        print(s.recv(100).decode()); break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
    )
    assert ns.py(code).stdout.strip() == "echo:ping"
    ns.stop_all()
    ns.assert_clean()


def test_ipv6_published_port_and_direct_address(ns: HostNs) -> None:
    # an address of the host's own (this kernel has no dummy interfaces: lo will do)
    assert ns.sh("ip addr add 2001:db8::1/128 dev lo nodad").returncode == 0
    ns.start("--network", "private", "--hostname", "six", "-p", "18086:80", "-l", "base",
             "--", "sh", "-c", HTTPD)  # fmt: skip
    assert ns.fetch("http://[fd7e:7068:6e00::2]:80/index.html") == "hello-six"
    assert ns.fetch("http://[2001:db8::1]:18086/index.html") == "hello-six"


def test_host_port_in_use_is_refused_naming_the_holder(ns: HostNs) -> None:
    holder = subprocess.Popen(
        ns.argv(sys.executable, "-c",
                "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 18090)); "
                "s.listen(); print('up', flush=True); time.sleep(60)"),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"up\n"
        r = ns.tophan("run", "--network", "private", "-p", "18090:80", "-l", "base", "--", "true")
        assert r.returncode == 125
        assert r.stderr.count("\n") == 1, r.stderr
        assert f"host port 18090/tcp is in use by pid {holder.pid}" in r.stderr
    finally:
        holder.kill()
        holder.wait()
    ns.start("--network", "private", "--name", "first", "-p", "18091:80", "-l", "base",
             "--", "sh", "-c", HTTPD)  # fmt: skip
    ns.fetch("http://127.0.0.1:18091/index.html")
    r = ns.tophan("run", "--network", "private", "-p", "18091:81", "-l", "base", "--", "true")
    assert r.returncode == 125
    assert "host port 18091/tcp is published by first" in r.stderr
    ns.stop_all()
    ns.assert_clean()


def test_containers_reach_each_other_by_name(ns: HostNs) -> None:
    ns.start("--network", "private", "--name", "web2", "-l", "base", "--", "sh", "-c", HTTPD)
    r = ns.tophan(
        "run", "--network", "private", "--name", "web1", "-l", "base", "--", "sh", "-c",
        "for i in $(seq 50); do wget -q -O - http://web2/index.html && exit 0; sleep 0.1; done;"
        " cat /etc/hosts; exit 1",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("hello-web2")


def test_networks_are_isolated_from_each_other(ns: HostNs) -> None:
    assert ns.tophan("network", "create", "neta").returncode == 0
    assert ns.tophan("network", "create", "netb").returncode == 0
    ns.start("--network", "neta", "--name", "srv", "-l", "base", "--", "sh", "-c", HTTPD)
    probe = (
        "for i in $(seq 50); do timeout 2 wget -q -O - http://{ip}/index.html && exit 0; "
        "sleep 0.1; done; exit 1"
    )
    ip = _address_of(ns, "neta", "srv")
    same = ns.tophan("run", "--network", "neta", "-l", "base", "--", "sh", "-c",
                     probe.format(ip=ip))  # fmt: skip
    assert same.returncode == 0, same.stderr
    other = ns.tophan("run", "--network", "netb", "-l", "base", "--", "sh", "-c",
                      f"timeout 3 wget -q -O - http://{ip}/index.html; exit $?")  # fmt: skip
    assert other.returncode != 0
    ns.stop_all()
    assert ns.tophan("network", "rm", "neta", "netb").returncode == 0
    assert not [x for x in ns.links() if x.startswith("tph-")]


def test_sigkill_then_gc_leaves_nothing(ns: HostNs) -> None:
    p = ns.start("--network", "private", "-p", "18095:80", "-l", "base", "--", "sh", "-c", HTTPD)
    ns.fetch("http://127.0.0.1:18095/index.html")
    assert ns.leases() and ns.publish_rules()
    # tophan run is the child of `ip netns exec`, which execs it: same pid
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while [x for x in ns.links() if x.startswith("tv")] and time.time() < deadline:
        time.sleep(0.1)  # the container dies with its caller, and its veth with its namespace
    r = ns.tophan("gc")
    assert r.returncode == 0, r.stderr
    ns.assert_clean()


def test_network_commands(ns: HostNs) -> None:
    r = ns.tophan("network", "create", "--subnet", "10.77.0.0/24", "--subnet", "fd00:77::/64", "n1")
    assert r.returncode == 0, r.stderr
    r = ns.tophan("network", "create", "--subnet", "10.77.0.128/25", "n2")
    assert r.returncode == 2 and "overlaps network n1" in r.stderr
    r = ns.tophan("network", "create", "n1")
    assert r.returncode == 1 and "exists" in r.stderr
    r = ns.tophan("network", "create", "host")
    assert r.returncode == 2
    ls = ns.tophan("network", "ls")
    assert "n1" in ls.stdout and "10.77.0.0/24" in ls.stdout and "tophan" in ls.stdout
    inspect = ns.tophan("network", "inspect", "n1")
    assert '"bridge": "tph-n1"' in inspect.stdout
    r = ns.tophan("run", "--network", "n1", "-l", "base", "--", "ip", "-o", "addr", "show", "eth0")
    assert r.returncode == 0 and "10.77.0.2/24" in r.stdout, r.stderr
    assert ns.tophan("network", "rm", "n1").returncode == 0
    assert ns.tophan("network", "rm", "n1").returncode == 1
    r = ns.tophan("run", "--network", "bad/name", "-l", "base", "--", "true")
    assert r.returncode == 125 and "unknown network" in r.stderr
    r = ns.tophan("run", "-p", "80", "-l", "base", "--", "true")
    assert r.returncode == 125 and "cannot publish ports with --network none" in r.stderr


def test_publish_parsing() -> None:
    from tophan.errors import UsageError
    from tophan.net.ports import parse

    assert [str(p) for p in parse("8080:80")] == ["8080:80/tcp"]
    assert [str(p) for p in parse("127.0.0.1:8080:80/udp")] == ["127.0.0.1:8080:80/udp"]
    assert [str(p) for p in parse("[::1]:8080:80")] == ["[::1]:8080:80/tcp"]
    assert [str(p) for p in parse("8000-8002:80-82")] == [
        "8000:80/tcp", "8001:81/tcp", "8002:82/tcp"
    ]  # fmt: skip
    assert [(p.host_port, p.container_port) for p in parse("80")] == [(0, 80)]
    assert [(p.host_ip, p.host_port) for p in parse("127.0.0.1::80")] == [("127.0.0.1", 0)]
    assert parse("8080:80")[0].shown() == "0.0.0.0:8080->80/tcp"
    for bad in ("", "8080:", "x:80", "1-3:1-2", "8080:80/sctp", "999.1.1.1:1:2", "0:80",
                "70000:80", "[::1:80"):  # fmt: skip
        with pytest.raises(UsageError):
            parse(bad)


# Rootless: pasta. This machine's /dev/net/tun is mode 0600 (Debian's default is 0666), so an
# unprivileged pasta could not open it. Each rootless test runs the user's commands in a mount
# namespace of its own where a 0666 node of the same device (10, 200) covers /dev/net/tun, as it
# is on a stock host; the machine's node is never changed.
_TUN_WRAP = (
    'mount -t tmpfs -o mode=755 tun "$0" && mknod -m 666 "$0/tun" c 10 200 '
    '&& mount --bind "$0/tun" /dev/net/tun && exec "$@"'
)


class RootlessNs:
    """The rootless user's tophan, run in the "host" namespace with a usable /dev/net/tun."""

    def __init__(self, host: HostNs, user: RootlessUser, cwd: Path) -> None:
        self.host, self.user, self.cwd = host, user, cwd
        self.tun = cwd.parent / f"{cwd.name}-tun"
        self.tun.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def argv(self, *args: str, path: str | None = None) -> list[str]:
        as_user = [
            "setpriv", f"--reuid={self.user.uid}", f"--regid={self.user.gid}", "--init-groups",
            "--inh-caps=-all", "--pdeathsig=KILL",
            *(["env", f"PATH={path}"] if path else []),
            "tophan", "--root", str(self.cwd / "store"), *args,
        ]  # fmt: skip
        return self.host.argv("unshare", "-m", "sh", "-c", _TUN_WRAP, str(self.tun), *as_user)

    def tophan(self, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args, path=path), capture_output=True, text=True, timeout=120,
            env=user_env(self.user), cwd=self.cwd,
        )  # fmt: skip

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            self.argv("run", "--init", *args), env=user_env(self.user), cwd=self.cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.procs.append(p)
        return p

    def pastas(self) -> list[int]:
        return [p for p in user_pids(self.user.uid) if _comm(p).startswith(("pasta", "passt"))]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.fixture
def rl(
    ns: HostNs, rootless_user: RootlessUser, rootless_dir: Path, udpecho: Path
) -> Iterator[RootlessNs]:
    outside = _outside(ns)
    del outside
    # pasta takes the host's addresses and routes from its default route's interface
    assert ns.sh("ip route add default via 192.0.2.2").returncode == 0
    rootfs = busybox_full_rootfs(rootless_dir / "rootfs")
    (rootfs / "bin/udpecho").write_bytes(udpecho.read_bytes())
    (rootfs / "bin/udpecho").chmod(0o755)
    for dirpath, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), rootless_user.uid, rootless_user.gid)
    os.chown(rootfs, rootless_user.uid, rootless_user.gid)
    user = RootlessNs(ns, rootless_user, rootless_dir)
    assert user.tophan("init").returncode == 0
    r = user.tophan("layer", "create", "base", "--from", str(rootfs))
    assert r.returncode == 0, r.stderr
    try:
        yield user
    finally:
        for p in user.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        kill_user_processes(rootless_user.uid)
        user.tun.rmdir()  # its tmpfs was mounted only in the tests' own mount namespaces


@pytest.mark.rootless
def test_rootless_private_network_with_pasta(rl: RootlessNs) -> None:
    """Published TCP and UDP ports reachable on the host's 127.0.0.1, outbound traffic to
    "the internet", only what is published forwarded, and pasta gone when the run ends."""
    ns = rl.host
    outside = ns.extra_ns[0]  # type: ignore[attr-defined]
    server = _web_server(outside)
    try:
        r = rl.tophan(
            "run", "--network", "private", "-l", "base", "--", "sh", "-c",
            "ip -o addr show eth0; for i in $(seq 50); do "
            "wget -q -O - http://192.0.2.2:8000/udpecho.c && exit 0; sleep 0.1; done; exit 1",
        )  # fmt: skip
    finally:
        server.kill()
        server.communicate()
    assert r.returncode == 0, r.stderr
    assert "UDP echo server" in r.stdout and "192.0.2.1/24" in r.stdout
    assert rl.pastas() == [], r.stderr

    web = rl.start("--network", "private", "--hostname", "rl", "-p", "18180:80", "-l", "base",
                   "--", "sh", "-c", HTTPD + " & exec udpecho 53")  # fmt: skip
    assert ns.fetch("http://127.0.0.1:18180/index.html") == "hello-rl"
    assert ns.fetch("http://192.0.2.1:18180/index.html") == "hello-rl"
    # a port the container listens on but that is not published stays closed
    probe = ns.py(
        "import socket\ns = socket.socket(); s.settimeout(2)\n"
        "print(s.connect_ex(('127.0.0.1', 80)))"
    )
    assert probe.stdout.strip() != "0"
    assert len(rl.pastas()) == 1
    web.terminate()
    web.wait(15)
    deadline = time.time() + 10
    while rl.pastas() and time.time() < deadline:
        time.sleep(0.05)
    assert rl.pastas() == []
    assert os.listdir(rl.cwd / "store/tmp") == []


@pytest.mark.rootless
def test_rootless_udp_and_sigkill_then_gc(rl: RootlessNs) -> None:
    # (the same port number on both sides, sent to 127.0.0.1: Debian 12's pasta (2023-03)
    # drops UDP replies otherwise; see docs/network.md)
    p = rl.start("--network", "private", "-p", "15354:15354/udp", "-l", "base", "--",
                 "udpecho", "15354")  # fmt: skip
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)\n"
        "for _ in range(50):\n"
        "    s.sendto(b'ping', ('127.0.0.1', 15354))\n"
        "    try:\n"
        "        print(s.recv(100).decode()); break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
    )
    assert rl.host.py(code).stdout.strip() == "echo:ping"
    pasta = rl.pastas()
    assert len(pasta) == 1
    # SIGKILL the caller and the container: pasta is left, holding the port, until gc
    for pid in user_pids(rl.user.uid):
        if pid not in pasta:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    p.wait()
    assert rl.pastas() == pasta
    r = rl.tophan("gc")
    assert r.returncode == 0, r.stderr
    assert rl.pastas() == []
    assert os.listdir(rl.cwd / "store/tmp") == []
    # the host port is free again
    r = rl.tophan("run", "--network", "private", "-p", "15354/udp", "-l", "base", "--", "true")
    assert r.returncode == 0, r.stderr


@pytest.mark.rootless
def test_rootless_refusals(rl: RootlessNs) -> None:
    r = rl.tophan("run", "--network", "neta", "-l", "base", "--", "true")
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    assert "needs root" in r.stderr
    # no pasta on the PATH: one line saying what to install
    r = rl.tophan("run", "--network", "private", "-l", "base", "--", "true",
                  path=str(rl.user.bin))  # fmt: skip
    assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
    assert "pasta" in r.stderr and "passt" in r.stderr
    assert os.listdir(rl.cwd / "store/tmp") == []
    # a published port a process of the host holds: refused, naming it
    holder = subprocess.Popen(
        rl.host.argv(sys.executable, "-c",
                     "import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 18390)); "
                     "s.listen(); print('up', flush=True); time.sleep(60)"),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"up\n"
        r = rl.tophan("run", "--network", "private", "-p", "18390:80", "-l", "base", "--", "true")
        assert r.returncode == 125 and r.stderr.count("\n") == 1, r.stderr
        assert "18390/tcp is in use by a process of another user" in r.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.rootless
def test_rootless_app_on_the_default_private_network(rl: RootlessNs) -> None:
    """A rootless app with no `--network` is on a private network (pasta), reachable through
    its published port, shown by `app ps`; stopping it stops pasta."""
    import json

    r = rl.tophan("app", "create", "rweb", "-p", "18280:80", "--init", "--health-tcp",
                  "127.0.0.1:80", "--health-interval", "0.2s", "-l", "base", "--",
                  "sh", "-c", HTTPD)  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        r = rl.tophan("app", "start", "rweb")
        assert r.returncode == 0, r.stderr
        assert rl.host.fetch("http://127.0.0.1:18280/index.html").startswith("hello-")
        deadline = time.time() + 30
        while (ps := json.loads(rl.tophan("app", "ps", "--json").stdout))[0]["health"] != "healthy":
            assert time.time() < deadline, ps
            time.sleep(0.1)
        assert ps[0]["network"] == "private"
        assert ps[0]["ports"] == ["0.0.0.0:18280->80/tcp"]
        assert len(rl.pastas()) == 1
        r = rl.tophan("app", "stop", "rweb")
        assert r.returncode == 0, r.stderr
        assert rl.pastas() == []
    finally:
        rl.tophan("app", "rm", "-f", "rweb")
