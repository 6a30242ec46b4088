"""Resource limits with cgroups: v2 (unified) or v1 (legacy and hybrid hosts), found at run time.

Every cgroup we make lives under a parent of our own named ``tophan`` (see docs/cgroups.md)::

    cgroup v2 (root)      /sys/fs/cgroup/tophan/<name>
    cgroup v2 (rootless)  /sys/fs/cgroup/<...>/user@<uid>.service/tophan/<name>   (delegated)
    cgroup v1 / hybrid    /sys/fs/cgroup/<controller>/tophan/<name>, one per hierarchy

We write only below that parent, except reading what the kernel offers above it: on v2 we enable
controllers in our parent's ``cgroup.subtree_control`` and nowhere else, so a controller the
host does not hand down to us is reported by :func:`unavailable`, never forced.

Limits use docker's flag names and semantics (``--memory``, ``--memory-swap``, ``--cpus``,
``--cpu-shares``, ``--cpuset-cpus``, ``--pids-limit``, ``--blkio-weight``, ``--device-*-bps``).
Importing this module is cheap: no ``re``, no ``typing`` at run time.
"""

from __future__ import annotations

import _thread
import errno
import os
import stat
import time

from tophan._internal.signals import SIGKILL
from tophan.errors import Exists, InUse, NotFound, TophanError, UsageError
from tophan.run.devices import Rule, v1_lines

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import Literal

    Mode = Literal["unified", "hybrid", "legacy"]

PARENT = "tophan"
CPU_PERIOD = 100_000  # docker's --cpus period, in microseconds
MIN_QUOTA = 1_000  # the kernel refuses a CFS quota below 1 ms
MIN_MEMORY = 6 * 1024 * 1024  # docker's minimum for --memory
MAX_SHARES = 262_144
V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
# v1 hierarchies a cgroup joins, in order: cpuset first because its cpus/mems must be set before
# a task may enter; pids (else freezer) is the one procs() reads.
V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "memory", "pids", "freezer", "blkio", "devices")
NO_LIMITS = "or run with --no-limits"
_V1_FOR = {"cpu": ("cpu", "cpuacct"), "io": ("blkio",)}  # v2 controller -> v1 hierarchies
_IO_FLAGS = {
    "device-read-bps": "rbps",
    "device-write-bps": "wbps",
    "device-read-iops": "riops",
    "device-write-iops": "wiops",
}
_V1_THROTTLE = {
    "rbps": "blkio.throttle.read_bps_device",
    "wbps": "blkio.throttle.write_bps_device",
    "riops": "blkio.throttle.read_iops_device",
    "wiops": "blkio.throttle.write_iops_device",
}


# -- limits ------------------------------------------------------------------------------------


class IoMax:
    """Throttles for one whole block device (``None``: not limited)."""

    __slots__ = ("device", "major", "minor", "rbps", "riops", "wbps", "wiops")

    def __init__(
        self,
        device: str,  # as the user named it, for messages
        major: int,
        minor: int,
        rbps: int | None = None,
        wbps: int | None = None,
        riops: int | None = None,
        wiops: int | None = None,
    ) -> None:
        self.device = device
        self.major = major
        self.minor = minor
        self.rbps = rbps
        self.wbps = wbps
        self.riops = riops
        self.wiops = wiops

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IoMax) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "IoMax(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def rates(self) -> Iterator[tuple[str, int]]:
        for key in ("rbps", "wbps", "riops", "wiops"):
            value: int | None = getattr(self, key)
            if value is not None:
                yield key, value

    def v2_line(self) -> str:
        """The ``io.max`` line: ``MAJ:MIN rbps=N wiops=N`` (unnamed keys are left alone)."""
        return " ".join([f"{self.major}:{self.minor}"] + [f"{k}={v}" for k, v in self.rates()])


class Limits:
    """Resource limits; ``None`` leaves the kernel's default (unlimited).

    (A plain class, not a dataclass: ``dataclasses`` costs a container start ~10 ms of imports.)
    """

    def __init__(
        self,
        memory: int | None = None,  # bytes (memory.max / memory.limit_in_bytes)
        memory_swap: int | None = None,  # memory + swap; -1 = unlimited swap; None = 2x memory
        cpus: float | None = None,  # CPUs' worth of time per period (cpu.max / cfs_quota_us)
        cpu_shares: int | None = None,  # v1 cpu.shares 2..262144; v2 cpu.weight (runc's formula)
        cpuset_cpus: str | None = None,  # "0-3,5"
        cpuset_mems: str | None = None,
        pids: int | None = None,  # pids.max; -1 or 0 = unlimited
        io_weight: int | None = None,  # 10..1000 (docker --blkio-weight)
        io_max: list[IoMax] | None = None,
    ) -> None:
        self.memory = memory
        self.memory_swap = memory_swap
        self.cpus = cpus
        self.cpu_shares = cpu_shares
        self.cpuset_cpus = cpuset_cpus
        self.cpuset_mems = cpuset_mems
        self.pids = pids
        self.io_weight = io_weight
        self.io_max: list[IoMax] = list(io_max or [])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limits) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return "Limits(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()) + ")"

    def check(self) -> None:
        """Refuse values docker would refuse, with the flag's name in the message."""
        _check_memory(self.memory, self.memory_swap)
        if self.cpus is not None and round(self.cpus * CPU_PERIOD) < MIN_QUOTA:
            raise UsageError(f"--cpus {self.cpus}: the minimum is 0.01")
        if self.cpu_shares is not None and not 2 <= self.cpu_shares <= MAX_SHARES:
            raise UsageError(f"--cpu-shares {self.cpu_shares}: the range is 2-{MAX_SHARES}")
        for flag, value in (("cpuset-cpus", self.cpuset_cpus), ("cpuset-mems", self.cpuset_mems)):
            if value is not None:
                _check_cpu_list(flag, value)
        if self.io_weight is not None and not 10 <= self.io_weight <= 1000:
            raise UsageError(f"--blkio-weight {self.io_weight}: the range is 10-1000")
        for io in self.io_max:
            if any(v <= 0 for _, v in io.rates()):
                raise UsageError(f"device throttle for {io.device}: rates must be positive")

    def controllers(self) -> list[str]:
        """The (v2-named) controllers these limits need."""
        wanted = {
            "memory": self.memory is not None or self.memory_swap not in (None, -1),
            "cpu": self.cpus is not None or self.cpu_shares is not None,
            "cpuset": self.cpuset_cpus is not None or self.cpuset_mems is not None,
            "pids": self.pids is not None and self.pids > 0,
            "io": self.io_weight is not None or bool(self.io_max),
        }
        return [c for c in V2_CONTROLLERS if wanted[c]]

    def memsw(self) -> int | None:
        """Docker's memory+swap total (-1: unlimited), or None to leave the kernel default.

        Like docker, ``--memory`` alone allows as much swap again as memory.
        """
        if self.memory is None:
            return None
        if self.memory_swap is None:
            return 2 * self.memory
        return self.memory_swap


def _check_memory(memory: int | None, swap: int | None) -> None:
    if memory is not None and memory < MIN_MEMORY:
        raise UsageError(f"--memory {memory}: the minimum is 6m")
    if swap is None or swap == -1:
        return
    if memory is None:
        raise UsageError("--memory-swap needs --memory", "it is the total of memory and swap")
    if swap < memory:
        raise UsageError(
            f"--memory-swap {swap} is less than --memory {memory}",
            "it is the total of memory and swap; -1 allows unlimited swap",
        )


def _check_cpu_list(flag: str, value: str) -> None:
    """``0-3,5``: the kernel's list format (checked here so the error names the flag)."""
    for part in value.split(","):
        lo, dash, hi = part.partition("-")
        ok = lo.isdigit() and (not dash or (hi.isdigit() and int(lo) <= int(hi)))
        if not ok:
            raise UsageError(f"--{flag} {value!r}: not a list like 0-3,5")


def parse_limits(flags: dict[str, str | list[str]]) -> Limits:
    """Limits from docker-named flags (``memory`` or ``--memory``; ``-m``/``-c`` aliases too).

    Scalar flags given several times keep the last value, like docker; the ``--device-*`` flags
    accumulate. An empty string leaves a flag unset.
    """
    limits = Limits()
    io: dict[tuple[int, int], IoMax] = {}
    for key, value in flags.items():
        flag = _flag_name(key)
        values = [value] if isinstance(value, str) else list(value)
        values = [str(v).strip() for v in values if str(v).strip()]
        if not values:
            continue
        if flag in _IO_FLAGS:
            for v in values:
                _add_io(io, flag, v)
        else:
            _set_scalar(limits, flag, values[-1])
    limits.io_max = list(io.values())
    limits.check()
    return limits


def _flag_name(key: str) -> str:
    flag = key.lstrip("-").replace("_", "-")
    return {"m": "memory", "c": "cpu-shares"}.get(flag, flag)


def _set_scalar(limits: Limits, flag: str, text: str) -> None:
    from tophan._internal.units import parse_size

    if flag == "memory":
        limits.memory = parse_size(text)
    elif flag == "memory-swap":
        swap = -1 if text == "-1" else parse_size(text)
        limits.memory_swap = swap or None  # docker: 0 means unset
    elif flag == "cpus":
        limits.cpus = _parse_cpus(text)
    elif flag == "cpu-shares":
        limits.cpu_shares = _parse_int(flag, text) or None  # 0: docker's "default"
    elif flag in ("cpuset-cpus", "cpuset-mems"):
        setattr(limits, flag.replace("-", "_"), text)
    elif flag == "pids-limit":
        pids = _parse_int(flag, text)
        limits.pids = pids if pids > 0 else None  # docker: 0 and -1 mean unlimited
    elif flag == "blkio-weight":
        limits.io_weight = _parse_int(flag, text) or None  # 0: docker's "not set"
    else:
        raise UsageError(f"unknown resource flag --{flag}", "see docs/cgroups.md for the list")


def _parse_int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--{flag} {text!r}: not an integer") from None


def _parse_cpus(text: str) -> float | None:
    try:
        cpus = float(text)
    except ValueError:
        raise UsageError(f"--cpus {text!r}: not a number", "e.g. --cpus 1.5") from None
    import math

    if not math.isfinite(cpus) or cpus < 0:
        raise UsageError(f"--cpus {text!r}: must be a positive number")
    if cpus == 0:
        return None  # docker: 0 means no limit
    # Like docker: a quota above the host's CPUs would be no limit at all, silently.
    ncpu = len(os.sched_getaffinity(0))
    if cpus > ncpu:
        raise UsageError(f"--cpus {text}: this host has {ncpu} CPUs", f"use 0.01 to {ncpu}")
    return cpus


def _add_io(io: dict[tuple[int, int], IoMax], flag: str, spec: str) -> None:
    """``DEV:RATE`` for one ``--device-*`` flag, merged per device."""
    dev, sep, rate = spec.rpartition(":")
    if not sep or not dev or not rate:
        raise UsageError(f"--{flag} {spec!r}: expected DEVICE:RATE", "e.g. /dev/sda:10mb")
    from tophan._internal.units import parse_size

    value = parse_size(rate) if flag.endswith("bps") else _parse_int(flag, rate)
    if value <= 0:
        raise UsageError(f"--{flag} {spec!r}: the rate must be positive")
    try:
        st = os.stat(dev)
    except OSError as e:
        raise UsageError(f"--{flag} {spec!r}: {dev}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise UsageError(f"--{flag} {spec!r}: {dev} is not a block device")
    ids = (os.major(st.st_rdev), os.minor(st.st_rdev))
    rates = dict(io[ids].rates()) if ids in io else {}
    rates[_IO_FLAGS[flag]] = value
    io[ids] = IoMax(
        io[ids].device if ids in io else dev,
        *ids,
        rbps=rates.get("rbps"),
        wbps=rates.get("wbps"),
        riops=rates.get("riops"),
        wiops=rates.get("wiops"),
    )


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), as runc >= 1.3.2 and crun >= 1.23 do.

    Their quadratic fit in log space maps the minimum, docker's default (1024 -> 100) and the
    maximum onto each other; the older linear formula gave the default shares a weight of 39.
    """
    if shares <= 2:
        return 1
    if shares >= MAX_SHARES:
        return 10_000
    import math

    lg = math.log2(shares)
    return math.ceil(10 ** ((lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0))


def blkio_to_io_weight(weight: int) -> int:
    """blkio weight (10..1000) to io.weight (1..10000), runc's linear conversion."""
    return 1 + (weight - 10) * 9999 // 990


# -- the cgroup file system -------------------------------------------------------------------


class Fs:
    """The few file operations we do on cgroupfs (a class so a unit test can emulate a kernel).

    Writes never create: an interface file that is missing means the kernel lacks the
    controller or feature, and each value goes in one write(2), as cgroupfs requires.
    """

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def write(self, path: str, data: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def writable(self, path: str) -> bool:
        return os.access(path, os.W_OK)

    def attach_devices(self, path: str, rules: Sequence[Rule]) -> None:
        """Attach the v2 device program for ``rules`` to cgroup ``path`` (needs real root)."""
        from tophan.run import devices

        devices.attach(path, rules)

    def subdirs(self, path: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []


class Host:
    """Where cgroups live on this machine: found once per process (see :func:`mode`).

    ``v2_top`` is the v2 directory our parent goes in (the root, or a delegated
    ``user@UID.service``), None when this process can write nowhere; ``v1`` maps each mounted v1
    controller to its hierarchy's mount point (co-mounted controllers share one).
    """

    def __init__(
        self,
        mode: Mode,
        *,
        v2_top: str | None = None,
        v1: dict[str, str] | None = None,
        fs: Fs | None = None,
        v2_mount: str | None = None,
    ) -> None:
        self.mode: Mode = mode
        self.v2_top = v2_top
        self.v1 = dict(v1 or {})
        self.fs = fs or Fs()
        self.v2_mount = v2_mount  # the cgroup2 mount point (unified hosts)

    def parents(self) -> list[str]:
        """Our parent cgroup in every hierarchy we use."""
        if self.mode == "unified":
            return [os.path.join(self.v2_top, PARENT)] if self.v2_top else []
        return [os.path.join(mp, PARENT) for mp in _unique(self.v1.values())]

    def reason(self, limits: Limits) -> tuple[str, str] | None:
        """(message, hint) saying why ``limits`` cannot be enforced, or None."""
        if self.mode == "unified":
            return self._reason_v2(limits)
        return self._reason_v1(limits)

    def _reason_v2(self, limits: Limits) -> tuple[str, str] | None:
        if self.v2_top is None:
            return (
                "no cgroup this user may manage (not root, no delegated user@UID.service)",
                f"start it in a systemd user session with delegation, {NO_LIMITS}",
            )
        parent = os.path.join(self.v2_top, PARENT)
        have = self._parent_exists(parent)
        if not self.fs.writable(parent if have else self.v2_top):
            return (f"cannot create cgroups under {self.v2_top}: permission denied", NO_LIMITS)
        # What the kernel offers our parent: its cgroup.controllers, which before we make it
        # is what the cgroup above hands down (its subtree_control; we never write that one).
        source = "cgroup.controllers" if have else "cgroup.subtree_control"
        try:
            offered = self.fs.read(os.path.join(parent if have else self.v2_top, source)).split()
        except OSError as e:
            return (f"cannot read {self.v2_top}/{source}: {e.strerror}", NO_LIMITS)
        missing = [c for c in limits.controllers() if c not in offered]
        if missing:
            return (
                f"cgroup v2 controller(s) {' '.join(missing)} not enabled for {self.v2_top}",
                f"enable them in its cgroup.subtree_control (or ask for delegation), {NO_LIMITS}",
            )
        if have:
            return _feature_reason_v2(self.fs, parent, limits)
        return None

    def _parent_exists(self, parent: str) -> bool:
        return self.fs.exists(os.path.join(parent, "cgroup.procs"))

    def _reason_v1(self, limits: Limits) -> tuple[str, str] | None:
        if not self.v1:
            return ("no cgroup file system is mounted", f"mount one at /sys/fs/cgroup, {NO_LIMITS}")
        wanted = [_V1_NAME.get(c, c) for c in limits.controllers()]
        missing = [c for c in wanted if c not in self.v1]
        if missing:
            return (f"cgroup v1 controller(s) {' '.join(missing)} not mounted", NO_LIMITS)
        for mp in _unique(self.v1.values()):
            parent = os.path.join(mp, PARENT)
            if not self.fs.writable(parent if self.fs.exists(parent) else mp):
                return (
                    f"cannot create cgroups under {mp}: permission denied",
                    f"cgroup v1 has no delegation to users: run as root, {NO_LIMITS}",
                )
        return _feature_reason_v1(self.fs, self.v1, limits)


_V1_NAME = {"io": "blkio"}


def _feature_reason_v2(fs: Fs, d: str, limits: Limits) -> tuple[str, str] | None:
    """Files a limit needs beyond its controller (``d`` has the controllers enabled)."""
    if limits.memory_swap not in (None, -1) and not fs.exists(os.path.join(d, "memory.swap.max")):
        return (
            "--memory-swap cannot be enforced: no memory.swap.max (kernel without swap accounting)",
            f"drop --memory-swap, {NO_LIMITS}",
        )
    if limits.io_weight is not None and not _io_weight_file(fs, d, ("io.bfq.weight", "io.weight")):
        return (
            "--blkio-weight cannot be enforced: no io.weight or io.bfq.weight",
            f"use the BFQ I/O scheduler or a kernel with io.cost, {NO_LIMITS}",
        )
    return None


def _feature_reason_v1(fs: Fs, v1: dict[str, str], limits: Limits) -> tuple[str, str] | None:
    """Files a limit needs beyond its controller being mounted."""
    memsw = os.path.join(v1.get("memory", ""), "memory.memsw.limit_in_bytes")
    if limits.memory_swap not in (None, -1) and not fs.exists(memsw):
        return (
            "--memory-swap cannot be enforced: swap accounting is off (no memory.memsw.*)",
            f"boot with swapaccount=1 or drop --memory-swap, {NO_LIMITS}",
        )
    blkio = v1.get("blkio", "")
    if limits.io_weight is not None and not _v1_weight_file(fs, blkio):
        return (
            "--blkio-weight cannot be enforced: no blkio.weight or blkio.bfq.weight",
            f"use the BFQ I/O scheduler or drop --blkio-weight, {NO_LIMITS}",
        )
    if limits.io_max and not fs.exists(os.path.join(blkio, _V1_THROTTLE["rbps"])):
        return ("device throttles cannot be enforced: no blkio.throttle.*", NO_LIMITS)
    return None


def _v1_weight_file(fs: Fs, blkio: str) -> str | None:
    """The blkio weight file this host offers, if any. The files exist in non-root cgroups
    only, so our parent tells; on a host that has none yet (a fresh one) it is made for the
    look and removed again, so the answer never depends on what an earlier run left."""
    parent = os.path.join(blkio, PARENT)
    made = False
    if not fs.exists(parent):
        try:
            fs.mkdir(parent)
            made = True
        except FileExistsError:
            pass
        except OSError:
            return None  # cannot look (the writability check reports why first)
    try:
        return _io_weight_file(fs, parent, ("blkio.bfq.weight", "blkio.weight"))
    finally:
        if made:
            _remove_parent_if_empty(fs, parent)


def _io_weight_file(fs: Fs, d: str, names: tuple[str, ...]) -> str | None:
    """The first weight file that exists: BFQ's own takes precedence, as in runc."""
    for name in names:
        if fs.exists(os.path.join(d, name)):
            return name
    return None


# -- detection ---------------------------------------------------------------------------------

_HOST: Host | None = None


def _host() -> Host:
    global _HOST
    if _HOST is None:
        _HOST = detect()
    return _HOST


def mode() -> Mode:
    """``unified`` (v2 only), ``hybrid`` (v1 controllers + an empty v2), or ``legacy`` (v1)."""
    return _host().mode


def detect() -> Host:
    """Read this process's view: /proc/self/mountinfo and /proc/self/cgroup."""
    with open("/proc/self/mountinfo") as f:
        v2, v1 = parse_mountinfo(f.read())
    if v1 or v2 is None:
        return Host("hybrid" if v2 else "legacy", v1=v1)
    try:
        with open("/proc/self/cgroup") as f:
            own = f.read()
    except OSError:
        own = ""
    return Host("unified", v2_top=v2_top(v2, own, Fs()), v2_mount=v2)


def parse_mountinfo(text: str) -> tuple[str | None, dict[str, str]]:
    """(the cgroup2 mount point, {v1 controller: mount point}) from mountinfo's text.

    A mount of a hierarchy's root wins over bind mounts of a subtree (a container's view).
    """
    v2: tuple[int, str] | None = None
    v1: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        post = line.split(" - ", 1)[1].split()
        fstype, root, mp = post[0], _unescape(fields[3]), _unescape(fields[4])
        rank = (0 if root == "/" else 1) * 2 + (0 if mp.startswith("/sys/fs/cgroup") else 1)
        if fstype == "cgroup2" and (v2 is None or rank < v2[0]):
            v2 = (rank, mp)
        elif fstype == "cgroup" and len(post) >= 3:
            for ctrl in post[2].split(","):
                if ctrl in V1_CONTROLLERS and (ctrl not in v1 or rank < v1[ctrl][0]):
                    v1[ctrl] = (rank, mp)
    return (v2[1] if v2 else None), {c: mp for c, (_, mp) in v1.items()}


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as ``\ooo``."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def v2_top(mount: str, own_cgroup: str, fs: Fs) -> str | None:
    """Where our parent goes on v2: the root if we may write there, else our delegated subtree.

    An unprivileged user owns ``user@UID.service`` (systemd delegates it); it is found among the
    ancestors of the cgroup this process is in (``0::/user.slice/.../user@1000.service/...``).
    """
    if fs.writable(mount):
        return mount
    for line in own_cgroup.splitlines():
        if not line.startswith("0::"):
            continue
        parts = [p for p in line[3:].split("/") if p]
        for i, part in enumerate(parts):
            if part.startswith("user@") and part.endswith(".service"):
                candidate = os.path.join(mount, *parts[: i + 1])
                if fs.writable(candidate):
                    return candidate
    return None


def unavailable(limits: Limits) -> str | None:
    """Why this process cannot enforce ``limits`` here (one line with a hint), or None.

    With no limits set it says whether a cgroup can be made at all (to track and kill a
    container's processes), so a caller may then run without one.
    """
    reason = _host().reason(limits)
    return str(TophanError(*reason)) if reason else None


def warm_up_moves() -> None:
    """Let the wait the next move into a cgroup has to make pass in the background, now.

    Every move of a process between cgroups (a write to ``cgroup.procs`` or ``tasks``, v1 or
    v2) takes the kernel's global ``cgroup_threadgroup_rwsem`` for writing, and that first waits
    for an RCU grace period -- 7-20 ms on the 2-core test VM, a fifth of a container start --
    unless another move ended within the last ~10 ms (the rwsem's rcu_sync: moves that overlap
    share one grace period). A container start moves its init process a few milliseconds
    after it knows it will: a thread started here moves itself into the cgroup it already is in
    (one thread, no change at all: ``tasks`` on v1, ``cgroup.threads`` on v2), so that the
    grace period passes while the start does its other work, and the real move then takes
    ~0.1 ms. Measured on that VM: the move ends 2-5 ms sooner, `tophan run` 47.2 -> 44.4 ms
    (medians of 41 alternating runs). Best effort: a refused write loses only the overlap."""
    host = _host()
    if host.mode == "unified":
        if host.v2_mount is None:
            return
        mount, field, name = host.v2_mount, "", "cgroup.threads"
    elif host.v1:
        controller, mount = next(iter(host.v1.items()))
        field, name = controller, "tasks"
    else:
        return
    # _thread, not threading: threading costs a start ~1.6 ms of imports.
    _thread.start_new_thread(_move_self, (mount, field, name))


def _move_self(mount: str, controller: str, name: str) -> None:
    """The thread of :func:`warm_up_moves` (imports nothing: the caller may fork meanwhile)."""
    try:
        with open("/proc/thread-self/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                fd = os.open(f"{mount}{path.rstrip('/')}/{name}", os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, str(_thread.get_native_id()).encode())
                finally:
                    os.close(fd)
                return
    except (OSError, ValueError):
        pass


def list_ours() -> list[str]:
    """Names of the cgroups under our parent (live or stale: for gc)."""
    host = _host()
    names: set[str] = set()
    for parent in host.parents():
        names.update(host.fs.subdirs(parent))
    return sorted(names)


# -- cgroups -----------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    ok = (
        0 < len(name) <= 128
        and name[0].isalnum()
        and all(c.isalnum() or c in "-_.@" for c in name)
        and name.isascii()
    )
    if not ok:
        raise UsageError(
            f"invalid cgroup name {name!r}", "use letters, digits and -_.@ (at most 128)"
        )


class Cgroup:
    """One cgroup of ours: ``create`` a new one or ``open`` an existing one by name."""

    def __init__(self, host: Host, name: str, dirs: dict[str, str]) -> None:
        self.host = host
        self.fs = host.fs
        self.name = name
        self._dirs = dirs  # controller (v1) or "" (v2) -> directory

    def __repr__(self) -> str:
        return f"Cgroup({self.name!r}, {self.paths()!r})"

    @classmethod
    def create(cls, name: str, limits: Limits, devices: Sequence[Rule] | None = None) -> Cgroup:
        """Make cgroup ``name`` with ``limits`` set; refuses a name that exists (Exists).

        ``devices``: the device nodes its processes may open (tophan.run.devices; every other
        open of a device is refused), or None for no device restriction."""
        _check_name(name)
        limits.check()
        host = _host()
        reason = host.reason(limits)
        if reason:
            raise TophanError(*reason)
        if host.mode == "unified":
            return _V2Cgroup.make(host, name, limits, devices)
        return _V1Cgroup.make(host, name, limits, devices)

    @classmethod
    def open(cls, name: str) -> Cgroup:
        """An existing cgroup of ours (made by another process); NotFound if there is none."""
        _check_name(name)
        host = _host()
        if host.mode == "unified":
            d = os.path.join(host.parents()[0], name) if host.v2_top else ""
            if d and host.fs.exists(d):
                return _V2Cgroup(host, name, {"": d})
        else:
            dirs = {c: os.path.join(mp, PARENT, name) for c, mp in host.v1.items()}
            dirs = {c: d for c, d in dirs.items() if host.fs.exists(d)}
            if dirs:
                return _V1Cgroup(host, name, dirs)
        raise NotFound(f"no cgroup named {name!r}", "list them with tophan.cgroup.list_ours()")

    def paths(self) -> list[str]:
        return _unique(self._dirs.values())

    def views(self) -> list[tuple[str, str]]:
        """What a container in this cgroup's namespace mounts at /sys/fs/cgroup to see its own
        cgroup: ("", "") for cgroup2; on v1 (directory name, controllers) per hierarchy it is in
        (only those: in any other its namespace's root would be the host's tree)."""
        if self.host.mode == "unified":
            return [("", "")]
        out = []
        for mp in _unique(self.host.v1[c] for c in V1_CONTROLLERS if c in self._dirs):
            ctrls = [c for c in V1_CONTROLLERS if self.host.v1.get(c) == mp]
            out.append((os.path.basename(mp) or ",".join(ctrls), ",".join(ctrls)))
        return out

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into this cgroup, in every hierarchy."""
        for d in self.paths():
            try:
                self.fs.write(os.path.join(d, "cgroup.procs"), str(pid))
            except OSError as e:
                if e.errno == errno.ESRCH:
                    raise TophanError(f"process {pid} exited before joining its cgroup") from None
                raise TophanError(
                    f"cannot move process {pid} into cgroup {self.name}: {e.strerror}",
                    f"{d}/cgroup.procs",
                ) from None

    def join(self) -> None:
        """Move the calling process in: for a forked child, before it execs."""
        self.add(os.getpid())

    def procs(self) -> list[int]:
        """Processes in this cgroup and any cgroups below it (a container may nest its own)."""
        return sorted(set(_read_procs(self.fs, self._tracking())))

    def _tracking(self) -> str:
        return self.paths()[0]

    def remove(self) -> None:
        """rmdir it (and what a container made below it) everywhere; a missing one is fine.

        The kernel refuses (EBUSY) while processes remain: exiting ones get a moment, live
        ones are an error (call :meth:`kill` first).
        """
        deadline = time.monotonic() + 1.0
        for d in self.paths():
            for sub in reversed(list(_walk(self.fs, d))):
                _rmdir_retrying(self.fs, sub, deadline, self.name)
            _remove_parent_if_empty(self.fs, os.path.dirname(d))

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in it and wait until it is empty (InUse after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            self._kill_once()
            # Rounds are short: without cgroup.kill or a freezer, a fork can race a round.
            if _wait(lambda: not self._populated(), min(deadline, time.monotonic() + 0.25)):
                return
            if time.monotonic() >= deadline:
                raise InUse(
                    f"cgroup {self.name}: processes {self.procs()} survived SIGKILL for "
                    f"{timeout:g}s",
                    "they are likely stuck in the kernel (D state); try again later",
                )

    def _kill_once(self) -> None:
        """Freeze (so nothing forks meanwhile), SIGKILL every process, thaw (so they die)."""
        frozen = self._try_freeze()
        try:
            for pid in self.procs():
                try:
                    os.kill(pid, SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self.thaw()

    def _try_freeze(self) -> bool:
        try:
            self.freeze(timeout=1.0)
        except TophanError:
            # No freezer, or a task stuck in D state holds up "FREEZING": kill unfrozen, and
            # never leave it half frozen (killed tasks die only once thawed).
            try:
                self.thaw()
            except TophanError:
                pass
            return False
        return True

    def _populated(self) -> bool:
        return bool(self.procs())

    # Per-version parts.
    def freeze(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    def oom_kills(self) -> int:
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        raise NotImplementedError


class _V2Cgroup(Cgroup):
    @classmethod
    def make(
        cls, host: Host, name: str, limits: Limits, devices: Sequence[Rule] | None = None
    ) -> _V2Cgroup:
        parent = host.parents()[0]
        _ensure_parent_v2(host.fs, parent, limits.controllers())
        reason = _feature_reason_v2(host.fs, parent, limits)
        if reason:
            raise TophanError(*reason)
        d = os.path.join(parent, name)
        _mkdir_new(host.fs, d, name, lambda: _ensure_parent_v2(host.fs, parent, []))
        cg = cls(host, name, {"": d})
        try:
            _apply_v2(host.fs, d, limits, name)
            if devices is not None:
                _attach_devices(host.fs, d, devices, name)
        except BaseException:
            cg.remove()
            raise
        return cg

    @property
    def dir(self) -> str:
        return self._dirs[""]

    def _file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _kill_once(self) -> None:
        # cgroup.kill (Linux 5.14) kills the whole subtree at once, frozen or not, race-free.
        kill = self._file("cgroup.kill")
        if not self.fs.exists(kill):
            super()._kill_once()
            return
        try:
            self.fs.write(kill, "1")
        except FileNotFoundError:
            pass  # removed meanwhile: nothing left to kill

    def _populated(self) -> bool:
        try:
            return _keyed(self.fs.read(self._file("cgroup.events"))).get("populated", 0) != 0
        except FileNotFoundError:
            return False

    def freeze(self, timeout: float = 5.0) -> None:
        self._set_freeze("1", timeout)

    def thaw(self) -> None:
        self._set_freeze("0", 5.0)

    def _set_freeze(self, value: str, timeout: float) -> None:
        try:
            self.fs.write(self._file("cgroup.freeze"), value)
        except OSError as e:
            raise TophanError(
                f"cgroup {self.name}: cannot write cgroup.freeze: {e.strerror}",
                "the v2 freezer needs Linux >= 5.2",
            ) from None
        want = int(value)
        deadline = time.monotonic() + timeout
        if not _wait(lambda: self._events().get("frozen", want) == want, deadline):
            raise TophanError(
                f"cgroup {self.name}: not {'frozen' if want else 'thawed'} after {timeout:g}s",
                "a process may be stuck in the kernel (D state)",
            )

    def _events(self) -> dict[str, int]:
        return _keyed(self.fs.read(self._file("cgroup.events")))

    def oom_kills(self) -> int:
        try:
            return _keyed(self.fs.read(self._file("memory.events"))).get("oom_kill", 0)
        except FileNotFoundError:
            return 0  # no memory controller here: nothing could be OOM-killed by our limit

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        _stat_file(self.fs, out, "memory_current", self._file("memory.current"))
        _stat_file(self.fs, out, "memory_peak", self._file("memory.peak"))  # Linux 5.19
        _stat_file(self.fs, out, "pids_current", self._file("pids.current"))
        try:
            cpu = _keyed(self.fs.read(self._file("cpu.stat")))
            out["cpu_usage_usec"] = cpu["usage_usec"]
        except (FileNotFoundError, KeyError):
            pass
        out["oom_kills"] = self.oom_kills()
        return out


def _ensure_parent_v2(fs: Fs, parent: str, needed: list[str]) -> None:
    """Our parent with every controller it is offered enabled for its children.

    This is the only cgroup.subtree_control we write. Cgroup v2 allows no processes in a
    cgroup that hands controllers down, so nothing may ever be moved into the parent itself.
    """
    try:
        fs.mkdir(parent)
    except FileExistsError:
        pass
    offered = fs.read(os.path.join(parent, "cgroup.controllers")).split()
    enabled = fs.read(os.path.join(parent, "cgroup.subtree_control")).split()
    for ctrl in V2_CONTROLLERS:
        if ctrl not in offered or ctrl in enabled:
            continue
        try:
            # One at a time: one the kernel refuses must not stop the others.
            fs.write(os.path.join(parent, "cgroup.subtree_control"), f"+{ctrl}")
        except OSError as e:
            if ctrl not in needed:
                continue
            hint = "nothing may run in it (cgroup v2 allows processes only in leaves)"
            raise TophanError(
                f"cannot enable the {ctrl} controller in {parent}: {e.strerror}",
                hint if e.errno == errno.EBUSY else NO_LIMITS,
            ) from None


def _apply_v2(fs: Fs, d: str, limits: Limits, name: str) -> None:
    def put(fname: str, value: str) -> None:
        _put(fs, d, fname, value, name)

    # cpuset first: it decides where the rest may run.
    if limits.cpuset_cpus is not None:
        put("cpuset.cpus", limits.cpuset_cpus)
    if limits.cpuset_mems is not None:
        put("cpuset.mems", limits.cpuset_mems)
    if limits.memory is not None:
        put("memory.max", str(limits.memory))
    total = limits.memsw()
    # v2 limits swap on its own: docker's memory+swap total minus the memory.
    if total is not None and fs.exists(os.path.join(d, "memory.swap.max")):
        put("memory.swap.max", "max" if total == -1 else str(total - (limits.memory or 0)))
    if limits.cpus is not None:
        put("cpu.max", f"{round(limits.cpus * CPU_PERIOD)} {CPU_PERIOD}")
    if limits.cpu_shares is not None:
        put("cpu.weight", str(shares_to_weight(limits.cpu_shares)))
    if limits.pids is not None and limits.pids > 0:
        put("pids.max", str(limits.pids))
    if limits.io_weight is not None:
        wfile = _io_weight_file(fs, d, ("io.bfq.weight", "io.weight"))
        if wfile == "io.bfq.weight":  # BFQ takes docker's 10..1000 as it is
            put(wfile, str(limits.io_weight))
        else:
            put("io.weight", f"default {blkio_to_io_weight(limits.io_weight)}")
    for io in limits.io_max:
        put("io.max", io.v2_line())


class _V1Cgroup(Cgroup):
    @classmethod
    def make(
        cls, host: Host, name: str, limits: Limits, devices: Sequence[Rule] | None = None
    ) -> _V1Cgroup:
        # Only the hierarchies these limits use, plus pids and freezer (to track and kill) and
        # cpuacct (usage):
        # every hierarchy joined costs a cgroup.procs write, the slowest step of a start.
        wanted = {"pids", "freezer", "cpuacct"}
        for ctrl in limits.controllers():
            wanted.update(_V1_FOR.get(ctrl, (ctrl,)))
        if devices is not None:
            wanted.add("devices")
        mps = _unique(host.v1[c] for c in V1_CONTROLLERS if c in host.v1 and c in wanted)
        for mp in mps:
            _ensure_parent_v1(host, mp)
        reason = _feature_reason_v1(host.fs, host.v1, limits)
        if reason:
            raise TophanError(*reason)
        made: dict[str, str] = {}  # mount point -> new dir
        cg = cls(host, name, {})
        try:
            for mp in mps:
                made[mp] = os.path.join(mp, PARENT, name)

                def ensure(mp: str = mp) -> None:
                    _ensure_parent_v1(host, mp)

                _mkdir_new(host.fs, made[mp], name, ensure)
                cg._dirs.update({c: made[mp] for c, m in host.v1.items() if m == mp})
            _apply_v1(host.fs, cg._dirs, limits, name)
            if devices is not None and "devices" in cg._dirs:
                for fname, line in v1_lines(devices):
                    _put(host.fs, cg._dirs["devices"], fname, line, name)
        except BaseException:
            cg.remove()  # only the dirs made here: an existing one is never in cg._dirs
            raise
        return cg

    def paths(self) -> list[str]:
        # In V1_CONTROLLERS order: cpuset's cpus/mems are set first and it is joined first.
        return _unique(self._dirs[c] for c in V1_CONTROLLERS if c in self._dirs)

    def _tracking(self) -> str:
        for ctrl in ("pids", "freezer"):
            if ctrl in self._dirs:
                return self._dirs[ctrl]
        return self.paths()[0]

    def freeze(self, timeout: float = 5.0) -> None:
        d = self._need("freezer")
        _put(self.fs, d, "freezer.state", "FROZEN", self.name)
        deadline = time.monotonic() + timeout
        state = os.path.join(d, "freezer.state")
        # FREEZING until every task has stopped; a task in D state can hold that up.
        if not _wait(lambda: self.fs.read(state).strip() == "FROZEN", deadline):
            raise TophanError(
                f"cgroup {self.name}: still freezing after {timeout:g}s",
                "a process may be stuck in the kernel (D state)",
            )

    def thaw(self) -> None:
        _put(self.fs, self._need("freezer"), "freezer.state", "THAWED", self.name)

    def _need(self, ctrl: str) -> str:
        d = self._dirs.get(ctrl)
        if d is None:
            raise TophanError(f"cgroup {self.name}: the v1 {ctrl} controller is not mounted")
        return d

    def oom_kills(self) -> int:
        d = self._dirs.get("memory")
        if d is None:
            return 0
        return _keyed(self.fs.read(os.path.join(d, "memory.oom_control"))).get("oom_kill", 0)

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        mem, pids, acct = (self._dirs.get(c, "") for c in ("memory", "pids", "cpuacct"))
        if mem:
            _stat_file(self.fs, out, "memory_current", os.path.join(mem, "memory.usage_in_bytes"))
            _stat_file(self.fs, out, "memory_peak", os.path.join(mem, "memory.max_usage_in_bytes"))
        if pids:
            _stat_file(self.fs, out, "pids_current", os.path.join(pids, "pids.current"))
        if acct:
            _stat_file(self.fs, out, "cpu_usage_usec", os.path.join(acct, "cpuacct.usage"))
            if "cpu_usage_usec" in out:
                out["cpu_usage_usec"] //= 1000  # cpuacct counts nanoseconds
        out["oom_kills"] = self.oom_kills()
        return out


def _attach_devices(fs: Fs, d: str, devices: Sequence[Rule], name: str) -> None:
    try:
        fs.attach_devices(d, devices)
    except OSError as e:
        raise TophanError(
            f"cgroup {name}: cannot attach the device filter: {e.strerror}",
            "the kernel needs CONFIG_CGROUP_BPF; run as real root",
        ) from None


def _ensure_parent_v1(host: Host, mp: str) -> None:
    parent = os.path.join(mp, PARENT)
    try:
        host.fs.mkdir(parent)
    except FileExistsError:
        pass
    if host.v1.get("cpuset") == mp:
        _inherit_cpuset(host.fs, mp, parent)


def _inherit_cpuset(fs: Fs, src: str, dst: str) -> None:
    """A new v1 cpuset has no CPUs or memory nodes (no task may join): copy its parent's."""
    for fname in ("cpuset.cpus", "cpuset.mems"):
        path = os.path.join(dst, fname)
        if not fs.read(path).strip():
            fs.write(path, fs.read(os.path.join(src, fname)).strip())


def _apply_v1(fs: Fs, dirs: dict[str, str], limits: Limits, name: str) -> None:
    if "cpuset" in dirs:
        d = dirs["cpuset"]
        _inherit_cpuset(fs, os.path.dirname(d), d)
        if limits.cpuset_cpus is not None:
            _put(fs, d, "cpuset.cpus", limits.cpuset_cpus, name)
        if limits.cpuset_mems is not None:
            _put(fs, d, "cpuset.mems", limits.cpuset_mems, name)
    if limits.memory is not None:
        _apply_v1_memory(fs, dirs["memory"], limits, name)
    if limits.cpus is not None:
        _put(fs, dirs["cpu"], "cpu.cfs_period_us", str(CPU_PERIOD), name)
        _put(fs, dirs["cpu"], "cpu.cfs_quota_us", str(round(limits.cpus * CPU_PERIOD)), name)
    if limits.cpu_shares is not None:
        _put(fs, dirs["cpu"], "cpu.shares", str(limits.cpu_shares), name)
    if limits.pids is not None and limits.pids > 0:
        _put(fs, dirs["pids"], "pids.max", str(limits.pids), name)
    if limits.io_weight is not None:
        d = dirs["blkio"]
        wfile = _io_weight_file(fs, d, ("blkio.bfq.weight", "blkio.weight")) or "blkio.weight"
        _put(fs, d, wfile, str(limits.io_weight), name)
    for io in limits.io_max:
        for key, value in io.rates():
            _put(fs, dirs["blkio"], _V1_THROTTLE[key], f"{io.major}:{io.minor} {value}", name)


def _apply_v1_memory(fs: Fs, d: str, limits: Limits, name: str) -> None:
    # The kernel keeps memory <= memory+swap at every step: memory first, then the total.
    _put(fs, d, "memory.limit_in_bytes", str(limits.memory), name)
    total = limits.memsw()
    if total is None or total == -1:
        return  # unlimited swap is the default
    if fs.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
        _put(fs, d, "memory.memsw.limit_in_bytes", str(total), name)
    elif limits.memory_swap is not None:
        # Never silently ignore an explicit swap limit (unavailable() says so first).
        raise TophanError(
            "--memory-swap cannot be enforced: swap accounting is off (no memory.memsw.*)",
            f"boot with swapaccount=1 or drop --memory-swap, {NO_LIMITS}",
        )


# -- helpers -----------------------------------------------------------------------------------


def _put(fs: Fs, d: str, fname: str, value: str, name: str) -> None:
    """Write one interface file, turning the kernel's refusal into a message for users."""
    try:
        fs.write(os.path.join(d, fname), value)
    except OSError as e:
        raise _setting_error(e, fname, value, name) from None


def _setting_error(e: OSError, fname: str, value: str, name: str) -> TophanError:
    what = f"cgroup {name}: the kernel refused {fname} = {value!r}: {e.strerror}"
    if e.errno == errno.ENOENT:
        return TophanError(
            f"cgroup {name}: this kernel has no {fname}",
            f"its controller or feature is missing, {NO_LIMITS}",
        )
    if fname.startswith("cpuset."):
        return TophanError(what, "use CPUs and memory nodes this host has (cpuset.*.effective)")
    if e.errno == errno.ENODEV:
        return TophanError(what, "throttles apply to whole disks, not partitions")
    return TophanError(what)


def _mkdir_new(fs: Fs, d: str, name: str, ensure_parent: Callable[[], None]) -> None:
    # Our parent goes when its last child does (see remove()), so another process may remove
    # it between our making sure of it and making the child: then make sure again.
    for _ in range(10):
        try:
            fs.mkdir(d)
            return
        except FileExistsError:
            raise Exists(
                f"cgroup {name!r} already exists ({d})",
                "choose another name, or remove a stale one (list_ours, open, kill, remove)",
            ) from None
        except FileNotFoundError:
            ensure_parent()
        except OSError as e:
            raise TophanError(f"cannot create cgroup {d}: {e.strerror}", NO_LIMITS) from None
    raise TophanError(f"cannot create cgroup {d}: its parent keeps vanishing", "retry")


def _remove_parent_if_empty(fs: Fs, parent: str) -> None:
    """rmdir our parent cgroup once it holds no cgroup: a host keeps nothing of ours when
    nothing of ours runs. The kernel refuses while a child exists; a race with a process
    making one is handled there (_mkdir_new)."""
    if os.path.basename(parent) != PARENT or fs.subdirs(parent):
        return
    try:
        fs.rmdir(parent)
    except OSError:
        pass  # a child appeared meanwhile (EBUSY), or someone else removed it


def _walk(fs: Fs, top: str) -> Iterator[str]:
    """``top`` and the cgroups below it, parents first."""
    if not fs.exists(top):
        return
    yield top
    for sub in fs.subdirs(top):
        yield from _walk(fs, os.path.join(top, sub))


def _read_procs(fs: Fs, top: str) -> Iterator[int]:
    for d in _walk(fs, top):
        try:
            text = fs.read(os.path.join(d, "cgroup.procs"))
        except FileNotFoundError:
            continue  # removed while we walked
        yield from (int(p) for p in text.split())


def _rmdir_retrying(fs: Fs, d: str, deadline: float, name: str) -> None:
    delay = 0.001
    while True:
        try:
            fs.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise InUse(
                    f"cannot remove cgroup {name} ({d}): {e.strerror}",
                    "processes still run in it: kill it first",
                ) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _wait(done: Callable[[], bool], deadline: float) -> bool:
    """Poll ``done`` with a growing interval until it holds (True) or ``deadline`` passes."""
    delay = 0.0005
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _keyed(text: str) -> dict[str, int]:
    """``key value`` lines (cgroup.events, memory.events, cpu.stat, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _stat_file(fs: Fs, out: dict[str, int], key: str, path: str) -> None:
    try:
        text = fs.read(path).strip()
    except FileNotFoundError:
        return
    if text.isdigit():
        out[key] = int(text)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
