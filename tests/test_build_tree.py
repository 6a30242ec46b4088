"""tophan.build.tree: overlayfs's lookup rules over real layer trees, symlinks followed only
inside the tree, and never a host symlink followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tophan.build.tree import Tree
from tophan.errors import TophanError

NS = "trusted"


def whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, 0)


def opaque(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, f"{NS}.overlay.opaque", b"y")


def write(path: Path, data: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Tree, list[Path]]:
    """Three layers, top first: whiteouts, an opaque dir, a file hiding a dir, symlinks."""
    top, mid, low = (tmp_path / n for n in ("top", "mid", "low"))
    for d in (top, mid, low):
        d.mkdir()
    write(low / "etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    write(low / "a/x", "low x")
    write(low / "a/y", "low y")
    write(low / "d/old")
    write(low / "keep/k")
    write(low / "usr/bin/sh", "shell")
    whiteout(mid / "a/x")
    opaque(mid / "d")
    write(mid / "d/new")
    os.symlink("usr/bin", mid / "bin")
    write(top / "a/z", "top z")
    write(top / "a/y", "top y")
    write(top / "keep", "now a file")
    return Tree([str(top), str(mid), str(low)], xattr_ns=NS), [top, mid, low]


def test_whiteout_hides_and_is_not_listed(stack: tuple[Tree, list[Path]]) -> None:
    tree, _ = stack
    assert tree.lstat("/a/x") is None
    assert tree.locate("/a/x") is None
    assert tree.listdir("/a") == ["y", "z"]


def test_top_most_layer_wins(stack: tuple[Tree, list[Path]]) -> None:
    tree, (top, _, low) = stack
    assert tree.locate("/a/y") == str(top / "a/y")
    assert tree.read_file("/a/y") == b"top y"
    assert tree.locate("/usr/bin/sh") == str(low / "usr/bin/sh")


def test_opaque_dir_hides_lower_content(stack: tuple[Tree, list[Path]]) -> None:
    tree, _ = stack
    assert tree.listdir("/d") == ["new"]
    assert tree.lstat("/d/old") is None


def test_non_dir_above_hides_the_dir_below(stack: tuple[Tree, list[Path]]) -> None:
    tree, _ = stack
    st = tree.lstat("/keep")
    assert st is not None and stat.S_ISREG(st.st_mode)
    assert tree.lstat("/keep/k") is None
    assert tree.listdir("/keep") == []


def test_lstat_does_not_go_through_a_symlinked_dir(stack: tuple[Tree, list[Path]]) -> None:
    tree, _ = stack
    st = tree.lstat("/bin")
    assert st is not None and stat.S_ISLNK(st.st_mode)
    assert tree.lstat("/bin/sh") is None
    assert tree.listdir("/bin") == []
    assert tree.resolve("/bin/sh") == "/usr/bin/sh"
    assert tree.resolve("/bin", follow_last=False) == "/bin"
    assert tree.resolve("/bin") == "/usr/bin"


def test_merged_root_listing(stack: tuple[Tree, list[Path]]) -> None:
    tree, _ = stack
    assert tree.listdir("/") == ["a", "bin", "d", "etc", "keep", "usr"]


def test_resolve_absolute_and_dotdot_links(tmp_path: Path) -> None:
    root = tmp_path / "l"
    write(root / "usr/lib/libc.so", "libc")
    (root / "a/b").mkdir(parents=True)
    os.symlink("/usr/lib", root / "a/abs")
    os.symlink("../../../../../../usr", root / "a/b/up")  # more ".." than depth: clamped
    os.symlink("b/up/lib", root / "a/rel")
    tree = Tree([str(root)], xattr_ns=NS)
    assert tree.resolve("/a/abs/libc.so") == "/usr/lib/libc.so"
    assert tree.resolve("/a/b/up/lib") == "/usr/lib"
    assert tree.resolve("/a/rel/libc.so") == "/usr/lib/libc.so"
    assert tree.resolve("/../../a/./abs/../lib") == "/usr/lib"
    assert tree.resolve("/nothing/../usr") == "/usr"
    assert tree.resolve("/usr/nothing/deeper") == "/usr/nothing/deeper"  # may not exist
    assert tree.read_file("/a/rel/libc.so") == b"libc"


def test_resolve_loops_are_an_error(tmp_path: Path) -> None:
    root = tmp_path / "l"
    (root / "etc").mkdir(parents=True)
    os.symlink("two", root / "one")
    os.symlink("one", root / "two")
    os.symlink("/etc/self", root / "etc/self")
    tree = Tree([str(root)], xattr_ns=NS)
    for path in ("/one", "/two/x", "/etc/self"):
        with pytest.raises(TophanError, match="too many levels of symbolic links"):
            tree.resolve(path)
    assert tree.resolve("/one", follow_last=False) == "/one"


def test_owner_honours_the_rootless_owner_xattr(tmp_path: Path) -> None:
    root = tmp_path / "l"
    f = write(root / "f")
    g = write(root / "g")
    os.chown(g, 12, 34)
    os.setxattr(f, "user.tophan.owner", b"1000:1001")
    tree = Tree([str(root)], xattr_ns="user")
    assert tree.owner("/f") == (1000, 1001)
    assert tree.owner("/g") == (12, 34)
    assert tree.owner("/") == (0, 0)
    # the context (a plain directory) does not take our bookkeeping from a file it holds
    assert Tree([str(root)], xattr_ns=None).owner("/f") == (0, 0)


def test_xattrs_drop_overlay_and_owner_bookkeeping(tmp_path: Path) -> None:
    root = tmp_path / "l"
    d = root / "d"
    d.mkdir(parents=True)
    os.setxattr(d, "user.keep", b"1")
    os.setxattr(d, "user.tophan.owner", b"5:5")
    os.setxattr(d, "trusted.overlay.opaque", b"y")
    os.setxattr(d, "trusted.other", b"2")
    tree = Tree([str(root)], xattr_ns=NS)
    assert tree.xattrs("/d") == {"trusted.other": b"2", "user.keep": b"1"}


def test_read_file_limits_and_kinds(tmp_path: Path) -> None:
    root = tmp_path / "l"
    write(root / "big", "x" * 100)
    os.mkfifo(root / "fifo")
    tree = Tree([str(root)], xattr_ns=NS)
    assert tree.read_file("/big", limit=100) == b"x" * 100
    with pytest.raises(TophanError, match="larger than 99 bytes"):
        tree.read_file("/big", limit=99)
    assert tree.read_file("/absent") is None
    with pytest.raises(TophanError, match="not a regular file"):
        tree.read_file("/fifo")  # never opened: no hang
    with pytest.raises(TophanError, match="not a regular file"):
        tree.read_file("/")


def test_passwd_symlinked_to_the_hosts_is_read_in_the_tree(tmp_path: Path) -> None:
    """A hostile image: /etc/passwd -> the host's. Either a loop (the link is its own target
    in the tree) or the tree's own file; never the host's."""
    root = tmp_path / "l"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc/passwd", root / "etc/passwd")
    tree = Tree([str(root)], xattr_ns=NS)
    with pytest.raises(TophanError, match="symbolic links"):
        tree.read_file("/etc/passwd")
    os.unlink(root / "etc/passwd")
    os.symlink("../../../../../../../../etc/passwd", root / "etc/passwd")
    with pytest.raises(TophanError, match="symbolic links"):
        tree.read_file("/etc/passwd")
    os.unlink(root / "etc/passwd")
    os.symlink("/elsewhere/passwd", root / "etc/passwd")
    assert tree.read_file("/etc/passwd") is None


def test_a_host_symlink_in_a_layer_is_never_followed(tmp_path: Path) -> None:
    """A layer holding ``evil -> /etc`` (the host's, if followed on the host): lookups below it
    find nothing, and resolving it stays in the tree."""
    root = tmp_path / "l"
    write(root / "etc/hostname", "in the tree")
    os.symlink("/etc", root / "evil")
    os.symlink(str(tmp_path / "outside"), root / "out")
    write(tmp_path / "outside/secret", "host secret")
    tree = Tree([str(root)], xattr_ns=NS)
    assert tree.lstat("/evil/hostname") is None
    assert tree.listdir("/evil") == []
    assert tree.read_file("/evil/hostname") == b"in the tree"
    assert tree.read_file("/out/secret") is None
    with pytest.raises(TophanError):
        tree.open_file("/evil")  # a symlink is never opened (O_NOFOLLOW)


def test_open_file_checks_it_is_the_file_looked_up(tmp_path: Path) -> None:
    root = tmp_path / "l"
    f = write(root / "f", "one")
    tree = Tree([str(root)], xattr_ns=None)
    st = tree.lstat("/f")
    assert st is not None
    write(root / "g", "two")
    os.replace(root / "g", f)  # swapped since it was planned
    with pytest.raises(TophanError, match="changed"):
        tree.open_file("/f", st)
    os.unlink(root / "f")
    os.mkfifo(root / "f")  # a FIFO swapped in: refused without blocking
    with pytest.raises(TophanError, match="changed"):
        tree.open_file("/f")


def test_empty_tree_is_an_empty_root() -> None:
    tree = Tree([], xattr_ns=NS)
    st = tree.lstat("/")
    assert st is not None and stat.S_ISDIR(st.st_mode)
    assert tree.listdir("/") == []
    assert tree.lstat("/etc") is None
    assert tree.resolve("/a/../b") == "/b"
    assert tree.read_file("/etc/passwd") is None
    assert tree.owner("/") == (0, 0)


def test_plain_directory_interprets_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    whiteout(root / "dev0")
    opaque(root / "d")
    write(root / "d/f")
    tree = Tree([str(root)], xattr_ns=None)
    st = tree.lstat("/dev0")
    assert st is not None and stat.S_ISCHR(st.st_mode)
    assert tree.listdir("/") == ["d", "dev0"]
    with pytest.raises(ValueError):
        Tree([str(root), str(root)], xattr_ns=None)
