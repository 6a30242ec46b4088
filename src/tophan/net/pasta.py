"""Rootless private networks through ``pasta`` (Debian's ``passt``).

An unprivileged user cannot make veths, bridges or nftables rules on the host; pasta can do
without them: it joins the container's user and network namespaces, gives them a tap
interface with the host's address and routes, and relays the container's traffic through
ordinary sockets of the host (so outbound connections work as the user's own would), and
listens on the published host ports for it. It is what rootless podman uses.

pasta's defaults would forward every port either side binds ("auto"), and map the gateway
address to the host's loopback; both would open the host's loopback services to the container
and the container to the host's network beyond what ``-p`` asks, so both are turned off.

pasta outlives the container's processes (it holds the namespace): ``release`` stops it, and
``reclaim`` (``gc``) stops the ones of runs killed before they could.
"""

from __future__ import annotations

import os
import subprocess
import time

from tophan._internal import signals as signal
from tophan.net import attach, ports
from tophan.net.host import NetError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan._internal.root import StoreRoot
    from tophan.net.ports import Port

PIDFILE = "pasta.pid"
_IFNAME = "eth0"


class Pasta:
    """A rootless container's network: pasta attached to its namespaces, from start to close."""

    def __init__(self, run_dir: str, published: list[Port]) -> None:
        self.run_dir = run_dir
        self.ports = published
        self.pid = 0

    @property
    def pidfile(self) -> str:
        return os.path.join(self.run_dir, PIDFILE)

    def connect(self, pid: int) -> None:
        """Start pasta on the namespaces of ``pid`` (the container's init); it returns once the
        interface is configured and the host ports are bound, and keeps running."""
        argv = command(pid, self.ports, self.pidfile)
        try:
            # (not the caller's signal mask: a run blocks the signals it forwards, and a
            # pasta that inherited that would ignore our SIGTERM)
            r = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                preexec_fn=_unblock_signals,
            )  # fmt: skip
        except FileNotFoundError as e:
            raise NetError(
                "rootless private networks need pasta, which is not installed",
                "install it (Debian: apt-get install passt), or use --network none or host",
            ) from e
        except subprocess.TimeoutExpired as e:
            raise NetError("pasta did not set up the container's network in 30 s") from e
        self.pid = _read_pid(self.pidfile)
        if r.returncode != 0:
            self.release()
            raise NetError(f"pasta failed: {_reason(r.stderr)}", _hint(r.stderr))

    def release(self) -> None:
        """Stop pasta: its host ports are free again and the namespace can go."""
        pid = self.pid or _read_pid(self.pidfile)
        self.pid = 0
        if pid and _is_our_pasta(pid, self.pidfile):
            _stop(pid)


def prepare(run_dir: str, hostname: str, published: list[Port]) -> Pasta:
    """Pick host ports for ``-p 80``, refuse ones in use, and write the container's
    /etc/hosts and /etc/resolv.conf into ``run_dir`` (its init binds them)."""
    ports.resolve(published)
    for i, p in enumerate(published):
        for q in published[:i]:
            if ports.clashes(p, q):
                raise ports.PortInUse(f"host port {p.host_port}/{p.proto} is published twice")
        ports.check_bindable(p)
    hosts = attach.LOCALHOST + (f"127.0.1.1\t{hostname}\n" if hostname else "")
    attach.write_new(os.path.join(run_dir, attach.HOSTS), hosts)
    # The host's resolvers, minus loopback ones: --no-map-gw leaves the host's loopback
    # unreachable from the container.
    attach.write_new(os.path.join(run_dir, attach.RESOLV), attach.resolv_conf(ipv6=True))
    return Pasta(run_dir, published)


def command(pid: int, published: list[Port], pidfile: str) -> list[str]:
    """pasta's command line for the container whose init is ``pid``."""
    argv = ["pasta", "--config-net", "--quiet", "-I", _IFNAME, "--no-map-gw", "-P", pidfile]
    # Nothing from the container's side to the host's ("-T/-U none"); from the host's side
    # only what is published.
    argv += ["-T", "none", "-U", "none"]
    for proto, flag in (("tcp", "-t"), ("udp", "-u")):
        specs = [_spec(p) for p in published if p.proto == proto]
        argv += [flag, ",".join(specs)] if specs else [flag, "none"]
    return [*argv, str(pid)]


def _spec(p: Port) -> str:
    """pasta's ``[ADDR/]HOSTPORT:CONTAINERPORT``."""
    prefix = f"{p.host_ip}/" if p.host_ip else ""
    return f"{prefix}{p.host_port}:{p.container_port}"


def _reason(stderr: str) -> str:
    # pasta also complains on stderr that it cannot reach syslog; that is not the reason.
    lines = [x.strip() for x in stderr.splitlines() if x.strip() and "syslog" not in x]
    return lines[-1] if lines else "no message"


def _hint(stderr: str) -> str:
    if "tun" in stderr.lower():
        return "pasta needs /dev/net/tun readable and writable by you (it is mode 0666 normally)"
    return "see pasta's message; or use --network none or host"


def _read_pid(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def _is_our_pasta(pid: int, pidfile: str) -> bool:
    """Whether ``pid`` is the pasta started with ``pidfile`` (not a process that took its pid
    since), and ours to signal."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        # (not /proc/PID's owner: pasta makes itself undumpable, which shows it as root's)
        with open(f"/proc/{pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:3]
    except (OSError, StopIteration):
        return False
    return (
        os.path.basename(args[0]) in (b"pasta", b"pasta.avx2")
        and os.fsencode(pidfile) in args
        and str(os.geteuid()) in uids
    )


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    # Not our child (it daemonized): wait for it by polling, briefly, so that its host ports
    # are free when we return.
    if _wait_gone(pid, 1.0):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, 1.0)


def _wait_gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` ended (or is a zombie: pasta daemonized, and may have been reparented
    to us while a launch made us a subreaper) within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.005)


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def reclaim(store: StoreRoot) -> int:
    """``gc``: stop the pasta of every run dir whose run is gone (its lock is free). Returns
    how many were stopped. Call before the run dirs themselves are removed."""
    from tophan._internal.fs import flock_held

    stopped = 0
    for entry in os.scandir(store.path("tmp")):
        pidfile = os.path.join(entry.path, PIDFILE)
        if not entry.is_dir(follow_symlinks=False) or not os.path.exists(pidfile):
            continue
        if flock_held(entry.path, exclusive=False):
            continue  # the run is alive
        pid = _read_pid(pidfile)
        if pid and _is_our_pasta(pid, pidfile):
            _stop(pid)
            stopped += 1
    return stopped
