"""Overlay mounts as root: the new mount API with deep stacks, errors with the kernel's reason,
busy mounts, telling our overlay from other mounts, and the legacy mount(2) fallback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tophan._internal import libc as _libc
from tophan.errors import InUse, MountError
from tophan.layer import mount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


class Stack:
    """Lower dirs (top first), an upper, a work dir and a mount point under one tmp dir."""

    def __init__(self, base: Path, n: int, name_len: int = 20) -> None:
        self.base = base
        self.lowers: list[str] = []
        for i in range(n):
            d = base / "layers" / (f"{i:03d}-" + "x" * name_len)
            d.mkdir(parents=True)
            (d / f"only-{i}").write_text(str(i))
            (d / "shared").write_text(str(i))
            self.lowers.append(str(d))
        self.upper, self.work, self.mnt = (self.dir(n) for n in ("upper", "work", "mnt"))

    def dir(self, name: str) -> str:
        (self.base / name).mkdir(parents=True, exist_ok=True)
        return str(self.base / name)

    def mount(self, **kw: bool) -> None:
        mount.mount_overlay(self.mnt, self.lowers, self.upper, self.work, userxattr=False, **kw)


def _detach_all_below(prefix: str) -> None:
    while True:
        with open("/proc/self/mountinfo") as f:
            points = [mount._unescape(line.split()[4]) for line in f]
        below = [p for p in points if p == prefix or p.startswith(prefix + "/")]
        if not below:
            return
        for p in reversed(below):
            try:
                _libc.umount2(p, _libc.MNT_DETACH)
            except OSError:
                pass


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, with every mount below it detached afterwards, whatever the test did."""
    yield tmp_path
    _detach_all_below(str(tmp_path))


def test_one_lower(base: Path) -> None:
    s = Stack(base, 1)
    s.mount()
    assert sorted(os.listdir(s.mnt)) == ["only-0", "shared"]
    assert mount.is_our_overlay(s.mnt, s.upper)
    assert mount.unmount(s.mnt) is True
    assert mount.mount_entry(s.mnt) is None
    assert mount.unmount(s.mnt) is False  # nothing there any more: not an error by default


def test_two_lowers_first_is_top(base: Path) -> None:
    s = Stack(base, 2)
    s.mount()
    try:
        assert Path(s.mnt, "shared").read_text() == "0"
        assert sorted(os.listdir(s.mnt)) == ["only-0", "only-1", "shared"]
        entry = mount.mount_entry(s.mnt)
        assert entry is not None and entry.fstype == "overlay"
        assert entry.source == "overlay"  # what `findmnt`/`mount | grep overlay` scripts see
        assert entry.lowerdirs == tuple(s.lowers)
        assert (entry.upperdir, entry.workdir) == (s.upper, s.work)
    finally:
        mount.unmount(s.mnt)


@pytest.mark.parametrize("name_len", [100, 200], ids=["strings", "fds"])
def test_500_lowers_with_long_paths(base: Path, name_len: int) -> None:
    # Paths under 256 bytes go to fsconfig as strings, longer ones (Linux >= 6.13) as fds.
    s = Stack(base, 500, name_len=name_len)
    assert len(":".join(s.lowers)) > 12 * 4096  # a legacy option string could not carry it
    s.mount()
    try:
        assert Path(s.mnt, "only-0").read_text() == "0"  # the top layer
        assert Path(s.mnt, "only-499").read_text() == "499"  # the bottom layer: none was cut
        assert Path(s.mnt, "shared").read_text() == "0"
        assert set(os.listdir(s.mnt)) == {f"only-{i}" for i in range(500)} | {"shared"}
        entry = mount.mount_entry(s.mnt)
        assert entry is not None and entry.lowerdirs == tuple(s.lowers)
        assert mount.is_our_overlay(s.mnt, s.upper)
    finally:
        assert mount.unmount(s.mnt)


def test_501_lowers_refused(base: Path) -> None:
    with pytest.raises(MountError, match="at most 500") as info:
        mount.mount_overlay(str(base), [str(base)] * 501, None, None, userxattr=False)
    assert info.value.hint == "squash some layers into one"
    assert mount.mount_entry(str(base)) is None


def test_read_only_overlay_needs_two_lowers(base: Path) -> None:
    s = Stack(base, 2)
    mount.mount_overlay(s.mnt, s.lowers, None, None, userxattr=False)
    try:
        assert sorted(os.listdir(s.mnt)) == ["only-0", "only-1", "shared"]
        with pytest.raises(OSError):
            Path(s.mnt, "new").write_text("x")
        assert mount.mount_entry(s.mnt) is not None
        assert not mount.is_our_overlay(s.mnt, s.upper)  # no upper: nobody's workspace
    finally:
        mount.unmount(s.mnt)
    with pytest.raises(MountError, match="at least 2 lower layers"):
        mount.mount_overlay(s.mnt, s.lowers[:1], None, None, userxattr=False)
    with pytest.raises(MountError, match="needs a work dir"):
        mount.mount_overlay(s.mnt, s.lowers, s.upper, None, userxattr=False)


def test_write_and_delete_lower_file_and_dir(base: Path) -> None:
    s = Stack(base, 2)
    Path(s.lowers[1], "subdir/deep").mkdir(parents=True)
    Path(s.lowers[1], "subdir/deep/f").write_text("f")
    Path(s.lowers[1], "again").mkdir()
    s.mount()
    try:
        Path(s.mnt, "new").write_text("n")
        os.unlink(Path(s.mnt, "only-1"))
        subprocess.run(["rm", "-rf", f"{s.mnt}/subdir"], check=True)  # a dir of a lower
        os.rmdir(Path(s.mnt, "again"))
        os.mkdir(Path(s.mnt, "again"))  # recreated: opaque, the lower's content stays hidden
        assert sorted(os.listdir(s.mnt)) == ["again", "new", "only-0", "shared"]
    finally:
        mount.unmount(s.mnt)
    for whiteout in ("subdir", "only-1"):
        st = os.lstat(Path(s.upper, whiteout))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(Path(s.upper, "again"), "trusted.overlay.opaque") == b"y"
    assert Path(s.upper, "new").read_text() == "n"
    assert Path(s.lowers[1], "subdir/deep/f").read_text() == "f"  # the lowers are untouched
    # index=off, metacopy=off, no redirects: nothing but the opaque marker in the upper
    for p in Path(s.upper).rglob("*"):
        names = os.listxattr(p, follow_symlinks=False)
        assert names in ([], ["trusted.overlay.opaque"]), (p, names)


def test_kernel_reasons_reach_the_message(base: Path) -> None:
    s = Stack(base, 1)
    missing = str(base / "missing")
    with pytest.raises(MountError) as info:
        mount.mount_overlay(s.mnt, [missing], s.upper, s.work, userxattr=False)
    msg = str(info.value)
    assert msg == f"cannot mount overlay on {s.mnt}: lower dir {missing}: No such file or directory"
    long_missing = str(base / ("y" * 250))  # too long for a string: looked up by us, not fsconfig
    with pytest.raises(MountError, match=f"lower dir {long_missing}: No such file or directory"):
        mount.mount_overlay(s.mnt, [*s.lowers, long_missing], s.upper, s.work, userxattr=False)
    afile = base / "afile"
    afile.write_text("")
    with pytest.raises(MountError) as info:
        mount.mount_overlay(s.mnt, s.lowers, str(afile), s.work, userxattr=False)
    # this one comes from the fs context's log, in the kernel's words
    assert str(info.value).endswith(f"upper dir {afile}: overlay: {afile} is not a directory")
    with pytest.raises(MountError, match=f"mount point {s.mnt}x: No such file"):
        mount.mount_overlay(s.mnt + "x", s.lowers, s.upper, s.work, userxattr=False)
    assert mount.mount_entry(s.mnt) is None


def test_busy_mount_is_in_use_and_stays_mounted(base: Path) -> None:
    s = Stack(base, 1)
    s.mount()
    fd = os.open(Path(s.mnt, "only-0"), os.O_RDONLY)
    try:
        with pytest.raises(InUse, match=f"mount {s.mnt} is busy: a process has files open"):
            mount.unmount(s.mnt)
        assert mount.is_our_overlay(s.mnt, s.upper)
    finally:
        os.close(fd)
    child = subprocess.Popen(["sleep", "600"], cwd=s.mnt)
    try:
        with pytest.raises(InUse):
            mount.unmount(s.mnt)
    finally:
        child.kill()
        child.wait()
    assert mount.unmount(s.mnt)
    with pytest.raises(MountError, match="nothing is mounted there"):
        mount.unmount(s.mnt, missing_ok=False)
    assert mount.unmount(str(base / "does-not-exist")) is False


def test_other_mounts_are_not_ours(base: Path) -> None:
    s = Stack(base, 1)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", s.mnt], check=True)
    entry = mount.mount_entry(s.mnt)
    assert entry is not None and entry.fstype == "tmpfs"
    assert not mount.is_our_overlay(s.mnt, s.upper)
    mount.unmount(s.mnt)

    subprocess.run(["mount", "--bind", s.upper, s.mnt], check=True)
    assert not mount.is_our_overlay(s.mnt, s.upper)
    mount.unmount(s.mnt)

    other_upper, other_work = s.dir("other-upper"), s.dir("other-work")
    mount.mount_overlay(s.mnt, s.lowers, other_upper, other_work, userxattr=False)
    assert not mount.is_our_overlay(s.mnt, s.upper)
    assert mount.is_our_overlay(s.mnt, other_upper)
    mount.unmount(s.mnt)
    assert not mount.is_our_overlay(s.mnt, s.upper)


def test_topmost_of_stacked_mounts(base: Path) -> None:
    s = Stack(base, 1)
    s.mount()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", s.mnt], check=True)
    entry = mount.mount_entry(s.mnt)
    assert entry is not None and entry.fstype == "tmpfs"
    assert not mount.is_our_overlay(s.mnt, s.upper)  # ours is hidden under it
    mount.unmount(s.mnt)
    assert mount.is_our_overlay(s.mnt, s.upper)
    mount.unmount(s.mnt)


def test_mountinfo_escapes(base: Path) -> None:
    s = Stack(base, 1)
    odd = base / "a dir, with\ttab\nnewline\\backslash:colon é"
    mnt, upper = odd / "mnt", odd / "upper"
    for d in (mnt, upper, odd / "work"):
        d.mkdir(parents=True)
    mount.mount_overlay(str(mnt), s.lowers, str(upper), str(odd / "work"), userxattr=False)
    try:
        entry = mount.mount_entry(str(mnt))
        assert entry is not None and entry.mountpoint == str(mnt)
        assert entry.upperdir == str(upper)
        assert mount.is_our_overlay(str(mnt) + "/", str(upper))
    finally:
        mount.unmount(str(mnt))


def test_legacy_string_refused_not_truncated(base: Path) -> None:
    s = Stack(base, 40, name_len=120)
    assert len(":".join(s.lowers)) > mount.legacy_limit()
    with pytest.raises(MountError, match=r"needs \d+ bytes and the kernel keeps \d+") as info:
        mount.mount_overlay_legacy(s.mnt, s.lowers, s.upper, s.work, userxattr=False)
    assert "Linux >= 6.8" in str(info.value)
    assert mount.mount_entry(s.mnt) is None


def test_legacy_options_string() -> None:
    assert mount.legacy_options(["/l/a", "/l/b"], "/u", "/w", userxattr=False) == (
        "lowerdir=/l/a:/l/b,upperdir=/u,workdir=/w,index=off,metacopy=off,redirect_dir=off"
    )
    assert mount.legacy_options(["/a,b", "/c:d", "/e\\f"], None, None, userxattr=True) == (
        "lowerdir=/a\\,b:/c\\:d:/e\\\\f,index=off,metacopy=off,redirect_dir=nofollow,userxattr"
    )


def test_legacy_fallback_mounts_odd_paths(base: Path) -> None:
    s = Stack(base, 2)
    odd = Path(s.dir("odd,comma:colon\\backslash"))
    s.lowers.append(str(odd))
    (odd / "from-odd").write_text("odd")
    upper, work = s.dir("up,per"), s.dir("wo:rk")
    mount.mount_overlay_legacy(s.mnt, s.lowers, upper, work, userxattr=False)
    try:
        assert sorted(os.listdir(s.mnt)) == ["from-odd", "only-0", "only-1", "shared"]
        entry = mount.mount_entry(s.mnt)
        assert entry is not None and "lowerdir" in entry.super_options  # the legacy way
        assert entry.source == "overlay"
        assert entry.lowerdirs == tuple(s.lowers)
        assert (entry.upperdir, entry.workdir) == (upper, work)
        assert mount.is_our_overlay(s.mnt, upper)
        assert not mount.is_our_overlay(s.mnt, s.dir("up"))
    finally:
        mount.unmount(s.mnt)
    mount.mount_overlay_legacy(s.mnt, s.lowers, None, None, userxattr=False)  # read-only
    try:
        assert Path(s.mnt, "from-odd").read_text() == "odd"
    finally:
        mount.unmount(s.mnt)


def test_lowerdir_plus_probe_matches_kernel() -> None:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    assert mount.lowerdir_plus_supported() == ((major, minor) >= (6, 8))


def test_namespace_helpers() -> None:
    assert not mount.in_user_namespace()
    assert mount.can_mount()
    assert mount.mount_namespace_id() == os.stat("/proc/self/ns/mnt").st_ino
    code = (
        "from tophan.layer import mount; "
        "print(mount.in_user_namespace(), mount.mount_namespace_id())"
    )
    out = subprocess.run(
        ["unshare", "-Urm", sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) != mount.mount_namespace_id()


def test_libc_bind_by_open_tree_and_unshare(base: Path) -> None:
    s = Stack(base, 1)
    tree = _libc.open_tree(s.lowers[0])  # a detached bind mount of the layer
    try:
        _libc.move_mount(tree, s.mnt)
    finally:
        os.close(tree)
    assert sorted(os.listdir(s.mnt)) == ["only-0", "shared"]
    entry = mount.mount_entry(s.mnt)
    assert entry is not None and entry.fstype != "overlay"
    assert not mount.is_our_overlay(s.mnt, s.upper)
    assert mount.unmount(s.mnt)
    code = (
        "from tophan._internal import libc as _libc\nfrom tophan.layer import mount\n"
        "before = mount.mount_namespace_id()\n"
        "_libc.unshare(_libc.CLONE_NEWUSER | _libc.CLONE_NEWNS)\n"
        "print(mount.in_user_namespace(), before != mount.mount_namespace_id())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True"]
