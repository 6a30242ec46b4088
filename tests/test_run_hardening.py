"""Hardening of what runs (issue 8), each attack made for real against the kernel.

- container defaults next to podman's (#7): podman 4's capability set, no supplementary groups
  unless /etc/group lists the user, /dev noexec, /sys/dev/block masked;
- ids (#3): (uid_t)-1 means "unchanged" to setresuid, so `-u 4294967295` kept root's uid.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import BIN, busybox_full_rootfs, run_cli
from tophan.run import security

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def store(root: Path, tmp_path: Path) -> Path:
    rootfs = busybox_full_rootfs(tmp_path / "rootfs")
    with open(rootfs / "etc/group", "a") as f:
        f.write("staff:x:50:user\nhuge:x:4294967295:user2\n")
    with open(rootfs / "etc/passwd", "a") as f:
        f.write("evil:x:4294967295:0::/:/bin/sh\nuser2:x:1002:1002::/:/bin/sh\n")
    assert run_cli("--root", str(root), "layer", "create", "base", "--from", str(rootfs)).rc == 0
    return root


def _sh(root: Path, script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "tophan"), "--root", str(root), "run", *flags, "-l", "base", "--"]
    return subprocess.run([*argv, "sh", "-c", script], capture_output=True, text=True, timeout=120)


def test_podmans_capabilities_and_cap_add_brings_them_back(store: Path) -> None:
    r = _sh(store, "grep CapEff /proc/self/status; ping -c1 -W1 127.0.0.1 >/dev/null; echo $?")
    eff, rc = r.stdout.split("\n")[0].split()[1], r.stdout.split()[-1]
    assert int(eff, 16) == 0x800405FB == security.cap_mask(security.DEFAULT_CAPS)
    assert rc != "0", "ping needs NET_RAW, which the default set no longer has"
    r = _sh(store, "grep CapEff /proc/self/status", "--cap-add", "NET_RAW", "--cap-add", "MKNOD")
    want = security.DEFAULT_CAPS | {"CAP_NET_RAW", "CAP_MKNOD"}
    assert int(r.stdout.split()[1], 16) == security.cap_mask(want)


def test_supplementary_groups_only_from_etc_group(store: Path) -> None:
    r = _sh(store, "grep ^Groups /proc/self/status")
    assert r.stdout.split() == ["Groups:"], r.stdout  # root: no group lists it
    r = _sh(store, "grep ^Groups /proc/self/status", "-u", "user")
    assert r.stdout.split() == ["Groups:", "50"], r.stdout  # staff lists user; not gid 1000


def test_dev_is_noexec_and_sys_dev_block_is_masked(store: Path) -> None:
    r = _sh(store, "cp /bin/busybox /dev/bb && /dev/bb true; echo rc=$?; ls /sys/dev/block | wc -l")
    lines = r.stdout.split()
    assert lines[0] == "rc=126", (r.stdout, r.stderr)  # cannot execute
    assert "Permission denied" in r.stderr, r.stderr
    assert lines[1] == "0", "the host's block devices are listed in /sys/dev/block"


@pytest.mark.parametrize(
    "user", ["4294967295", "4294967295:4294967295", "-1", "0:-1", "0:2147483648", "2147483648"]
)
def test_out_of_range_ids_are_refused(store: Path, user: str) -> None:
    r = _sh(store, "id -u", "-u", user)
    assert r.returncode != 0 and r.stdout == "", (r.stdout, r.stderr)
    assert "ids are 0 to 2147483647" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_out_of_range_ids_in_the_images_etc_files_are_refused(store: Path) -> None:
    for user, what in (("evil", "user id"), ("user2", "group id")):
        r = _sh(store, "id -u", "-u", user)
        assert r.returncode == 125 and r.stdout == "", (r.stdout, r.stderr)
        assert f"invalid {what} 4294967295" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_largest_id_runs_as_that_id(store: Path) -> None:
    r = _sh(store, "id -u; id -g", "-u", "2147483647:2147483647")
    assert r.stdout.split() == ["2147483647", "2147483647"], (r.stdout, r.stderr)


@pytest.mark.parametrize("network", ["none", "host"])
def test_container_sees_its_own_cgroup_read_only(store: Path, network: str) -> None:
    """#8: runtimes that size themselves from cgroup files see the limits; nothing of the
    host's tree (other containers, the machine's own cgroups) shows, and nothing is writable.
    --network host binds the host's /sys, which brings the host's cgroup mounts along."""
    from tophan.run import cgroup

    v2 = cgroup._host().mode == "unified"
    mem, pids = (
        ("memory.max", "pids.max") if v2 else ("memory/memory.limit_in_bytes", "pids/pids.max")
    )
    script = (
        f"cat /sys/fs/cgroup/{mem} /sys/fs/cgroup/{pids};"
        " find /sys/fs/cgroup -mindepth 2 -type d | wc -l;"
        " find /sys/fs/cgroup -name 'tophan*' -o -name '*process_api*' | wc -l;"
        f" echo 1 > /sys/fs/cgroup/{pids} && echo WROTE"
    )
    r = _sh(store, script, "--network", network, "-m", "64m", "--pids-limit", "50")
    out = r.stdout.split()
    assert out[:2] == ["67108864", "50"], (r.stdout, r.stderr)
    assert out[2] == "0", "cgroups below the container's own are listed"
    assert out[3] == "0", "the host's cgroup tree shows"
    assert "WROTE" not in r.stdout and "Read-only file system" in r.stderr, r.stderr


@pytest.fixture
def traceme(store: Path, tmp_path: Path) -> Path:
    """A layer `tr` over base holding /traceme (tests/data/traceme.c, built static here)."""
    layer = tmp_path / "tr"
    layer.mkdir()
    src = Path(__file__).parent / "data/traceme.c"
    cc = subprocess.run(["cc", "-static", "-O2", "-o", str(layer / "traceme"), str(src)])
    assert cc.returncode == 0, "a C compiler with static libc (gcc, libc6-dev) is needed"
    assert run_cli("--root", str(store), "layer", "create", "tr", "--from", str(layer)).rc == 0
    return store


def test_ptrace_traceme_in_the_container_does_not_crash_the_caller(traceme: Path) -> None:
    """#11: pid 1 makes `tophan run` its tracer; the exec trap and a signal stop are reported
    to the caller, which detaches (passing SIGUSR1 on) instead of dying with a traceback."""
    argv = [str(BIN / "tophan"), "--root", str(traceme), "run", "-l", "tr", "-l", "base", "--"]
    script = "trap 'echo got-usr1' USR1; kill -USR1 $$; echo after; exit 7"
    r = subprocess.run(
        [*argv, "/traceme", "/bin/sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 7, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.split() == ["traced", "got-usr1", "after"], r.stdout
    assert r.stderr == "", r.stderr


def test_ptrace_traceme_in_an_app_keeps_its_restart_policy(traceme: Path, own_netns: None) -> None:
    """#11: the supervisor is the tracer of an app's init: the app exits 3, is restarted
    twice (on-failure:2), and ends `exited`, with no crash of the supervisor."""
    import json
    import time

    def t(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(BIN / "tophan"), "--root", str(traceme), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    name = f"trc{uuid.uuid4().hex[:6]}"
    cmd = ["/traceme", "/bin/sh", "-c", "kill -USR1 $$; exit 3"]
    flags = ["--restart", "on-failure:2", "-l", "tr", "-l", "base"]
    assert t("app", "create", name, *flags, "--", *cmd).returncode == 0
    try:
        assert t("app", "start", name).returncode == 0
        deadline = time.monotonic() + 30
        while True:
            state = json.loads(t("app", "inspect", name).stdout)[0]["state"]
            if not state["alive"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert state["status"] == "exited", state
        assert state["restart_count"] == 2 and state["exit_code"] == 3, state
    finally:
        t("app", "rm", "-f", name)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-v", "vol:/"], "cannot mount over /"),
        (["-v", "vol:/proc"], "cannot mount over /proc"),
        (["-v", "vol://proc/../proc/sys"], "cannot mount over /proc/sys"),
        (["--tmpfs", "/"], "cannot mount over /"),
        (["-v", "vol:/evil"], "cannot mount over /proc"),  # the image's /evil -> /proc
        (["--env-file", "/dev/stdin"], "invalid environment variable"),
        (["-u", "0:99999999999"], "invalid group id"),
    ],
)
def test_bad_input_is_one_line_before_the_command(
    store: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    """#15: each of these once printed an errno of the runtime's own (/proc/self/fd, ...) or a
    Python exception's name."""
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "evil").symlink_to("/proc")
    assert run_cli("--root", str(store), "layer", "create", "evil", "--from", str(evil)).rc == 0
    argv = [str(BIN / "tophan"), "--root", str(store), "run", *flags, "-l", "evil", "-l", "base"]
    r = subprocess.run(
        [*argv, "--", "true"], input="=x\n", capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Error" not in r.stderr and "(/proc/self" not in r.stderr, r.stderr
