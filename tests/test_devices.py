"""The device cgroup (issue 8 #4): a container that gains CAP_SYS_ADMIN and CAP_MKNOD makes a
node for a host disk in a tmpfs of its own (not nodev) and must still not read it.

Real kernel throughout: a loop device over a root-only file holds the secret; v1 hosts (this
one) enforce through the v1 devices controller, v2 hosts (the VM, `make test-v2`) through the
BPF program, which is also tested directly on this host's cgroup2 mount.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, busybox_full_rootfs, loop_device, run_cli
from tophan.run import devices

SECRET = b"TOPSECRET-" + uuid.uuid4().hex[:8].encode()
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def secret_disk(tmp_path: Path) -> Iterator[str]:
    """A loop device over a root-only file that starts with SECRET."""
    backing = tmp_path / "secret.img"
    with open(backing, "wb") as f:
        f.write(SECRET)
        f.truncate(1 << 20)
    os.chmod(backing, 0o600)
    with loop_device(backing) as dev:
        yield dev


@pytest.fixture
def base(root: Path, tmp_path: Path) -> Path:
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    assert run_cli("--root", str(root), "layer", "create", "base", "--from", str(rootfs)).rc == 0
    return root


def _attack(root: Path, dev: str, *flags: str) -> subprocess.CompletedProcess[bytes]:
    rdev = os.stat(dev).st_rdev
    script = (
        "mkdir -p /mnt && mount -t tmpfs t /mnt || exit 3; "
        f"mknod /mnt/disk b {os.major(rdev)} {os.minor(rdev)} || exit 4; "
        "head -c 64 /mnt/disk; echo; echo x > /dev/null && echo null-ok"
    )
    argv = [str(BIN / "tophan"), "--root", str(root), "run", *flags, "-l", "base"]
    return subprocess.run([*argv, "--", "sh", "-c", script], capture_output=True, timeout=120)


def test_host_disk_node_cannot_be_opened_even_with_sys_admin(base: Path, secret_disk: str) -> None:
    r = _attack(base, secret_disk, "--cap-add", "SYS_ADMIN", "--cap-add", "MKNOD")
    assert SECRET not in r.stdout, "the container read the host's disk"
    assert b"Operation not permitted" in r.stderr, r.stderr
    assert b"null-ok" in r.stdout, (r.stdout, r.stderr)  # the allowed nodes still work


def test_privileged_may_open_every_device(base: Path, secret_disk: str) -> None:
    # The same attack with --privileged (docker's meaning: all devices) reads the secret,
    # which shows the test above fails without the device cgroup.
    r = _attack(base, secret_disk, "--privileged")
    assert SECRET in r.stdout, (r.stdout, r.stderr)


def _cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return left.split()[4]
    return None


def test_bpf_program_allows_exactly_its_rules(secret_disk: str) -> None:
    """The v2 program itself, attached to a cgroup2 dir of our own on this host."""
    top = _cgroup2_mount()
    if top is None:
        pytest.skip("no cgroup2 mount")
    d = os.path.join(top, f"tophan-test-dev-{uuid.uuid4().hex[:10]}")
    os.mkdir(d)
    try:
        rules = [*devices.DEFAULT_RULES, devices.Rule("b", 7, devices.ANY, "r")]  # loop, read
        devices.attach(d, rules)
        code = (
            "import os, sys\n"
            "for p, flags in [('/dev/null', os.O_WRONLY), ('/dev/zero', os.O_RDONLY),\n"
            "                 (sys.argv[1], os.O_RDONLY), (sys.argv[1], os.O_WRONLY),\n"
            "                 ('/dev/kmsg', os.O_RDONLY)]:\n"
            "    try:\n"
            "        os.close(os.open(p, flags)); print('ok')\n"
            "    except OSError as e:\n"
            "        print(e.errno)\n"
        )
        loop_major = os.major(os.stat(secret_disk).st_rdev)

        def join() -> None:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        r = subprocess.run(
            [sys.executable, "-c", code, secret_disk],
            preexec_fn=join,
            capture_output=True,
            text=True,
            check=True,
        )
        expect_loop = "ok" if loop_major == 7 else "1"
        assert r.stdout.split() == ["ok", "ok", expect_loop, "1", "1"], r.stdout
    finally:
        os.rmdir(d)


def test_v1_lines_deny_everything_first() -> None:
    lines = devices.v1_lines(devices.DEFAULT_RULES)
    assert lines[0] == ("devices.deny", "a")
    assert ("devices.allow", "c 1:3 rwm") in lines
    assert ("devices.allow", "c 136:* rwm") in lines
    assert ("devices.allow", "b *:* m") in lines
    assert all(f == "devices.allow" for f, _ in lines[1:])
