"""Hostile archives: refused with one clear line, nothing written outside the layer, and (through
the store) no layer and no staging dir left behind."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from tarbuild import d, f, hard, sym, tar_bytes, ti
from tophan import ArchiveError, Store
from tophan.layer import tarimport


def _gnu_longname_symlink_escape() -> bytes:
    long = "l" * 120
    return tar_bytes([sym(long, "/etc"), f(f"{long}/passwd", b"owned")], fmt=tarfile.GNU_FORMAT)


def _truncated_mid_data() -> bytes:
    return tar_bytes([f("a", os.urandom(10_000))])[:3000]


def _truncated_mid_header() -> bytes:
    return tar_bytes([f("a", b"1"), f("b", b"2")])[: 1024 + 300]


def _bad_checksum() -> bytes:
    data = bytearray(tar_bytes([f("a", b"1"), f("b", b"2")]))
    data[1024 + 10] ^= 0xFF  # the second header's name
    return bytes(data)


def _huge_pax() -> bytes:
    t = ti("PaxHeaders/x", tarfile.XHDTYPE)
    t.size = 1 << 40
    header = bytearray(t.tobuf(format=tarfile.GNU_FORMAT))  # base-256 size
    return bytes(header) + b"30 path=aaaaaaaaaaaaaaaaaaaaa\n".ljust(512, b"\0")


def _dev() -> bytes:
    t = ti("dev/sda", tarfile.BLKTYPE)
    t.devmajor, t.devminor = 8, 0
    return tar_bytes([d("dev"), (t, None)])


HOSTILE: dict[str, tuple[bytes, str]] = {
    "dotdot": (tar_bytes([f("../escape", b"x")]), "escapes"),
    "dotdot-deep": (tar_bytes([d("a"), f("a/b/../../../escape", b"x")]), "escapes"),
    "symlink-abs-then-child": (tar_bytes([sym("l", "/etc"), f("l/passwd", b"x")]), "symlink"),
    "symlink-dotdot-then-child": (tar_bytes([sym("l", ".."), f("l/escape", b"x")]), "symlink"),
    "symlink-then-child-via-pax-path": (
        tar_bytes([sym("l", "/tmp"), f("placeholder", b"x", pax={"path": "l/escape"})]),
        "symlink",
    ),
    "symlink-then-child-via-gnu-longname": (_gnu_longname_symlink_escape(), "symlink"),
    "symlink-then-dir-member": (tar_bytes([sym("l", "/"), d("l/etc")]), "symlink"),
    "hardlink-dotdot": (tar_bytes([hard("h", "../../etc/passwd")]), "escapes"),
    "hardlink-absolute-missing": (tar_bytes([hard("h", "/etc/passwd")]), "hardlink"),
    "hardlink-through-symlink": (
        tar_bytes([sym("l", "/etc"), hard("h", "l/passwd")]),
        "hardlink",
    ),
    "hardlink-to-dir": (tar_bytes([d("x"), hard("h", "x")]), "directory"),
    "hardlink-missing": (tar_bytes([hard("h", "nothing")]), "hardlink"),
    "truncated-mid-data": (_truncated_mid_data(), "truncated"),
    "truncated-mid-header": (_truncated_mid_header(), "truncated"),
    "empty": (b"", "empty"),
    "garbage": (os.urandom(4096), "not a tar"),
    "text": (b"hello world\n" * 100, "not a tar"),
    "huge-pax-header": (_huge_pax(), "absurd"),
    "bad-checksum": (_bad_checksum(), "checksum"),
    "nul-in-pax-path": (tar_bytes([f("a", b"x", pax={"path": "a\x00b"})]), "NUL"),
}


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """A dest dir inside a parent whose other contents must stay untouched."""
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "sentinel").write_text("untouched")
    (tmp_path / "etc").mkdir()
    dest = parent / "dest"
    dest.mkdir()
    return parent, dest


def _outside(tmp_path: Path, dest: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not p.startswith(str(dest)):
                out.add(os.path.relpath(p, tmp_path))
    return out


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused(case: str, tmp_path: Path, sandbox: tuple[Path, Path]) -> None:
    data, needle = HOSTILE[case]
    parent, dest = sandbox
    before = _outside(tmp_path, dest)
    with pytest.raises(ArchiveError) as info:
        tarimport.extract(io.BytesIO(data), str(dest), xattr_ns="trusted", privileged=True)
    msg = str(info.value)
    assert "\n" not in msg
    assert needle.lower() in msg.lower(), msg
    assert _outside(tmp_path, dest) == before
    assert (parent / "sentinel").read_text() == "untouched"
    assert not os.path.exists("/etc/escape") and not os.path.exists("/tmp/escape")


def test_device_refused_unprivileged(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    with pytest.raises(ArchiveError, match="needs root"):
        tarimport.extract(
            io.BytesIO(_dev()), str(tmp_path / "t"), xattr_ns="user", privileged=False
        )


def test_absolute_names_stay_inside(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    data = tar_bytes([f("/etc/escape-test", b"x"), f("a", b"y"), hard("/h", "/a")])
    stats = tarimport.extract(
        io.BytesIO(data), str(tmp_path / "t"), xattr_ns="trusted", privileged=True
    )
    assert (tmp_path / "t/etc/escape-test").read_bytes() == b"x"
    assert (tmp_path / "t/h").stat().st_ino == (tmp_path / "t/a").stat().st_ino
    assert not os.path.exists("/etc/escape-test")
    assert stats.absolute_names == 3  # two members and a hardlink target: the caller says so


STRICT: dict[str, tuple[bytes, str]] = {
    "absolute": (tar_bytes([f("/abs/p", b"x")]), "absolute"),
    "absolute-gnu-longname": (
        tar_bytes([f("/" + "a" * 120 + "/evil", b"x")], fmt=tarfile.GNU_FORMAT),
        "absolute",
    ),
    "absolute-pax-path": (tar_bytes([f("placeholder", b"x", pax={"path": "/pax/p"})]), "absolute"),
    "absolute-hardlink-target": (tar_bytes([f("a", b"x"), hard("h", "/a")]), "absolute"),
    "file-over-symlink": (tar_bytes([sym("evil", "/tmp/elsewhere"), f("evil", b"x")]), "symlink"),
}


@pytest.mark.parametrize("case", sorted(STRICT))
def test_strict_keeps_overlayds_contract(case: str, tmp_path: Path) -> None:
    """Through the overlayd entry point: refused, where tophan strips (and GNU tar replaces)."""
    data, needle = STRICT[case]
    (tmp_path / "t").mkdir()
    with pytest.raises(ArchiveError, match=needle):
        tarimport.extract(
            io.BytesIO(data), str(tmp_path / "t"), xattr_ns="trusted", privileged=True, strict=True
        )
    (tmp_path / "u").mkdir()
    tarimport.extract(io.BytesIO(data), str(tmp_path / "u"), xattr_ns="trusted", privileged=True)
    assert not os.path.exists("/tmp/elsewhere")


def test_file_over_symlink_replaces_the_link(tmp_path: Path) -> None:
    """GNU tar's rule (tophan's): the later member wins, and nothing is written through the link."""
    (tmp_path / "t").mkdir()
    outside = tmp_path / "outside"
    data = tar_bytes([sym("evil", str(outside)), f("evil", b"inside")])
    tarimport.extract(io.BytesIO(data), str(tmp_path / "t"), xattr_ns="trusted", privileged=True)
    assert not (tmp_path / "t/evil").is_symlink()
    assert (tmp_path / "t/evil").read_bytes() == b"inside"
    assert not outside.exists()


def test_symlink_pointing_out_is_fine_as_long_as_nothing_goes_through_it(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    data = tar_bytes([sym("etc-link", "/etc"), sym("up", "../../..")])
    tarimport.extract(io.BytesIO(data), str(tmp_path / "t"), xattr_ns="trusted", privileged=True)
    assert os.readlink(tmp_path / "t/etc-link") == "/etc"


@pytest.mark.parametrize("case", ["dotdot", "truncated-mid-data", "garbage", "empty"])
def test_refused_import_leaves_no_layer_and_no_staging(case: str, tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    with pytest.raises(ArchiveError):
        store.layers.import_tar(io.BytesIO(HOSTILE[case][0]), "bad")
    assert store.layers.all() == []
    assert os.listdir(tmp_path / "s/tmp") == []
    assert os.listdir(tmp_path / "s/layers") == []
