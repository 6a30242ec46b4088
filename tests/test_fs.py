"""_internal.fs: atomic writes, flock probes, temporaries (tree removal: test_store.py)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from rootless import RootlessUser, python_as_user
from tophan._internal import fs
from tophan._internal.names import is_valid

pytest_plugins = ["rootless"]  # its fixtures (conftest.py may load it too; loading is idempotent)


def test_atomic_write_sets_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f"
    fs.atomic_write(str(target), b"x" * (3 << 20), 0o600, durable=True)
    assert target.read_bytes() == b"x" * (3 << 20)
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_file_failure_leaves_old_content_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fs.AtomicFile(str(target)) as f:
        f.write(b"new, partly")
        raise RuntimeError
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_file_without_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with fs.AtomicFile(str(tmp_path / "export"), None) as f:
            f.write(b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o640


def test_temporaries_are_unguessable_and_never_names(tmp_path: Path) -> None:
    a, b = fs.temp_path(str(tmp_path / "x")), fs.temp_path(str(tmp_path / "x"))
    assert a != b and os.path.dirname(a) == str(tmp_path)
    assert fs.is_temporary(os.path.basename(a)) and not is_valid(os.path.basename(a))
    assert len(os.path.basename(fs.temp_path(str(tmp_path / ("n" * 255))))) < 255


def test_flock_probes(tmp_path: Path) -> None:
    path = str(tmp_path / "lock")
    assert not fs.flock_held(path)  # missing: nobody holds it
    holder = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert not fs.flock_held(path)
        fcntl.flock(holder, fcntl.LOCK_SH)
        assert not fs.flock_held(path)  # shared only: no exclusive holder
        assert fs.flock_held(path, exclusive=False)
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert fs.flock_held(path)
        other = os.open(path, os.O_RDONLY)
        try:
            assert not fs.try_flock(other) and not fs.try_flock(other, shared=True)
        finally:
            os.close(other)
    finally:
        os.close(holder)
    assert not fs.flock_held(path)


def test_try_flock_errors_are_not_taken_for_held() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as e:
        fs.try_flock(fd)
    assert e.value.errno == errno.EBADF


def _deep_tree(top: Path, depth: int, name: str = "d") -> None:
    """``top/d/d/.../d`` ``depth`` levels deep, each level with a file, built fd-relative so
    that no path length limit applies to building it either."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
                f.write(b"x")
            new = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)


@pytest.mark.parametrize(("depth", "name"), [(1500, "d"), (300, "n" * 200)])
def test_rmtree_deep_and_long(tmp_path: Path, depth: int, name: str) -> None:
    """1500 levels (past the recursion limit), and 300 levels of 200-byte names (a 60 KB path,
    far past PATH_MAX): both go, and nothing outside is touched."""
    _deep_tree(tmp_path / "t", depth, name)
    fs.rmtree(str(tmp_path / "t"))
    assert os.listdir(tmp_path) == []


def test_rmtree_never_follows_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    tree = tmp_path / "t"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "link").symlink_to(outside)
    (tree / "top-link").symlink_to(outside / "keep")
    fs.rmtree(str(tree))
    assert not tree.exists()
    assert (outside / "keep").read_bytes() == b"k"
    link = tmp_path / "link-to-dir"
    link.symlink_to(outside)
    fs.rmtree(str(link))  # a symlink given as the tree: the link goes, not its target
    assert not link.is_symlink() and (outside / "keep").exists()


def test_rmtree_missing_is_fine(tmp_path: Path) -> None:
    fs.rmtree(str(tmp_path / "nope"))
    fs.rmtree(str(tmp_path / "nope" / "deeper"))


@pytest.mark.rootless
def test_rmtree_as_an_unprivileged_owner(rootless_user: RootlessUser, rootless_dir: Path) -> None:
    """Without CAP_DAC_OVERRIDE the owner's own unreadable, unwritable directories (layers keep
    exact modes: 0555, 0000) are opened up on the way, deep as they may be; a symlink to a
    directory the user may change is not followed."""
    code = """
        import os
        from tophan._internal import fs
        top = os.getcwd()
        outside = os.path.join(top, "outside")
        os.makedirs(outside)
        open(os.path.join(outside, "keep"), "w").close()
        tree = os.path.join(top, "t")
        os.mkdir(tree)
        fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
        for i in range(1200):
            os.mkdir("d", dir_fd=fd)
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o444, dir_fd=fd))
            if i % 100 == 0:
                os.symlink(outside, "link", dir_fd=fd)
            new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.fchmod(fd, (0o555, 0o000, 0o100)[i % 3])
            os.close(fd)
            fd = new
        os.close(fd)
        fs.rmtree(tree)
        print(os.path.exists(tree), sorted(os.listdir(outside)))
    """
    r = python_as_user(rootless_user, code + "\n", unshare=False, cwd=rootless_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "False ['keep']\n"
