"""Resource limits (tophan.run.cgroup): parsing, a fake v2 kernel, and real cgroups.

Three kinds of tests:

- Pure unit tests: sizes and docker-named flags, the shares/weight conversions, mount and
  delegation detection from sample /proc text.
- Fake cgroup v2 (``FakeV2``): THIS machine is hybrid (v1 controllers; its v2 hierarchy has no
  controllers), so the v2 code path is unit-tested here against an emulation of the kernel's v2
  rules in a tmp dir: which files are written with which values, that only our parent's
  cgroup.subtree_control is touched, the no-internal-process rule, delegation. It is a fake; the
  real proof of the v2 path is the ``real`` tests below run in the v2 VM (tests/vm/run-in-vm).
- Real cgroups (root): OOM kill, pids limit, CPU quota, freeze/thaw, kill, remove, cpuset — on
  whatever this host has (v1 here, v2 in the VM), plus checks of the interface files that only
  run on their own version (``v1_only``, ``v2_only``): unchanged, they run in the VM for real.

Every real cgroup is named ``tophan-test-<uuid>`` and killed and removed by the fixture's
finalizer, even when a test fails; every process a test starts is killed and reaped.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import loop_device
from tophan.errors import Exists, NotFound, TophanError, UsageError
from tophan.run import cgroup
from tophan.run.cgroup import Cgroup, IoMax, Limits, parse_limits

MiB = 1 << 20


# -- parsing -----------------------------------------------------------------------------------


def test_parse_limits_docker_flags() -> None:
    limits = parse_limits(
        {
            "--memory": "64m",
            "memory_swap": "128m",
            "cpus": "0.5",
            "-c": "512",
            "cpuset-cpus": "0",
            "cpuset-mems": "0",
            "pids-limit": "100",
            "blkio-weight": "300",
        }
    )
    assert limits == Limits(
        memory=64 * MiB,
        memory_swap=128 * MiB,
        cpus=0.5,
        cpu_shares=512,
        cpuset_cpus="0",
        cpuset_mems="0",
        pids=100,
        io_weight=300,
    )
    assert limits.controllers() == ["cpu", "cpuset", "io", "memory", "pids"]


def test_parse_limits_unset_values_mean_no_limit() -> None:
    # Docker: --pids-limit 0/-1, --cpus 0, --cpu-shares 0, --memory-swap 0 are "not set".
    unset: list[dict[str, str | list[str]]] = [
        {"pids-limit": "-1"},
        {"pids-limit": "0"},
        {"cpus": "0"},
        {"cpu-shares": "0"},
        {"memory": ""},
        {"memory-swap": "0"},
        {"device-read-bps": []},
    ]
    for flags in unset:
        assert parse_limits(flags) == Limits(), flags
    assert parse_limits({"m": "6m", "memory-swap": "-1"}).memsw() == -1
    assert parse_limits({"m": ["1g", "64m"]}).memory == 64 * MiB  # the last one wins
    assert Limits(memory=64 * MiB).memsw() == 128 * MiB  # docker: as much swap as memory


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"memory": "1m"}, "minimum is 6m"),
        ({"memory": "lots"}, "invalid size"),
        ({"memory-swap": "64m"}, "needs --memory"),
        ({"memory": "64m", "memory-swap": "32m"}, "less than --memory"),
        ({"cpus": "0.001"}, "minimum is 0.01"),
        ({"cpus": "-1"}, "positive"),
        ({"cpus": "many"}, "not a number"),
        ({"cpus": "100000"}, "CPUs"),
        ({"cpu-shares": "1"}, "2-262144"),
        ({"cpu-shares": "x"}, "not an integer"),
        ({"cpuset-cpus": "0-"}, "list like"),
        ({"cpuset-cpus": "3-1"}, "list like"),
        ({"cpuset-mems": "a"}, "list like"),
        ({"pids-limit": "ten"}, "not an integer"),
        ({"blkio-weight": "5"}, "10-1000"),
        ({"device-read-bps": "/dev/null"}, "DEVICE:RATE"),
        ({"device-read-bps": "/dev/null:1m"}, "not a block device"),
        ({"device-read-bps": "/nonexistent:1m"}, "No such file"),
        ({"device-read-iops": "/dev/null:1k"}, "not an integer"),
        ({"device-write-bps": "/dev/null:0"}, "positive"),
        ({"kernel-memory": "1g"}, "unknown resource flag --kernel-memory"),
    ],
)
def test_parse_limits_errors(flags: dict[str, str], words: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_limits(dict(flags))
    assert words in str(e.value)
    assert "\n" not in str(e.value)


@pytest.fixture
def loop_dev(tmp_path: Path) -> Iterator[str]:
    """A loop device (a whole disk, as throttles need) on a 16 MiB file, detached afterwards."""
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:
        f.truncate(16 * MiB)
    with loop_device(backing) as dev:
        yield dev


def test_parse_limits_device_flags_merge_per_device(loop_dev: str) -> None:
    dev = loop_dev
    rdev = os.stat(dev).st_rdev
    limits = parse_limits(
        {
            "device-read-bps": [f"{dev}:1mb"],
            "device-write-bps": f"{dev}:2m",
            "device-read-iops": f"{dev}:100",
            "--device-write-iops": [f"{dev}:50", f"{dev}:60"],
        }
    )
    io = IoMax(dev, os.major(rdev), os.minor(rdev), rbps=MiB, wbps=2 * MiB, riops=100, wiops=60)
    assert limits.io_max == [io]
    assert io.v2_line() == f"{io.major}:{io.minor} rbps={MiB} wbps={2 * MiB} riops=100 wiops=60"


def test_conversions() -> None:
    # runc >= 1.3.2 / crun >= 1.23: min, docker's default and max map onto each other.
    assert [cgroup.shares_to_weight(s) for s in (2, 1024, 262144)] == [1, 100, 10000]
    weights = [cgroup.shares_to_weight(s) for s in range(2, 262145, 97)]
    assert weights == sorted(weights)
    assert cgroup.shares_to_weight(512) == 59
    assert [cgroup.blkio_to_io_weight(w) for w in (10, 500, 1000)] == [1, 4950, 10000]


# -- detection ---------------------------------------------------------------------------------

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
LEGACY_MOUNTINFO = """\
25 18 0:22 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
26 18 0:23 / /sys/fs/cgroup/freezer rw shared:10 - cgroup cgroup rw,freezer
90 80 0:23 /docker/abc /mnt/my\\040freezer rw - cgroup cgroup rw,freezer
"""
UNIFIED_MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


def test_parse_mountinfo() -> None:
    v2, v1 = cgroup.parse_mountinfo(HYBRID_MOUNTINFO)
    assert v2 == "/sys/fs/cgroup/unified"
    assert v1 == {c: f"/sys/fs/cgroup/{c}" for c in ("cpu", "cpuacct", "devices", "memory", "pids")}
    v2, v1 = cgroup.parse_mountinfo(LEGACY_MOUNTINFO)
    # Co-mounted controllers share a hierarchy; a hierarchy's root beats a bind of a subtree.
    assert v2 is None
    assert v1 == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "freezer": "/sys/fs/cgroup/freezer",
    }
    assert cgroup.parse_mountinfo(UNIFIED_MOUNTINFO) == ("/sys/fs/cgroup", {})
    assert cgroup.parse_mountinfo(LEGACY_MOUNTINFO.splitlines()[2])[1] == {
        "freezer": "/mnt/my freezer"
    }


class _Writable(cgroup.Fs):
    def __init__(self, *dirs: str) -> None:
        self.dirs = dirs

    def writable(self, path: str) -> bool:
        return path in self.dirs


def test_v2_top_root_or_delegated_subtree() -> None:
    mine = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope\n"
    user = "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service"
    assert cgroup.v2_top("/sys/fs/cgroup", mine, _Writable("/sys/fs/cgroup")) == "/sys/fs/cgroup"
    assert cgroup.v2_top("/sys/fs/cgroup", mine, _Writable(user)) == user
    assert cgroup.v2_top("/sys/fs/cgroup", mine, _Writable()) is None
    assert cgroup.v2_top("/sys/fs/cgroup", "0::/system.slice/x.service\n", _Writable()) is None


def test_mode_matches_the_mounts() -> None:
    with open("/proc/self/mountinfo") as f:
        v2, v1 = cgroup.parse_mountinfo(f.read())
    expected = "unified" if v2 and not v1 else ("hybrid" if v2 else "legacy")
    assert cgroup.mode() == expected
    assert cgroup.mode() is cgroup.mode()  # cached


# -- a fake cgroup v2 kernel -------------------------------------------------------------------

_V2_FILES = {
    "cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n"},
    "cpuset": {"cpuset.cpus": "\n", "cpuset.mems": "\n"},
    "io": {"io.max": "", "io.weight": "default 100\n"},
    "memory": {
        "memory.max": "max\n",
        "memory.swap.max": "max\n",
        "memory.current": "4096\n",
        "memory.peak": "8192\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    },
    "pids": {"pids.max": "max\n", "pids.current": "2\n"},
}


class FakeV2(cgroup.Fs):
    """A fake cgroup v2 kernel on a tmp dir: mkdir makes the interface files of the controllers
    the parent enables, subtree_control and cgroup.procs follow the kernel's rules (offered
    controllers only; no processes in a cgroup that enables controllers), cgroup.kill/freeze
    update cgroup.events. Every write is recorded. ``without`` drops interface files (a kernel
    lacking a feature); ``read_only`` dirs are not writable (an unprivileged user)."""

    def __init__(
        self,
        root: Path,
        *,
        enabled: str = "cpuset cpu io memory pids",
        without: tuple[str, ...] = (),
        read_only: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.without = without
        self.read_only = {str(root / d) if d else str(root) for d in read_only}
        self.writes: list[tuple[str, str]] = []
        (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (root / "cgroup.subtree_control").write_text(enabled + "\n")
        (root / "cgroup.procs").write_text("1\n77\n")  # the root may hold processes
        (root / "cpu.stat").write_text("usage_usec 1\n")

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        enabled = self.read(os.path.join(os.path.dirname(path), "cgroup.subtree_control")).split()
        files = {
            "cgroup.procs": "",
            "cgroup.controllers": " ".join(enabled) + "\n",
            "cgroup.subtree_control": "\n",
            "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.freeze": "0\n",
            "cgroup.kill": "",
            "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        }
        for ctrl in enabled:
            files.update(_V2_FILES[ctrl])
        for name, text in files.items():
            if name not in self.without:
                Path(path, name).write_text(text)

    def rmdir(self, path: str) -> None:
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if (p / "cgroup.procs").read_text().split() or any(x.is_dir() for x in p.iterdir()):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        for f in p.iterdir():
            f.unlink()
        p.rmdir()

    def writable(self, path: str) -> bool:
        return path not in self.read_only

    def write(self, path: str, data: str) -> None:
        self.writes.append((path, data))
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        d, name = p.parent, p.name
        if name == "cgroup.subtree_control":
            self._subtree_control(d, data)
        elif name == "cgroup.procs":
            self._move(d, data.strip())
        elif name == "cgroup.kill":
            for procs in d.rglob("cgroup.procs"):
                procs.write_text("")
            self._events(d, populated=0)
        elif name == "cgroup.freeze":
            p.write_text(data + "\n")
            self._events(d, frozen=int(data))
        elif name == "io.max":  # the kernel keeps one line per device
            lines = [ln for ln in p.read_text().splitlines() if ln.split()[0] != data.split()[0]]
            p.write_text("".join(f"{ln}\n" for ln in [*lines, data]))
        else:
            p.write_text(data + "\n")

    def _subtree_control(self, d: Path, data: str) -> None:
        offered = (d / "cgroup.controllers").read_text().split()
        enabled = (d / "cgroup.subtree_control").read_text().split()
        for token in data.split():
            if token[1:] not in offered:
                raise OSError(errno.EINVAL, "Invalid argument")
            if d != self.root and (d / "cgroup.procs").read_text().split():
                raise OSError(errno.EBUSY, "Device or resource busy")
            enabled = [c for c in enabled if c != token[1:]] + [token[1:]] * (token[0] == "+")
        (d / "cgroup.subtree_control").write_text(" ".join(enabled) + "\n")

    def _move(self, d: Path, pid: str) -> None:
        if d != self.root and (d / "cgroup.subtree_control").read_text().split():
            raise OSError(errno.EBUSY, "Device or resource busy")  # no internal processes
        for procs in self.root.rglob("cgroup.procs"):
            procs.write_text("".join(f"{p}\n" for p in procs.read_text().split() if p != pid))
        with open(d / "cgroup.procs", "a") as f:
            f.write(f"{pid}\n")
        self._events(d, populated=1)

    def _events(self, d: Path, **changes: int) -> None:
        events = {k: int(v) for k, v in (ln.split() for ln in (d / "cgroup.events").open())}
        events.update(changes)
        (d / "cgroup.events").write_text("".join(f"{k} {v}\n" for k, v in events.items()))

    def value(self, *parts: str) -> str:
        return Path(self.root, *parts).read_text().strip()


@pytest.fixture
def fake_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeV2]:
    """Point tophan.run.cgroup at a fake v2 host (root, or a user with a delegated subtree)."""

    def make(*, top: str = "", **kw: object) -> FakeV2:
        root = tmp_path / "cgroupfs"
        root.mkdir()
        fs = FakeV2(root, **kw)  # type: ignore[arg-type]
        v2_top = str(root)
        if top:  # a delegated subtree, as systemd makes it for user@UID.service
            for part in top.split("/"):
                fs.mkdir(v2_top := os.path.join(v2_top, part))
                Path(v2_top, "cgroup.subtree_control").write_text("cpu memory pids\n")
        monkeypatch.setattr(cgroup, "_HOST", cgroup.Host("unified", v2_top=v2_top, fs=fs))
        return fs

    return make


FULL = Limits(
    memory=64 * MiB,
    cpus=0.2,
    cpu_shares=1024,
    cpuset_cpus="0",
    cpuset_mems="0",
    pids=64,
    io_weight=500,
    io_max=[IoMax("/dev/vda", 254, 0, rbps=MiB, wiops=100)],
)


def test_fake_v2_create_writes_the_v2_files(fake_v2: Callable[..., FakeV2]) -> None:
    fs = fake_v2()
    assert cgroup.mode() == "unified"
    assert cgroup.unavailable(FULL) is None
    cg = Cgroup.create("web", FULL)
    top = fs.root / "tophan"
    assert cg.paths() == [str(top / "web")]
    # Controllers enabled in our own parent only; the root's files are read, never written.
    assert fs.value("tophan", "cgroup.subtree_control").split() == list(cgroup.V2_CONTROLLERS)
    assert fs.value("cgroup.subtree_control") == "cpuset cpu io memory pids"
    assert all(path.startswith(f"{top}/") for path, _ in fs.writes)
    assert {k: fs.value("tophan", "web", k) for k in _V2_SETTINGS} == {
        "memory.max": str(64 * MiB),
        "memory.swap.max": str(64 * MiB),  # docker: --memory alone allows as much swap again
        "cpu.max": "20000 100000",
        "cpu.weight": "100",  # docker's default shares stay the default weight
        "cpuset.cpus": "0",
        "cpuset.mems": "0",
        "pids.max": "64",
        "io.weight": "default 4950",
        "io.max": f"254:0 rbps={MiB} wiops=100",
    }
    # cpuset before anything else, memory.max before memory.swap.max.
    names = [os.path.basename(p) for p, _ in fs.writes]
    assert names.index("cpuset.cpus") < names.index("memory.max") < names.index("memory.swap.max")


_V2_SETTINGS = (
    "memory.max",
    "memory.swap.max",
    "cpu.max",
    "cpu.weight",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "io.weight",
    "io.max",
)


@pytest.mark.parametrize(
    ("swap", "expected"),
    [(None, str(64 * MiB)), (-1, "max"), (64 * MiB, "0"), (96 * MiB, "33554432")],
)
def test_fake_v2_swap_is_docker_total_minus_memory(
    fake_v2: Callable[..., FakeV2], swap: int | None, expected: str
) -> None:
    fs = fake_v2()
    Cgroup.create("s", Limits(memory=64 * MiB, memory_swap=swap))
    assert fs.value("tophan", "s", "memory.swap.max") == expected


def test_fake_v2_bfq_weight_takes_docker_value(fake_v2: Callable[..., FakeV2]) -> None:
    fs = fake_v2()
    Cgroup.create("first", Limits())  # makes the parent
    _V2_FILES["io"]["io.bfq.weight"] = "default 100\n"
    try:
        Cgroup.create("bfq", Limits(io_weight=500))
    finally:
        del _V2_FILES["io"]["io.bfq.weight"]
    assert fs.value("tophan", "bfq", "io.bfq.weight") == "500"
    assert fs.value("tophan", "bfq", "io.weight") == "default 100"


def test_fake_v2_lifecycle(fake_v2: Callable[..., FakeV2]) -> None:
    fs = fake_v2()
    cg = Cgroup.create("app", Limits(memory=64 * MiB))
    with pytest.raises(Exists, match="already exists"):
        Cgroup.create("app", Limits())
    cg.add(4242)  # fake pids: the fake kernel never signals anything
    cg.add(4343)
    assert fs.value("tophan", "cgroup.procs") == ""  # nothing ever runs in our parent
    assert Cgroup.open("app").procs() == [4242, 4343]
    assert cg.stats() == {
        "memory_current": 4096,
        "memory_peak": 8192,
        "pids_current": 2,
        "cpu_usage_usec": 1500,
        "oom_kills": 1,
    }
    cg.freeze()
    assert fs.value("tophan", "app", "cgroup.freeze") == "1"
    cg.thaw()
    assert "frozen 0" in fs.value("tophan", "app", "cgroup.events")
    with pytest.raises(TophanError, match="busy"):
        cg.remove()  # processes left: EBUSY, retried briefly, then refused
    cg.kill()
    assert ("cgroup.kill", "1") in [(os.path.basename(p), d) for p, d in fs.writes]
    assert cg.procs() == []
    assert cgroup.list_ours() == ["app"]
    cg.remove()
    cg.remove()  # missing is fine
    assert cgroup.list_ours() == []
    with pytest.raises(NotFound):
        Cgroup.open("app")


def test_fake_v2_parent_goes_with_the_last_child(fake_v2: Callable[..., FakeV2]) -> None:
    fs = fake_v2()
    parent = Path(fs.root, "tophan")
    a, b = Cgroup.create("a", Limits()), Cgroup.create("b", Limits(memory=64 * MiB))
    a.remove()
    assert parent.is_dir()  # b still lives in it
    b.remove()
    assert not parent.exists()  # nothing of ours is left on the host
    Cgroup.create("c", Limits(pids=8)).remove()  # made again (controllers enabled) when needed
    assert not parent.exists()


def test_fake_v2_parent_removed_while_a_child_is_made(
    fake_v2: Callable[..., FakeV2], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process removes our (empty) parent between our making sure of it and making the
    child: the child is made all the same."""
    fs = fake_v2()
    parent = Path(fs.root, "tophan")
    real_mkdir = fs.mkdir
    raced = []

    def mkdir(path: str) -> None:
        if os.path.dirname(path) == str(parent) and not raced:
            raced.append(path)
            fs.rmdir(str(parent))  # the other process's remove() of the last child
        real_mkdir(path)

    monkeypatch.setattr(fs, "mkdir", mkdir)
    cg = Cgroup.create("late", Limits(memory=64 * MiB))
    assert raced and Path(parent, "late", "memory.max").read_text().strip() == str(64 * MiB)
    cg.remove()


def test_fake_v2_no_internal_processes(fake_v2: Callable[..., FakeV2]) -> None:
    fs = fake_v2()
    Path(fs.root, "tophan").mkdir()  # a parent someone put a process in
    for name, text in {"cgroup.controllers": "cpu memory pids", "cgroup.procs": "99"}.items():
        Path(fs.root, "tophan", name).write_text(text)
    Path(fs.root, "tophan", "cgroup.subtree_control").write_text("")
    with pytest.raises(TophanError, match="only in leaves"):
        Cgroup.create("x", Limits(memory=64 * MiB))


def test_fake_v2_missing_controller_or_feature(fake_v2: Callable[..., FakeV2]) -> None:
    fake_v2(enabled="memory pids", without=("memory.swap.max",))
    reason = cgroup.unavailable(Limits(cpus=1, io_weight=100))
    assert reason is not None
    assert "cpu io not enabled" in reason
    assert "--no-limits" in reason
    assert "\n" not in reason
    with pytest.raises(TophanError, match=re.escape("controller(s) cpu not enabled")):
        Cgroup.create("x", Limits(cpus=1))
    Cgroup.create("ok", Limits(memory=64 * MiB))  # swap left alone: no file to write
    # Once our parent exists its own files tell: no swap accounting means no --memory-swap.
    reason = cgroup.unavailable(Limits(memory=64 * MiB, memory_swap=128 * MiB))
    assert reason is not None and "memory.swap.max" in reason
    assert cgroup.unavailable(Limits(memory=64 * MiB, memory_swap=-1)) is None


def test_fake_v2_kernel_refusal_is_one_line(fake_v2: Callable[..., FakeV2]) -> None:
    fs = fake_v2(without=("cpu.weight",))
    with pytest.raises(TophanError) as e:
        Cgroup.create("x", Limits(cpu_shares=512))
    assert "no cpu.weight" in str(e.value)
    assert "--no-limits" in str(e.value)
    assert not Path(fs.root, "tophan", "x").exists()  # a failed create leaves nothing


def test_fake_v2_rootless_uses_the_delegated_subtree(fake_v2: Callable[..., FakeV2]) -> None:
    top = "user.slice/user-1000.slice/user@1000.service"
    fs = fake_v2(top=top, read_only=("",))
    cg = Cgroup.create("mine", Limits(memory=64 * MiB, pids=10))
    assert cg.paths() == [str(fs.root / top / "tophan" / "mine")]
    assert fs.value(top, "tophan", "cgroup.subtree_control") == "cpu memory pids"
    assert fs.value(top, "cgroup.subtree_control") == "cpu memory pids"  # systemd's, untouched
    reason = cgroup.unavailable(Limits(cpuset_cpus="0"))
    assert reason is not None and "cpuset not enabled" in reason


def test_fake_v2_rootless_without_delegation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cgroup, "_HOST", cgroup.Host("unified", v2_top=None))
    reason = cgroup.unavailable(Limits())
    assert reason is not None and "user@UID.service" in reason and "--no-limits" in reason
    with pytest.raises(TophanError, match="no cgroup this user may manage"):
        Cgroup.create("x", Limits())


def test_v1_refuses_swap_limit_without_swap_accounting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A v1 memory hierarchy without memory.memsw.*: swapaccount=0 (only files are looked at).
    mem = tmp_path / "memory"
    mem.mkdir()
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    monkeypatch.setattr(cgroup, "_HOST", cgroup.Host("hybrid", v1={"memory": str(mem)}))
    reason = cgroup.unavailable(Limits(memory=64 * MiB, memory_swap=128 * MiB))
    assert reason is not None and "swap accounting is off" in reason and "--no-limits" in reason
    assert cgroup.unavailable(Limits(memory=64 * MiB)) is None  # docker's 2x default: skipped
    reason = cgroup.unavailable(Limits(pids=5))
    assert reason is not None and "pids not mounted" in reason


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_warm_up_moves_writes_its_thread_where_it_already_is(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The thread writes its own id into its own cgroup's tasks (v1) or cgroup.threads (v2);
    # here the hierarchy is a plain directory standing in for the mount.
    controller, name = ("pids", "tasks") if version == "v1" else ("", "cgroup.threads")
    own = [
        path
        for _, controllers, path in (
            line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()
        )
        if controller in controllers.split(",")
    ]
    if not own:
        pytest.skip(f"this process is in no {version} {controller or 'unified'} hierarchy")
    target = tmp_path / own[0].strip("/") / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("")
    if version == "v1":
        host = cgroup.Host("legacy", v1={"pids": str(tmp_path)})
    else:
        host = cgroup.Host("unified", v2_top=str(tmp_path), v2_mount=str(tmp_path))
    monkeypatch.setattr(cgroup, "_HOST", host)
    cgroup.warm_up_moves()
    deadline = time.monotonic() + 10
    while not target.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    tid = int(target.read_text())
    assert tid != os.getpid()  # the thread's own id: no other thread of ours is moved


def test_names_are_checked() -> None:
    for bad in ("", "../x", "a/b", ".hidden", "x" * 129, "spaced name"):
        with pytest.raises(UsageError, match="invalid cgroup name"):
            Cgroup.open(bad)


# -- real cgroups ------------------------------------------------------------------------------


def _real_reason() -> str | None:
    if os.geteuid() != 0:
        return "real cgroup tests need root"
    return cgroup.unavailable(Limits(memory=64 * MiB, cpus=1, pids=10, cpuset_cpus="0"))


real = pytest.mark.skipif(_real_reason() is not None, reason=str(_real_reason()))
v1_only = pytest.mark.skipif(cgroup.mode() == "unified", reason="checks cgroup v1 files")
v2_only = pytest.mark.skipif(cgroup.mode() != "unified", reason="this host is not cgroup v2")


class Lab:
    """Cgroups and processes of one test; ``close`` kills and removes all of them."""

    def __init__(self) -> None:
        self.cgroups: list[Cgroup] = []
        self.procs: list[subprocess.Popen[str]] = []

    def cgroup(self, limits: Limits | None = None) -> Cgroup:
        cg = Cgroup.create(f"tophan-test-{uuid.uuid4().hex[:12]}", limits or Limits())
        self.cgroups.append(cg)
        return cg

    def python(self, cg: Cgroup, code: str) -> subprocess.Popen[str]:
        """A Python child that joins ``cg`` between fork and exec, as the runtime's does."""
        p = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            preexec_fn=cg.join,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        return p

    def close(self) -> None:
        errors = []
        for cg in self.cgroups:
            try:
                cg.kill()
                cg.remove()
            except TophanError as e:
                errors.append(str(e))
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
        assert not errors, errors


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


BUSY = "while True: pass"
READY = "import sys; print('ready', flush=True)\n"


def _usage(cg: Cgroup) -> int:
    return cg.stats()["cpu_usage_usec"]


@real
def test_memory_limit_oom_kills(lab: Lab) -> None:
    cg = lab.cgroup(Limits(memory=32 * MiB, memory_swap=32 * MiB))  # no swap to escape into
    p = lab.python(
        cg,
        """
        chunks = []
        for _ in range(256):  # 256 MiB, each page written
            chunks.append(bytearray(b"x" * (1 << 20)))
        print("survived")
        """,
    )
    out, _ = p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert "survived" not in out
    assert cg.oom_kills() >= 1
    assert cg.stats()["memory_peak"] <= 33 * MiB


@real
def test_pids_limit_stops_a_fork_loop(lab: Lab) -> None:
    cg = lab.cgroup(Limits(pids=64))
    p = lab.python(
        cg,
        """
        import os, signal
        kids, failed = [], 0
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError:
                failed += 1
                continue
            if pid == 0:
                signal.pause()
                os._exit(0)
            kids.append(pid)
        print(len(kids), failed, flush=True)
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        """,
    )
    out, _ = p.communicate(timeout=30)
    forked, failed = map(int, out.split())
    assert 40 <= forked <= 63  # the parent is one of the 64
    assert forked + failed == 200
    assert p.returncode == 0


@real
def test_cpu_quota_holds_a_busy_loop_near_its_share(lab: Lab) -> None:
    cg = lab.cgroup(Limits(cpus=0.2))
    p = lab.python(cg, READY + BUSY)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    time.sleep(0.2)
    u0, t0 = _usage(cg), time.monotonic()
    time.sleep(2.0)
    share = (_usage(cg) - u0) / 1e6 / (time.monotonic() - t0)
    assert 0.1 < share < 0.35, share  # a wide band: the kernel enforces 20%, not our timing


@real
def test_freeze_and_thaw(lab: Lab) -> None:
    cg = lab.cgroup()
    p = lab.python(cg, READY + BUSY)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    cg.freeze()
    u0 = _usage(cg)
    time.sleep(0.3)
    assert _usage(cg) - u0 < 20_000  # frozen: (next to) no CPU time
    cg.thaw()
    u1, deadline = _usage(cg), time.monotonic() + 5
    while _usage(cg) - u1 < 50_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _usage(cg) - u1 >= 50_000  # running again (polled: the host may be busy)
    assert p.poll() is None


@real
def test_parent_goes_with_the_last_child(lab: Lab) -> None:
    parents = cgroup._host().parents()
    if any(cgroup._host().fs.subdirs(p) for p in parents):
        pytest.skip("other cgroups of ours live on this host: our parent stays for them")
    cg = lab.cgroup(Limits(memory=64 * MiB, pids=10))
    made = {os.path.dirname(d) for d in cg.paths()}
    assert made and all(os.path.isdir(d) for d in made)
    cg.remove()
    assert not any(os.path.exists(d) for d in made)


@real
def test_kill_empties_it_and_remove_leaves_nothing(lab: Lab) -> None:
    cg = lab.cgroup(Limits(pids=100))
    p = lab.python(
        cg,
        """
        import os, signal
        for _ in range(5):
            if os.fork() == 0:
                os.fork()  # grandchildren too
                signal.pause()
        print("ready", flush=True)
        signal.pause()
        """,
    )
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 5
    while len(cg.procs()) < 11 and time.monotonic() < deadline:
        time.sleep(0.01)  # the grandchildren are forked while the parent says "ready"
    assert len(cg.procs()) == 11
    assert p.pid in cg.procs()
    cg.kill(timeout=5)
    assert cg.procs() == []
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert cg.name in cgroup.list_ours()
    cg.remove()
    assert not any(os.path.exists(d) for d in cg.paths())
    assert cg.name not in cgroup.list_ours()
    cg.remove()  # again: missing is fine
    with pytest.raises(NotFound):
        Cgroup.open(cg.name)


@real
def test_create_refuses_duplicates_and_open_finds_it(lab: Lab) -> None:
    cg = lab.cgroup(Limits(pids=10))
    with pytest.raises(Exists, match="already exists"):
        Cgroup.create(cg.name, Limits())
    assert all(os.path.isdir(d) for d in cg.paths())  # the refusal removed nothing
    opened = Cgroup.open(cg.name)
    assert opened.paths() == cg.paths()
    assert opened.procs() == []


@real
def test_cpuset_pins_the_process(lab: Lab) -> None:
    cg = lab.cgroup(Limits(cpuset_cpus="0", cpuset_mems="0"))
    p = lab.python(cg, READY + "import time; time.sleep(60)")
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    assert os.sched_getaffinity(p.pid) == {0}
    assert cg.stats()["pids_current"] == 1


@real
def test_kernel_refuses_a_cpuset_the_host_lacks() -> None:
    name = f"tophan-test-{uuid.uuid4().hex[:12]}"
    with pytest.raises(TophanError, match=re.escape("cpuset.cpus")) as e:
        Cgroup.create(name, Limits(cpuset_cpus="4095"))
    assert "\n" not in str(e.value)
    assert name not in cgroup.list_ours()  # nothing left behind


@real
def test_warm_up_moves_moves_nothing() -> None:
    # Its thread moves itself into the cgroup it already is in: the process and every thread
    # of it stay where they were, and the thread ends by itself.
    def where() -> dict[str, str]:
        tasks = os.listdir("/proc/self/task")
        return {t: Path(f"/proc/self/task/{t}/cgroup").read_text() for t in tasks}

    before = where()
    cgroup.warm_up_moves()
    deadline = time.monotonic() + 10
    while len(os.listdir("/proc/self/task")) > len(before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert where() == before


@real
def test_unprivileged_user_is_refused_with_a_hint() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            cgroup._HOST = None  # detect again, as this user
            os.write(w, str(cgroup.unavailable(Limits(memory=64 * MiB))).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        reason = f.read()
    os.waitpid(pid, 0)
    assert "--no-limits" in reason
    assert "\n" not in reason


@real
@v1_only
def test_v1_files(lab: Lab) -> None:
    limits = Limits(memory=64 * MiB, cpus=0.5, cpu_shares=512, pids=20)
    cg = lab.cgroup(limits)
    host = cgroup._host()
    d = {c: os.path.join(mp, "tophan", cg.name) for c, mp in host.v1.items()}

    def read(ctrl: str, name: str) -> str:
        with open(os.path.join(d[ctrl], name)) as f:
            return f.read().strip()

    assert read("memory", "memory.limit_in_bytes") == str(64 * MiB)
    if os.path.exists(os.path.join(d["memory"], "memory.memsw.limit_in_bytes")):
        assert read("memory", "memory.memsw.limit_in_bytes") == str(128 * MiB)
    assert read("cpu", "cpu.cfs_quota_us") == "50000"
    assert read("cpu", "cpu.cfs_period_us") == "100000"
    assert read("cpu", "cpu.shares") == "512"
    assert read("pids", "pids.max") == "20"
    # Only the hierarchies the limits use, plus pids, freezer and cpuacct: cpuset (no cpuset
    # limit here) and blkio are not joined, each join being a slow cgroup.procs write.
    joined = {"memory", "cpu", "cpuacct", "pids", "freezer"}
    want = {p for c, p in d.items() if c in joined}
    assert sorted(cg.paths()) == sorted(want)
    if "cpuset" in host.v1 and host.v1["cpuset"] not in {host.v1[c] for c in joined}:
        assert not os.path.exists(d["cpuset"])


@real
@v1_only
def test_v1_blkio_weight(lab: Lab) -> None:
    """The answer is the same on a fresh host (no parent of ours yet) and after one exists,
    and asking leaves nothing behind (a fresh host's bug: None first, refused on create)."""
    limits = Limits(io_weight=500)
    parent = os.path.join(cgroup._host().v1["blkio"], "tophan")
    if os.path.isdir(parent) and not any(e.is_dir() for e in os.scandir(parent)):
        os.rmdir(parent)  # what a fresh host looks like (an empty parent of ours)
    fresh = not os.path.isdir(parent)
    first = cgroup.unavailable(limits)
    if fresh:
        assert not os.path.exists(parent), "asking must not leave our parent behind"
    lab.cgroup()  # some cgroup of ours exists (not in blkio: it has no limit there)
    assert cgroup.unavailable(limits) == first
    if first is not None:
        assert "--blkio-weight cannot be enforced" in first
        with pytest.raises(TophanError, match="--blkio-weight cannot be enforced"):
            lab.cgroup(limits)
        if fresh:
            assert not os.path.exists(parent), "a refused create must not leave our parent"
        return
    cg = lab.cgroup(limits)
    blkio = os.path.join(parent, cg.name)
    weight = next(f for f in ("blkio.bfq.weight", "blkio.weight") if os.path.exists(f"{blkio}/{f}"))
    with open(f"{blkio}/{weight}") as f:
        assert f.read().split()[-1] == "500"


@real
@v1_only
def test_v1_device_throttle_files(lab: Lab, loop_dev: str) -> None:
    limits = parse_limits(
        {"device-read-bps": f"{loop_dev}:1m", "device-write-iops": f"{loop_dev}:50"}
    )
    cg = lab.cgroup(limits)
    io = limits.io_max[0]
    blkio = os.path.join(cgroup._host().v1["blkio"], "tophan", cg.name)
    with open(os.path.join(blkio, "blkio.throttle.read_bps_device")) as f:
        assert f.read().split() == [f"{io.major}:{io.minor}", str(MiB)]
    with open(os.path.join(blkio, "blkio.throttle.write_iops_device")) as f:
        assert f.read().split() == [f"{io.major}:{io.minor}", "50"]


@real
def test_device_read_bps_throttles_direct_reads(lab: Lab, loop_dev: str) -> None:
    limits = parse_limits({"device-read-bps": f"{loop_dev}:4m"})
    if cgroup.unavailable(limits) is not None:
        pytest.skip(str(cgroup.unavailable(limits)))
    cg = lab.cgroup(limits)
    p = lab.python(
        cg,
        f"""
        import mmap, os, time
        fd = os.open({loop_dev!r}, os.O_RDONLY | os.O_DIRECT)  # past the page cache
        buf = mmap.mmap(-1, 1 << 20)
        start = time.monotonic()
        for _ in range(4):
            os.readv(fd, [buf])
        print(time.monotonic() - start)
        """,
    )
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0
    assert float(out) > 0.5  # 4 MiB at 4 MiB/s: about a second; unthrottled, milliseconds


@real
@v2_only
def test_v2_files(lab: Lab) -> None:
    cg = lab.cgroup(Limits(memory=64 * MiB, memory_swap=96 * MiB, cpus=0.5, pids=20))
    (d,) = cg.paths()
    parent = os.path.dirname(d)

    def read(path: str) -> str:
        with open(path) as f:
            return f.read().strip()

    assert set(read(f"{parent}/cgroup.subtree_control").split()) >= {"cpu", "memory", "pids"}
    assert read(f"{parent}/cgroup.procs") == ""  # no internal processes
    assert read(f"{d}/memory.max") == str(64 * MiB)
    if os.path.exists(f"{d}/memory.swap.max"):
        assert read(f"{d}/memory.swap.max") == str(32 * MiB)
    assert read(f"{d}/cpu.max") == "50000 100000"
    assert read(f"{d}/pids.max") == "20"
    assert os.path.exists(f"{d}/cgroup.kill")  # kill() uses it (Linux >= 5.14)


@real
@v2_only
def test_v2_cpu_weight(lab: Lab) -> None:
    cg = lab.cgroup(Limits(cpu_shares=2048))
    (d,) = cg.paths()
    with open(f"{d}/cpu.weight") as f:
        assert f.read().strip() == str(cgroup.shares_to_weight(2048))


@real
@v2_only
def test_v2_io_max(lab: Lab, loop_dev: str) -> None:
    limits = parse_limits({"device-read-bps": f"{loop_dev}:1m"})
    if cgroup.unavailable(limits):
        pytest.skip(str(cgroup.unavailable(limits)))
    cg = lab.cgroup(limits)
    (d,) = cg.paths()
    with open(f"{d}/io.max") as f:
        assert f"rbps={MiB}" in f.read()
