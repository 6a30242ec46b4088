"""Property: random trees -> export -> import -> the identical tree and the identical digest."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tarbuild import snapshot
from tophan.layer import tarexport, tarimport

NAME = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzAB0123456789._-", min_size=1, max_size=12
).filter(lambda n: n not in (".", "..") and not n.startswith(".wh."))
LONG = st.integers(min_value=101, max_value=180).map(lambda n: "L" * n)
MODE = st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o444, 0o000])
MTIME = st.integers(min_value=0, max_value=2**34).map(lambda s: s * 1_000_000_000) | st.integers(
    min_value=0, max_value=2**60
)
XATTRS = st.dictionaries(
    st.sampled_from(["user.a", "user.b", "user.long." + "x" * 40]),
    st.binary(min_size=0, max_size=64),
    max_size=2,
)
ENTRY = st.tuples(
    st.sampled_from(["file", "file", "dir", "symlink", "hardlink", "fifo", "whiteout", "opaque"]),
    NAME | LONG,
    st.binary(max_size=3000),
    MODE,
    st.integers(min_value=0, max_value=70000),
    MTIME,
    XATTRS,
)


def build(
    root: Path, entries: list[tuple[str, str, bytes, int, int, int, dict[str, bytes]]]
) -> None:
    dirs = [root]
    opaque: set[Path] = set()
    files: list[Path] = []
    for i, (kind, name, data, mode, owner, mtime, xattrs) in enumerate(entries):
        parent = dirs[i % len(dirs)]
        p = parent / name
        if os.path.lexists(p):
            continue
        if kind in ("dir", "opaque"):
            p.mkdir()
            if kind == "opaque":
                os.setxattr(p, "trusted.overlay.opaque", b"y")
                opaque.add(p)
            dirs.append(p)
        elif kind == "file":
            p.write_bytes(data)
            files.append(p)
        elif kind == "symlink":
            p.symlink_to(data.hex()[:50] or "target")
        elif kind == "hardlink" and files:
            os.link(files[i % len(files)], p)
            continue  # shares the inode's metadata
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "whiteout" and parent not in opaque:  # never valid in a layer
            os.mknod(p, stat.S_IFCHR | 0o600, 0)
        else:
            continue
        os.chown(p, owner, owner // 2, follow_symlinks=False)
        if kind != "symlink":
            if kind in ("file", "dir", "opaque"):  # user.* xattrs exist only on files and dirs
                for k, v in xattrs.items():
                    os.setxattr(p, k, v)
            os.chmod(p, mode if kind not in ("dir", "opaque") else mode | 0o700)
        os.utime(p, ns=(mtime, mtime), follow_symlinks=False)
    for dpath in reversed(dirs[1:]):  # directory mtimes last: children changed them
        os.utime(dpath, ns=(1_234_567_890_123_456_789, 1_234_567_890_123_456_789))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ENTRY, min_size=1, max_size=25))
def test_export_import_roundtrip(
    entries: list[tuple[str, str, bytes, int, int, int, dict[str, bytes]]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="tophan-prop-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        build(src, entries)
        buf = io.BytesIO()
        digest, size = tarexport.write_tar(str(src), buf, xattr_ns="trusted")
        assert size == len(buf.getvalue())
        dest = Path(tmp) / "dest"
        dest.mkdir()
        buf.seek(0)
        stats = tarimport.extract(buf, str(dest), xattr_ns="trusted", privileged=True)
        assert stats.digest == digest
        assert snapshot(dest) == snapshot(src)
        assert tarexport.digest_tree(str(dest), xattr_ns="trusted") == digest
        shutil.rmtree(src)


def _tree_in_order(root: Path, order: list[int], umask: int) -> None:
    old = os.umask(umask)
    try:
        root.mkdir()
        (root / "d").mkdir()
        steps = [
            lambda: (root / "d/b").write_bytes(b"bbb"),
            lambda: (root / "d/a").write_bytes(b"a" * 5000),
            lambda: (root / "z").symlink_to("d/a"),
            lambda: (root / "c").write_bytes(b""),
        ]
        for i in order:
            steps[i]()
        for p, mode in (
            (root / "d/b", 0o640),
            (root / "d/a", 0o755),
            (root / "c", 0o600),
            (root / "d", 0o755),
        ):
            os.chmod(p, mode)
        for p in (root / "d/a", root / "d/b", root / "c", root / "d"):
            os.utime(p, ns=(1_700_000_000_000_000_001,) * 2)
        os.utime(root / "z", ns=(5, 5), follow_symlinks=False)
    finally:
        os.umask(old)


def test_export_is_deterministic_across_creation_order_and_umask(tmp_path: Path) -> None:
    outs = []
    for i, (order, umask) in enumerate([([0, 1, 2, 3], 0o022), ([3, 2, 1, 0], 0o077)]):
        root = tmp_path / f"t{i}"
        _tree_in_order(root, order, umask)
        for comp in (None, "gzip", "zstd"):
            buf = io.BytesIO()
            tarexport.export(str(root), buf, xattr_ns="trusted", compress=comp)
            outs.append((comp, buf.getvalue()))
    for comp in (None, "gzip", "zstd"):
        a, b = [data for c, data in outs if c == comp]
        assert a == b, comp
