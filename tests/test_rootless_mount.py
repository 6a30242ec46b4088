"""Overlay mounts by a real unprivileged user: inside `unshare -Urm` with userxattr, and refused
(with one clear line) outside it."""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

import pytest

from rootless import (
    RootlessUser,
    python_as_user,
    rootless_user_context,
    run_as_user,
    user_pids,
)

pytest_plugins = ["rootless"]  # its fixtures (conftest.py may load it too; loading is idempotent)

pytestmark = pytest.mark.rootless

# Lower dirs as the user makes them: "dir" and "dir2" exist only in the lower layers.
SETUP = """
import json, os, shutil, sys
from tophan.layer import mount
for d in ("low1/top", "low2/dir/deep", "low2/dir2", "upper", "work", "mnt"):
    os.makedirs(d)
for f in ("low1/top/t", "low2/file", "low2/dir/deep/f", "low2/dir2/g"):
    open(f, "w").write(f)
low = [os.path.abspath("low1"), os.path.abspath("low2")]
upper, work, mnt = (os.path.abspath(d) for d in ("upper", "work", "mnt"))
"""


def test_user_namespace_mount_with_userxattr(
    rootless_user: RootlessUser, rootless_dir: Path
) -> None:
    r = python_as_user(
        rootless_user,
        SETUP
        + """
assert mount.in_user_namespace() and mount.can_mount()
mount.mount_overlay(mnt, low, upper, work, userxattr=True)
try:
    entry = mount.mount_entry(mnt)
    assert mount.is_our_overlay(mnt, upper), entry
    open(f"{mnt}/new", "w").write("new")
    os.unlink(f"{mnt}/file")
    shutil.rmtree(f"{mnt}/dir")  # a lower DIRECTORY: EIO without userxattr in a namespace
    shutil.rmtree(f"{mnt}/dir2")
    os.mkdir(f"{mnt}/dir2")  # deleted then recreated: an opaque dir in the upper
    seen = sorted(os.listdir(mnt))
finally:
    mount.unmount(mnt)
print(json.dumps({"seen": seen, "options": entry.super_options, "lowers": entry.lowerdirs,
                  "mounted_after": mount.mount_entry(mnt) is not None}))
""",
        unshare=True,
        cwd=rootless_dir,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["seen"] == ["dir2", "new", "top"]
    assert "userxattr" in out["options"] and out["options"]["redirect_dir"] == "nofollow"
    assert out["lowers"] == [str(rootless_dir / "low1"), str(rootless_dir / "low2")]
    assert not out["mounted_after"]

    upper = rootless_dir / "upper"
    for whiteout in ("file", "dir"):
        st = os.lstat(upper / whiteout)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, whiteout
    assert os.getxattr(upper / "dir2", "user.overlay.opaque") == b"y"
    assert (upper / "new").read_text() == "new"
    for path in [upper, *upper.rglob("*")]:
        names = os.listxattr(path, follow_symlinks=False)
        assert not [n for n in names if n.startswith("trusted.")], (path, names)
    assert (rootless_dir / "low2/dir/deep/f").exists()  # the lowers are untouched
    assert os.lstat(upper).st_uid == rootless_user.uid  # made by the user, not by root


def test_legacy_fallback_in_user_namespace(rootless_user: RootlessUser, rootless_dir: Path) -> None:
    r = python_as_user(
        rootless_user,
        SETUP
        + """
mount.mount_overlay_legacy(mnt, low, upper, work, userxattr=True)
try:
    assert mount.is_our_overlay(mnt, upper)
    shutil.rmtree(f"{mnt}/dir")
    print(sorted(os.listdir(mnt)))
finally:
    mount.unmount(mnt)
""",
        unshare=True,
        cwd=rootless_dir,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['dir2', 'file', 'top']"
    assert os.lstat(rootless_dir / "upper/dir").st_rdev == 0


def test_mount_outside_a_namespace_is_one_clear_error(
    rootless_user: RootlessUser, rootless_dir: Path
) -> None:
    r = python_as_user(
        rootless_user,
        SETUP
        + """
from tophan.errors import MountError
assert not mount.in_user_namespace() and not mount.can_mount()
for call in (lambda: mount.mount_overlay(mnt, low, upper, work, userxattr=True),
             lambda: mount.unmount(mnt)):
    try:
        call()
        print("no error")
    except MountError as e:
        print(e)
""",
        unshare=False,
        cwd=rootless_dir,
    )
    assert r.returncode == 0, r.stderr
    mount_err, unmount_err = r.stdout.splitlines()
    assert mount_err.startswith(f"cannot mount overlay on {rootless_dir}/mnt: ")
    assert "Operation not permitted" in mount_err and "unshare -Urm" in mount_err
    assert unmount_err.startswith(f"cannot unmount {rootless_dir}/mnt: Operation not permitted")


def test_runner_runs_as_the_user(rootless_user: RootlessUser, rootless_dir: Path) -> None:
    plain = run_as_user(rootless_user, ["id", "-u"], unshare=False)
    inside = run_as_user(rootless_user, ["id", "-u"], unshare=True)
    assert plain.stdout.strip() == str(rootless_user.uid)
    assert inside.stdout.strip() == "0"  # mapped to root in its own namespace
    caps = run_as_user(rootless_user, ["grep", "^CapEff", "/proc/self/status"], unshare=False)
    assert caps.stdout.split()[1] == "0000000000000000"
    echo = run_as_user(rootless_user, ["cat"], unshare=False, input="hello", cwd=rootless_dir)
    assert echo.stdout == "hello"
    cli = run_as_user(rootless_user, ["tophan", "--help"], unshare=False)
    assert cli.returncode == 0, cli.stderr
    if importlib.util.find_spec("zstandard") is not None:  # tophan's one dependency comes along
        zstd = run_as_user(rootless_user, ["python3", "-c", "import zstandard"], unshare=False)
        assert zstd.returncode == 0, zstd.stderr


class _Boom(Exception):
    pass


def test_user_processes_and_dirs_are_removed_even_on_failure() -> None:
    with pytest.raises(_Boom), rootless_user_context() as user:
        name, uid, base = user.name, user.uid, user.base
        stray = "sleep 600 >/dev/null 2>&1 & echo $!"  # outlives its runner
        assert run_as_user(user, ["sh", "-c", stray], unshare=True).returncode == 0
        assert run_as_user(user, ["sh", "-c", stray], unshare=False).returncode == 0
        assert len(user_pids(uid)) == 2
        raise _Boom
    assert user_pids(uid) == []
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    with pytest.raises(KeyError):
        grp.getgrnam(name)
    assert not base.exists()


def test_timeout_kills_the_whole_session(rootless_user: RootlessUser, rootless_dir: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_as_user(rootless_user, ["sh", "-c", "sleep 600 & sleep 600"], unshare=True, timeout=1)
    for _ in range(500):  # SIGKILL is sent; wait (boundedly) for both to be gone
        if not user_pids(rootless_user.uid):
            break
        time.sleep(0.01)
    assert user_pids(rootless_user.uid) == []
