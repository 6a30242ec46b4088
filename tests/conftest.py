"""Shared fixtures: a fresh store per test, a CLI runner, and safety nets for mounts and cgroups.

Everything a test creates lives under its own ``tmp_path``; the ``_no_leaked_mounts`` finalizer
unmounts anything still mounted below it, so a failing test cannot break the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["rootless"]

BIN = Path(sys.executable).parent


@dataclass
class Result:
    rc: int
    out: str
    err: str
    outb: bytes


def run_cli(
    *args: str,
    prog: str = "tophan",
    root: Path | None = None,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    argv = [str(BIN / prog)]
    if root is not None:
        argv += ["--root", str(root)]
    argv += list(args)
    p = subprocess.run(argv, input=input, capture_output=True, cwd=cwd, env=env, timeout=600)
    return Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(), p.stdout)


def _mounts_under(prefix: str) -> list[str]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return out


def _our_cgroup_parents() -> list[str]:
    """The `tophan` parent cgroup in each hierarchy where it exists (cgroups of ours live in it)."""
    out = []
    for top in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        out += [os.path.join(e.path, "tophan") for e in entries if e.is_dir()]
        out.append(os.path.join(top, "tophan"))
    return sorted(p for p in set(out) if os.path.isdir(p))


def _our_interfaces() -> set[str]:
    with open("/proc/thread-self/net/dev") as f:
        names = {line.split(":", 1)[0].strip() for line in f.readlines()[2:]}
    return {n for n in names if n == "tophan0" or n.startswith(("tph-", "tv"))}


@pytest.fixture(autouse=True)
def _machine_network_untouched() -> Iterator[None]:
    """No test makes a bridge or veth of ours in the machine's own network namespace: those
    belong in a namespace the test makes as "the host" (or `own_netns`). Apps are on a private
    network by default, so an app test without one would."""
    before = _our_interfaces()
    yield
    made = _our_interfaces() - before
    assert not made, f"the test made {sorted(made)} in the machine's network namespace"


@pytest.fixture(autouse=True, scope="session")
def _no_leaked_cgroups() -> Iterator[None]:
    """Whatever the tests make under our parent cgroup goes, and so the parent itself (if the
    session found none: an app of the machine's own may keep one).

    The session starts as on a fresh host: an empty parent an earlier run left is removed, so
    no test passes only because of what an earlier run made (CI runs on fresh machines)."""
    for parent in _our_cgroup_parents():
        if not any(e.is_dir() for e in os.scandir(parent)):
            os.rmdir(parent)
    before = _our_cgroup_parents()
    yield
    if not before:
        left = _our_cgroup_parents()
        assert not left, f"cgroups left behind by the tests: {left}"


@pytest.fixture(autouse=True)
def _no_leaked_mounts(tmp_path: Path) -> Iterator[None]:
    yield
    for mp in reversed(_mounts_under(str(tmp_path))):
        subprocess.run(["umount", "-l", mp], check=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An initialised, empty store."""
    r = tmp_path / "store"
    assert run_cli("init", str(r)).rc == 0
    return r


@pytest.fixture
def cli(root: Path):  # type: ignore[no-untyped-def]
    def call(*args: str, **kw) -> Result:  # type: ignore[no-untyped-def]
        return run_cli(*args, root=root, **kw)

    return call


def busybox_rootfs(dest: Path) -> Path:
    """A tiny real rootfs: busybox-static with a few applet links, /etc, /tmp."""
    for d in ("bin", "etc", "tmp", "var/www", "usr/share/doc/base", "home/user"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "bin/busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (dest / "bin/busybox").chmod(0o755)
    for applet in ("sh", "ls", "cat", "echo", "true", "httpd", "wget", "sleep", "id"):
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
    )
    (dest / "etc/group").write_text("root:x:0:\nuser:x:1000:\n")
    (dest / "etc/hostname").write_text("base\n")
    (dest / "usr/share/doc/base/README").write_text("base layer docs\n")
    (dest / "tmp").chmod(0o1777)
    os.chown(dest / "home/user", 1000, 1000)
    return dest


def busybox_full_rootfs(dest: Path) -> Path:
    """busybox_rootfs with every applet busybox has (ps, ip, unshare, mount, wget...)."""
    busybox_rootfs(dest)
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if not link.exists() and not link.is_symlink() and "/" not in applet:
            link.symlink_to("busybox")
    return dest


@pytest.fixture
def busybox_tar(tmp_path: Path) -> Path:
    src = busybox_rootfs(tmp_path / "rootfs-src")
    out = tmp_path / "base.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return out


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[str]:
    """A loop device over the file ``backing`` (skips where none can be had), detached after."""
    if not os.path.exists("/dev/loop-control"):
        # The v2 VM boots with few modules; only then is the loop driver loaded (busybox's
        # modprobe where kmod is missing).
        modprobe = ["modprobe"] if shutil.which("modprobe") else ["busybox", "modprobe"]
        subprocess.run([*modprobe, "loop"], capture_output=True, check=False)
    argv = ["losetup", "--find", "--show", str(backing)]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"no loop device: {p.stderr.strip()}")
    dev = p.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


@pytest.fixture
def own_netns() -> Iterator[None]:
    """This test (and all it starts) in a fresh network namespace with only ``lo``, up.

    Apps are on a private network by default: as root that makes a bridge, veths and nftables
    rules, which tests must never make in the machine's own namespace. The test process enters
    a new one for the test and goes back afterwards; the namespace (and all of ours in it)
    vanishes with the last process in it."""
    if os.geteuid() != 0:
        yield  # a rootless private network is pasta's, which touches no host configuration
        return
    from tophan._internal import libc

    # Namespaces belong to the thread: only the test's own (main) thread moves, and every
    # process it starts is born in the new namespace.
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.unshare(libc.CLONE_NEWNET)
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield
        finally:
            libc.setns(home, libc.CLONE_NEWNET)
    finally:
        os.close(home)
