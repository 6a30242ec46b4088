"""`tophan run` and apps as a real unprivileged user: no `unshare` wrapper, tophan makes the user
namespace itself (one id mapped, or the user's subordinate range when it has one)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import busybox_full_rootfs
from rootless import RootlessUser, run_as_user

pytestmark = pytest.mark.rootless


def _tophan(user: RootlessUser, cwd: Path, *args: str) -> tuple[int, str, str]:
    r = run_as_user(user, ["tophan", "--root", str(cwd / "store"), *args], unshare=False, cwd=cwd)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def user_stack(rootless_user: RootlessUser, rootless_dir: Path) -> Path:
    rootfs = busybox_full_rootfs(rootless_dir / "rootfs-src")
    import os
    import shutil

    for dirpath, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), rootless_user.uid, rootless_user.gid)
    os.chown(rootfs, rootless_user.uid, rootless_user.gid)
    assert shutil.which("tar")
    rc, _, err = _tophan(rootless_user, rootless_dir, "init")
    assert rc == 0, err
    rc, _, err = _tophan(
        rootless_user, rootless_dir, "layer", "create", "base", "--from", str(rootfs)
    )
    assert rc == 0, err
    return rootless_dir


def test_rootless_run(rootless_user: RootlessUser, user_stack: Path) -> None:
    rc, out, err = _tophan(
        rootless_user, user_stack, "run", "--hostname", "rl", "-l", "base", "--", "sh", "-c",
        "id -u; hostname; cat /proc/self/uid_map; ls /proc | grep -c '^[0-9]'; "
        "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; echo hi > /bin/new; exit 3",
    )  # fmt: skip
    assert rc == 3, err
    lines = out.splitlines()
    assert lines[0] == "0" and lines[1] == "rl"  # root in its own namespace
    inside, outside, _count = lines[2].split()
    assert (inside, outside) == ("0", str(rootless_user.uid))
    assert int(lines[3]) < 10  # its own pid namespace
    assert lines[4].split() == ["NoNewPrivs:", "1"] and lines[5].split() == ["Seccomp:", "2"]
    tree = _tophan(rootless_user, user_stack, "layer", "path", "base")[1].strip()
    assert not Path(tree, "bin/new").exists()
    assert list((user_stack / "store/tmp").iterdir()) == []


def test_rootless_init(rootless_user: RootlessUser, user_stack: Path) -> None:
    rc, out, err = _tophan(
        rootless_user, user_stack, "run", "--init", "-l", "base", "--", "sh", "-c",
        "echo $$; cat /proc/1/comm; id -u; exit 4",
    )  # fmt: skip
    assert rc == 4, err
    assert out.splitlines() == ["2", "tophan-init", "0"]


def test_rootless_limits_refused_without_a_delegated_cgroup(
    rootless_user: RootlessUser, user_stack: Path
) -> None:
    from tophan.run import cgroup

    rc, out, err = _tophan(
        rootless_user, user_stack, "run", "-m", "64m", "-l", "base", "--", "true"
    )
    if rc == 0:
        pytest.skip("this host delegates a cgroup to the user: limits work rootless here")
    assert rc == 125 and err.count("\n") == 1 and "--no-limits" in err, err
    assert cgroup.mode() in ("hybrid", "legacy", "unified")
    rc, out, err = _tophan(
        rootless_user,
        user_stack,
        "run",
        "--no-limits",
        "-m",
        "64m",
        "-l",
        "base",
        "--",
        "echo",
        "ok",
    )
    assert (rc, out) == (0, "ok\n"), err


def test_rootless_app(rootless_user: RootlessUser, user_stack: Path) -> None:
    def t(*args: str) -> tuple[int, str, str]:
        return _tophan(rootless_user, user_stack, *args)

    # (no private network: this machine's /dev/net/tun is closed to pasta; tests/test_net.py
    # runs rootless apps on one)
    rc, _, err = t("app", "create", "rweb", "--network", "none", "--health-tcp", "127.0.0.1:8080",
                   "--health-interval", "0.2s", "-l", "base", "--",
                   "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/etc")  # fmt: skip
    assert rc == 0, err
    rc, _, err = t("app", "start", "rweb")
    assert rc == 0, err
    try:
        deadline = time.monotonic() + 30
        while True:
            ps = json.loads(t("app", "ps", "--json")[1])
            if ps and ps[0]["health"] == "healthy":
                break
            assert time.monotonic() < deadline, ps
            time.sleep(0.1)
        rc, out, err = t(
            "app", "exec", "rweb", "--", "wget", "-qO-", "http://127.0.0.1:8080/passwd"
        )
        assert rc == 0 and out.startswith("root:"), err
    finally:
        rc, _, err = t("app", "rm", "-f", "rweb")
    assert rc == 0, err
    assert t("app", "ps", "-a")[1].count("\n") == 1
