"""Tar import: every member type and metadata case, formats and compressions (as root)."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import stat
import struct
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from tarbuild import d, f, hard, sym, tar_bytes, ti
from tophan.layer import tarexport, tarimport


def extract(data: bytes | io.BufferedIOBase, dest: Path, privileged: bool = True) -> Path:
    dest.mkdir()
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    stats = tarimport.extract(src, str(dest), xattr_ns="trusted", privileged=privileged)
    # the digest import computes from the archive is the digest of what landed on disk
    assert stats.digest == tarexport.digest_tree(str(dest), xattr_ns="trusted")
    return dest


def test_regular_dir_symlink_hardlink_fifo_device(tmp_path: Path) -> None:
    data = tar_bytes(
        [
            d("dir", mode=0o750, uid=5, gid=6, mtime=1_600_000_000),
            f("dir/file", b"hello", mode=0o640, uid=1000, gid=1001),
            sym("dir/link", "file"),
            hard("dir/hard", "dir/file"),
            (ti("fifo", tarfile.FIFOTYPE, mode=0o600), None),
            (_dev("null", 1, 3), None),
            (_dev("sda", 8, 0, tarfile.BLKTYPE), None),
        ]
    )
    t = extract(data, tmp_path / "t")
    st = os.lstat(t / "dir")
    assert stat.S_IMODE(st.st_mode) == 0o750 and (st.st_uid, st.st_gid) == (5, 6)
    assert st.st_mtime_ns == 1_600_000_000 * 10**9
    fst = os.lstat(t / "dir/file")
    assert (t / "dir/file").read_bytes() == b"hello"
    assert stat.S_IMODE(fst.st_mode) == 0o640 and (fst.st_uid, fst.st_gid) == (1000, 1001)
    assert os.readlink(t / "dir/link") == "file"
    assert os.lstat(t / "dir/hard").st_ino == fst.st_ino
    assert stat.S_ISFIFO(os.lstat(t / "fifo").st_mode)
    null = os.lstat(t / "null")
    assert (
        stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    )
    assert stat.S_ISBLK(os.lstat(t / "sda").st_mode)


def _dev(name: str, major: int, minor: int, kind: bytes = tarfile.CHRTYPE) -> tarfile.TarInfo:
    t = ti(name, kind, mode=0o666)
    t.devmajor, t.devminor = major, minor
    return t


def test_exact_modes_whatever_the_umask(tmp_path: Path) -> None:
    data = tar_bytes(
        [
            f("suid", b"x", mode=0o4755),
            f("sgid", b"x", mode=0o2711, uid=1000, gid=1000),
            d("sticky", mode=0o1777),
            d("ro", mode=0o555),
            f("ro/inside", b"y", mode=0o444),
        ]
    )
    old = os.umask(0o077)
    try:
        t = extract(data, tmp_path / "t")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(t / "suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(t / "sgid").st_mode) == 0o2711
    assert stat.S_IMODE(os.lstat(t / "sticky").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(t / "ro").st_mode) == 0o555
    assert (t / "ro/inside").read_bytes() == b"y"


def test_nanosecond_mtimes_and_symlink_times(tmp_path: Path) -> None:
    data = tar_bytes(
        [
            f("a", b"1", pax={"mtime": "1700000000.123456789"}),
            sym("l", "a", pax={"mtime": "1600000000.5"}),
            d("dd", pax={"mtime": "1500000000.000000001"}),
            f("dd/x", b""),
        ]
    )
    t = extract(data, tmp_path / "t")
    assert os.lstat(t / "a").st_mtime_ns == 1_700_000_000_123_456_789
    assert os.lstat(t / "l").st_mtime_ns == 1_600_000_000_500_000_000
    assert os.lstat(t / "dd").st_mtime_ns == 1_500_000_000_000_000_001


def test_xattrs_capability_and_acl(tmp_path: Path) -> None:
    # v2 file capability: cap_net_bind_service (bit 10), effective
    cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
    probe = tmp_path / "probe"
    probe.write_text("")
    subprocess.run(["setfacl", "-m", "u:1234:rx", str(probe)], check=True)
    acl = os.getxattr(probe, "system.posix_acl_access")
    data = tar_bytes(
        [
            f(
                "bin",
                b"\x7fELF",
                mode=0o755,
                pax={
                    "SCHILY.xattr.user.comment": "hello",
                    "SCHILY.xattr.trusted.overlay.redirect": "/evil",
                    "SCHILY.xattr.user.tophan.owner": "1:1",
                },
            )
        ]
    )
    # binary values don't survive tarfile's str pax headers: patch them in with our own writer
    data = _with_binary_xattrs(
        data, b"bin", {"security.capability": cap, "system.posix_acl_access": acl}
    )
    t = extract(data, tmp_path / "t")
    got = {k: os.getxattr(t / "bin", k) for k in os.listxattr(t / "bin")}
    assert got["user.comment"] == b"hello"
    assert got["security.capability"] == cap
    assert got["system.posix_acl_access"] == acl
    assert "trusted.overlay.redirect" not in got
    assert "user.tophan.owner" not in got


def _with_binary_xattrs(data: bytes, name: bytes, xattrs: dict[str, bytes]) -> bytes:
    """Re-export through our own writer after setting xattrs on an extracted copy."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp) / "t"
        t.mkdir()
        tarimport.extract(io.BytesIO(data), str(t), xattr_ns="trusted", privileged=True)
        for k, v in xattrs.items():
            os.setxattr(t / os.fsdecode(name), k, v)
        out = io.BytesIO()
        tarexport.write_tar(str(t), out, xattr_ns="trusted")
        return out.getvalue()


def test_gnu_and_pax_long_names(tmp_path: Path) -> None:
    long_dir = "d" * 120
    long_name = f"{long_dir}/{'n' * 150}"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = tar_bytes(
            [
                d(long_dir),
                f(long_name, b"long"),
                sym(f"{long_dir}/l", "x" * 200),
                hard(f"{long_dir}/h" + "h" * 110, long_name),
            ],
            fmt=fmt,
        )
        t = extract(data, tmp_path / f"t{fmt}")
        assert (t / long_name).read_bytes() == b"long"
        assert os.readlink(t / long_dir / "l") == "x" * 200
        assert os.lstat(t / long_dir / ("h" + "h" * 110)).st_ino == os.lstat(t / long_name).st_ino


def test_ustar_prefix_field(tmp_path: Path) -> None:
    name = "p" * 90 + "/" + "q" * 90
    data = tar_bytes([d("p" * 90), f(name, b"z")], fmt=tarfile.USTAR_FORMAT)
    assert (extract(data, tmp_path / "t") / name).read_bytes() == b"z"


def test_global_pax_header_applies_to_later_members(tmp_path: Path) -> None:
    data = tar_bytes(
        [f("a", b"1"), f("b", b"2")], pax_headers={"SCHILY.xattr.user.global": "g", "uid": "77"}
    )
    t = extract(data, tmp_path / "t")
    for n in ("a", "b"):
        assert os.getxattr(t / n, "user.global") == b"g"
        assert os.lstat(t / n).st_uid == 77


def test_normalized_names(tmp_path: Path) -> None:
    data = tar_bytes([f("./a", b"1"), f("/abs/b", b"2"), f(".//c//d/./e", b"3"), d("./")])
    t = extract(data, tmp_path / "t")
    assert (t / "a").read_bytes() == b"1"
    assert (t / "abs/b").read_bytes() == b"2"
    assert (t / "c/d/e").read_bytes() == b"3"


def test_implicit_parents_are_deterministic(tmp_path: Path) -> None:
    t = extract(tar_bytes([f("x/y/z", b"1")]), tmp_path / "t")
    st = os.lstat(t / "x/y")
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_mtime_ns == 0


def test_later_member_replaces_earlier(tmp_path: Path) -> None:
    data = tar_bytes(
        [
            f("a", b"old"),
            f("a", b"new"),
            d("b"),
            f("b/x", b"1"),
            f("b", b"file now"),
            sym("c", "a"),
            f("c", b"not a link"),
        ]
    )
    t = extract(data, tmp_path / "t")
    assert (t / "a").read_bytes() == b"new"
    assert (t / "b").read_bytes() == b"file now"
    assert not os.path.islink(t / "c") and (t / "c").read_bytes() == b"not a link"


@pytest.mark.parametrize("order", ["marker-first", "marker-last"])
def test_whiteouts_and_opaque_dirs(tmp_path: Path, order: str) -> None:
    marker = f("etc/.wh..wh..opq", b"")
    siblings = [f("etc/new", b"n"), f("etc/.wh.gone", b"")]
    members = (
        [d("etc"), marker, *siblings] if order == "marker-first" else [d("etc"), *siblings, marker]
    )
    members += [d("usr"), f("usr/.wh.doc", b"", mode=0o600, uid=3, mtime=1_650_000_000)]
    t = extract(tar_bytes(members), tmp_path / "t")
    assert os.getxattr(t / "etc", "trusted.overlay.opaque") == b"y"
    assert (t / "etc/new").read_bytes() == b"n"
    assert not os.path.lexists(t / "etc/gone")  # never a whiteout inside an opaque dir
    assert not os.path.lexists(t / "etc/.wh.gone")
    wh = os.lstat(t / "usr/doc")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert wh.st_uid == 3 and wh.st_mtime_ns == 1_650_000_000 * 10**9
    assert not os.path.lexists(t / "usr/.wh.doc")


def test_opaque_marker_for_dir_not_in_archive(tmp_path: Path) -> None:
    t = extract(tar_bytes([f("a/b/.wh..wh..opq", b"")]), tmp_path / "t")
    assert os.getxattr(t / "a/b", "trusted.overlay.opaque") == b"y"


def test_user_xattr_namespace(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    data = tar_bytes([d("x"), f("x/.wh..wh..opq", b"")])
    tarimport.extract(io.BytesIO(data), str(tmp_path / "t"), xattr_ns="user", privileged=True)
    assert os.getxattr(tmp_path / "t/x", "user.overlay.opaque") == b"y"


def _pipe(data: bytes) -> Iterator[io.BufferedReader]:
    r, w = os.pipe()

    def feed() -> None:
        with open(w, "wb") as out:
            out.write(data)

    th = threading.Thread(target=feed)
    th.start()
    with open(r, "rb") as src:
        yield src
    th.join()


@pytest.mark.parametrize("comp", ["plain", "gzip", "zstd", "xz"])
@pytest.mark.parametrize("via", ["file", "pipe"])
def test_compressions_from_file_and_pipe(tmp_path: Path, comp: str, via: str) -> None:
    raw = tar_bytes([d("a"), f("a/b", os.urandom(300_000))])
    data = {
        "plain": raw,
        "gzip": gzip.compress(raw),
        "zstd": zstandard.ZstdCompressor().compress(raw),
        "xz": lzma.compress(raw),
    }[comp]
    dest = tmp_path / "t"
    if via == "file":
        p = tmp_path / "in.tar"
        p.write_bytes(data)
        with open(p, "rb") as src:
            extract(src, dest)  # type: ignore[arg-type]
    else:
        for src in _pipe(data):
            extract(src, dest)  # type: ignore[arg-type]
    assert (dest / "a/b").stat().st_size == 300_000


def test_gnu_tar_sparse_formats(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "sparse"
    with open(sparse, "wb") as fh:
        fh.seek(50 * 1024 * 1024)
        fh.write(b"middle")
        fh.seek(100 * 1024 * 1024)
        fh.write(b"end")
    for fmt in ("gnu", "pax", "posix"):
        out = tmp_path / f"{fmt}.tar"
        subprocess.run(
            ["tar", "--sparse", f"--format={fmt}", "-cf", str(out), "-C", str(src), "."], check=True
        )
        with open(out, "rb") as fh:
            t = extract(fh, tmp_path / f"t-{fmt}")  # type: ignore[arg-type]
        st = os.lstat(t / "sparse")
        assert st.st_size == 100 * 1024 * 1024 + 3
        assert st.st_blocks * 512 < 10 * 1024 * 1024  # still sparse on disk
        with open(t / "sparse", "rb") as fh:
            fh.seek(50 * 1024 * 1024)
            assert fh.read(6) == b"middle"
            fh.seek(100 * 1024 * 1024)
            assert fh.read() == b"end"


class _Zeros(io.RawIOBase):
    """A tar stream of one file of ``size`` zero bytes, generated on the fly (no disk)."""

    def __init__(self, header: bytes, size: int) -> None:
        self.parts = [header]
        self.left = size + (-size % 512) + 1024
        self.size = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: object) -> int:
        view = memoryview(b).cast("B")  # type: ignore[arg-type]
        if self.parts:
            h = self.parts.pop()
            view[: len(h)] = h
            return len(h)
        n = min(len(view), self.left)
        view[:n] = bytes(n)
        self.left -= n
        return n


@pytest.mark.slow
def test_file_over_8_gib_import_and_export(tmp_path: Path) -> None:
    shm = Path("/dev/shm") / f"tophan-test-{os.getpid()}"
    size = 8 * 1024**3 + 4096 + 7
    head = ti("big", pax={"size": str(size)})
    head.size = 0
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(head)
    header = buf.getvalue()[: -1024 * 1]  # without the end-of-archive blocks tarfile adds
    header = header[: len(header) - (len(header) % 512)]
    try:
        extract(io.BufferedReader(_Zeros(header, size), 1 << 20), shm)  # type: ignore[arg-type]
        assert os.lstat(shm / "big").st_size == size

        class Head(io.RawIOBase):
            def __init__(self) -> None:
                self.kept = b""
                self.total = 0

            def writable(self) -> bool:
                return True

            def write(self, b: object) -> int:
                mv = memoryview(b).cast("B")  # type: ignore[arg-type]
                if len(self.kept) < 2048:
                    self.kept += bytes(mv[: 2048 - len(self.kept)])
                self.total += len(mv)
                return len(mv)

        out = Head()
        _, total = tarexport.write_tar(str(shm), out, xattr_ns="trusted")  # type: ignore[arg-type]
        assert b"size=%d\n" % size in out.kept
        assert total == out.total == 512 * 3 + size + (-size % 512) + 1024
    finally:
        subprocess.run(["rm", "-rf", str(shm)], check=True)


def test_devices_need_privilege_but_whiteout_devices_dont(tmp_path: Path) -> None:
    wh = _dev("wh", 0, 0)
    wh.mode = 0o000
    t = extract(tar_bytes([(wh, None)]), tmp_path / "t", privileged=False)
    assert os.lstat(t / "wh").st_rdev == 0
