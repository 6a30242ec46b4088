"""Commit: a workspace's upper dir becomes an exact OCI diff (real overlay mounts, as root).

The real check in each case: a new workspace over [committed, base] shows exactly what the
original workspace showed.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tarbuild import snapshot
from tophan import Store
from tophan.layer import tarexport


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.init(str(tmp_path / "s"))
    base = tmp_path / "base"
    (base / "etc/conf.d").mkdir(parents=True)
    (base / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\n")
    (base / "etc/conf.d/a").write_text("a\n")
    (base / "etc/conf.d/b").write_text("b\n")
    (base / "usr/share/doc").mkdir(parents=True)
    (base / "usr/share/doc/README").write_text("docs\n")
    (base / "bin").mkdir()
    (base / "bin/tool").write_bytes(b"\x7fELF tool")
    os.chmod(base / "bin/tool", 0o755)
    (base / "data").mkdir()
    (base / "data/big").write_bytes(os.urandom(200_000))
    for p in sorted(base.rglob("*"), reverse=True):
        os.utime(
            p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000), follow_symlinks=False
        )
    s.layers.import_dir(str(base), "base")
    yield s
    for ws in s.workspaces.all():
        s.workspaces.remove(ws.name, force=True)


def commit_case(store: Store, change: Callable[[Path], None]) -> tuple[list[str], Path]:
    mp = Path(store.workspaces.create("w", ["base"]).mountpoint)
    change(mp)
    before = snapshot(mp)
    store.workspaces.unmount("w")
    layer = store.layers.commit("w", "delta")
    # the digest commit computed while copying is the digest of what it wrote
    assert layer.digest == tarexport.digest_tree(layer.path, xattr_ns="trusted")
    out = io.BytesIO()
    store.layers.export("delta", out)
    out.seek(0)
    with tarfile.open(fileobj=out) as tf:
        names = [m.name + ("/" if m.isdir() else "") for m in tf.getmembers()]
    mp2 = Path(store.workspaces.create("v", ["delta", "base"]).mountpoint)
    after = snapshot(mp2)
    assert after == before
    assert layer.source["parents"] == ["base"]
    return names, Path(layer.path)


def test_add_modify_file(store: Store) -> None:
    def change(mp: Path) -> None:
        (mp / "new").write_text("new\n")
        (mp / "etc/passwd").write_text("changed\n")

    names, _ = commit_case(store, change)
    assert sorted(names) == ["etc/", "etc/passwd", "new"]


@pytest.mark.parametrize(
    "op",
    [
        lambda mp: os.chmod(mp / "bin/tool", 0o700),
        lambda mp: os.chown(mp / "bin/tool", 123, 456),
        lambda mp: os.setxattr(mp / "bin/tool", "user.tag", b"v"),
        lambda mp: os.utime(mp / "bin/tool", ns=(1, 1)),
    ],
    ids=["chmod", "chown", "setfattr", "touch"],
)
def test_metadata_only_changes_are_kept(store: Store, op: Callable[[Path], None]) -> None:
    names, tree = commit_case(store, op)
    assert sorted(names) == ["bin/", "bin/tool"]
    assert (tree / "bin/tool").read_bytes() == b"\x7fELF tool"


def test_delete_file_and_dirs(store: Store) -> None:
    def change(mp: Path) -> None:
        (mp / "etc/conf.d/a").unlink()
        subprocess.run(["rm", "-rf", str(mp / "usr/share/doc")], check=True)

    names, tree = commit_case(store, change)
    assert sorted(names) == [
        "etc/",
        "etc/conf.d/",
        "etc/conf.d/.wh.a",
        "usr/",
        "usr/share/",
        "usr/share/.wh.doc",
    ]
    assert os.lstat(tree / "etc/conf.d/a").st_rdev == 0


def test_recreated_dir_is_opaque(store: Store) -> None:
    def change(mp: Path) -> None:
        subprocess.run(["rm", "-rf", str(mp / "etc/conf.d")], check=True)
        (mp / "etc/conf.d").mkdir()
        (mp / "etc/conf.d/only").write_text("only\n")

    names, tree = commit_case(store, change)
    assert "etc/conf.d/.wh..wh..opq" in names
    assert names.index("etc/conf.d/.wh..wh..opq") == names.index("etc/conf.d/") + 1
    assert os.getxattr(tree / "etc/conf.d", "trusted.overlay.opaque") == b"y"


def test_move_away_and_back_is_dropped(store: Store) -> None:
    def change(mp: Path) -> None:
        os.rename(mp / "etc/passwd", mp / "tmp-passwd")
        os.rename(mp / "tmp-passwd", mp / "etc/passwd")
        os.rename(mp / "data/big", mp / "data/t")
        os.rename(mp / "data/t", mp / "data/big")

    names, _ = commit_case(store, change)
    # only the parent dirs, whose mtimes the renames really changed
    assert [n for n in names if not n.endswith("/")] == []


def test_copy_up_without_change_is_dropped(store: Store) -> None:
    def change(mp: Path) -> None:
        st = os.lstat(mp / "data/big")
        with open(mp / "data/big", "r+b"):
            pass
        os.chmod(mp / "bin/tool", 0o755)  # the mode it already has
        os.utime(mp / "data/big", ns=(st.st_atime_ns, st.st_mtime_ns))

    names, _ = commit_case(store, change)
    assert names == []


def test_created_then_deleted_leaves_no_whiteout(store: Store) -> None:
    def change(mp: Path) -> None:
        (mp / "scratch").write_text("x")
        (mp / "scratch").unlink()
        (mp / "etc/tmpdir").mkdir()
        (mp / "etc/tmpdir").rmdir()

    names, _ = commit_case(store, change)
    assert names == ["etc/"]  # its mtime really changed; no whiteout for scratch or tmpdir


def test_hardlinks_made_in_the_workspace(store: Store) -> None:
    def change(mp: Path) -> None:
        (mp / "h1").write_text("shared")
        os.link(mp / "h1", mp / "h2")

    names, tree = commit_case(store, change)
    assert sorted(names) == ["h1", "h2"]
    assert os.lstat(tree / "h1").st_ino == os.lstat(tree / "h2").st_ino


def test_nested_change_under_unchanged_dirs(store: Store) -> None:
    def change(mp: Path) -> None:
        (mp / "etc/conf.d/b").write_text("b2\n")

    names, _ = commit_case(store, change)
    assert names == ["etc/", "etc/conf.d/", "etc/conf.d/b"]


def test_no_overlay_xattrs_leak_into_the_layer(store: Store) -> None:
    def change(mp: Path) -> None:
        os.chmod(mp / "bin/tool", 0o700)
        (mp / "etc/conf.d/a").unlink()

    _, tree = commit_case(store, change)
    for p in [tree, *tree.rglob("*")]:
        for k in os.listxattr(p, follow_symlinks=False):
            assert not k.startswith("trusted.overlay.") or k == "trusted.overlay.opaque", (p, k)


def test_workspace_stays_usable_and_commit_refused_while_mounted(store: Store) -> None:
    mp = Path(store.workspaces.create("w", ["base"]).mountpoint)
    (mp / "f").write_text("1")
    from tophan import InUse

    with pytest.raises(InUse, match="mounted"):
        store.layers.commit("w", "c1")
    store.workspaces.unmount("w")
    store.layers.commit("w", "c1")
    store.workspaces.mount("w")
    (mp / "g").write_text("2")
    store.workspaces.unmount("w")
    c2 = store.layers.commit("w", "c2")
    assert sorted(os.listdir(c2.path)) == ["f", "g"]


def test_a_deep_upper_dir_commits(store: Store) -> None:
    """Issue 8 #10: a workspace 1500 directories deep (past Python's recursion limit) commits,
    and the layer's digest is what its tree hashes to."""
    from tophan._internal.fs import rmtree

    depth = 1500
    ws = store.workspaces.create("deep", ["base"], mount=False)
    try:
        fd = os.open(ws.upper, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(depth):  # fd-relative: no path grows with the depth
            os.mkdir("d", 0o755, dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"hi\n")
        os.close(fd)
        layer = store.layers.commit("deep", "deep-layer")
        assert layer.digest == tarexport.digest_tree(layer.path, xattr_ns="trusted")
        assert store.layers.verify(["deep-layer"])[0].ok
    finally:
        # pytest's own clean-up (recursive) cannot remove trees this deep: ours can
        store.workspaces.remove("deep", force=True)
        if store.layers.exists("deep-layer"):
            store.layers.remove("deep-layer")
        for leftover in ("tmp", "layers"):
            for entry in os.listdir(store.path(leftover)):
                rmtree(store.path(leftover, entry))
