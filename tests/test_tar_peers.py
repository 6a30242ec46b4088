"""Round trips with real peers: umoci (OCI layers with whiteouts) and GNU tar (pax, xattrs)."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tarbuild import snapshot
from tophan.layer import tarexport, tarimport

pytestmark = pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed")


def run(*argv: str, cwd: Path | None = None) -> None:
    subprocess.run(argv, check=True, cwd=cwd, capture_output=True)


def last_layer_blob(layout: Path, tag: str) -> Path:
    index = json.loads((layout / "index.json").read_text())
    desc = next(
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag
    )
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_text())
    return layout / "blobs" / "sha256" / manifest["layers"][-1]["digest"][7:]


def rich_tree(root: Path) -> Path:
    (root / "d/sub").mkdir(parents=True)
    (root / "d/file").write_bytes(b"content\n")
    os.link(root / "d/file", root / "d/hard")
    (root / "d/link").symlink_to("file")
    os.mkfifo(root / "fifo")
    (root / "suid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "suid", 0o4755)
    os.chown(root / "d/sub", 1000, 1001)
    os.setxattr(root / "d/file", "user.note", b"kept")
    os.setxattr(
        root / "d/file",
        "security.capability",
        bytes.fromhex("0100000200040000000000000000000000000000"),
    )
    (root / ("long" * 40)).write_text("long name")
    os.utime(root / "d/file", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    return root


def test_umoci_layer_with_whiteouts_imports(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:t")
    bundle = tmp_path / "b1"
    run("umoci", "unpack", "--image", f"{layout}:t", str(bundle))
    rootfs = bundle / "rootfs"
    (rootfs / "keep").write_text("keep")
    (rootfs / "gone").write_text("gone")
    (rootfs / "dir/inner").mkdir(parents=True)
    (rootfs / "dir/inner/f").write_text("f")
    run("umoci", "repack", "--image", f"{layout}:t", str(bundle))
    bundle2 = tmp_path / "b2"
    run("umoci", "unpack", "--image", f"{layout}:t", str(bundle2))
    (bundle2 / "rootfs/gone").unlink()
    shutil.rmtree(bundle2 / "rootfs/dir")
    (bundle2 / "rootfs/added").write_text("added")
    run("umoci", "repack", "--image", f"{layout}:t2", str(bundle2))
    blob = last_layer_blob(layout, "t2")
    dest = tmp_path / "layer"
    dest.mkdir()
    with open(blob, "rb") as src:
        stats = tarimport.extract(src, str(dest), xattr_ns="trusted", privileged=True)
    assert stats.digest == tarexport.digest_tree(str(dest), xattr_ns="trusted")
    for name in ("gone", "dir"):
        st = os.lstat(dest / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert (dest / "added").read_text() == "added"
    assert not (dest / "keep").exists()


def test_our_export_applies_in_umoci(tmp_path: Path) -> None:
    layout = tmp_path / "img"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:t")
    bundle = tmp_path / "b1"
    run("umoci", "unpack", "--image", f"{layout}:t", str(bundle))
    (bundle / "rootfs/etc").mkdir()
    (bundle / "rootfs/etc/passwd").write_text("root:x:0:0::/:/bin/sh\n")
    (bundle / "rootfs/etc/motd").write_text("hi\n")
    (bundle / "rootfs/opq").mkdir()
    (bundle / "rootfs/opq/old").write_text("old")
    run("umoci", "repack", "--image", f"{layout}:t", str(bundle))
    # our layer: delete etc/passwd, make opq opaque with new content, add a file
    tree = tmp_path / "ours"
    (tree / "etc").mkdir(parents=True)
    os.mknod(tree / "etc/passwd", stat.S_IFCHR | 0o600, 0)
    (tree / "opq").mkdir()
    os.setxattr(tree / "opq", "trusted.overlay.opaque", b"y")
    (tree / "opq/new").write_text("new")
    (tree / "etc/added").write_text("added")
    layer_tar = tmp_path / "ours.tar"
    with open(layer_tar, "wb") as out:
        tarexport.write_tar(str(tree), out, xattr_ns="trusted")
    run("umoci", "raw", "add-layer", "--image", f"{layout}:t", "--tag", "t2", str(layer_tar))
    out_bundle = tmp_path / "b2"
    run("umoci", "unpack", "--image", f"{layout}:t2", str(out_bundle))
    r = out_bundle / "rootfs"
    assert not (r / "etc/passwd").exists()
    assert (r / "etc/motd").read_text() == "hi\n"
    assert (r / "etc/added").read_text() == "added"
    assert sorted(os.listdir(r / "opq")) == ["new"]


def test_gnu_tar_pax_xattrs_import_exactly(tmp_path: Path) -> None:
    src = rich_tree(tmp_path / "src")
    tar = tmp_path / "gnu.tar"
    run(
        "tar",
        "--xattrs",
        "--xattrs-include=*",
        "--format=pax",
        "-cf",
        str(tar),
        "-C",
        str(src),
        ".",
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    with open(tar, "rb") as fh:
        stats = tarimport.extract(fh, str(dest), xattr_ns="trusted", privileged=True)
    assert snapshot(dest) == snapshot(src)
    assert stats.digest == tarexport.digest_tree(str(src), xattr_ns="trusted")


def test_our_export_unpacks_exactly_with_gnu_tar(tmp_path: Path) -> None:
    src = rich_tree(tmp_path / "src")
    buf = io.BytesIO()
    tarexport.write_tar(str(src), buf, xattr_ns="trusted")
    tar = tmp_path / "ours.tar"
    tar.write_bytes(buf.getvalue())
    dest = tmp_path / "dest"
    dest.mkdir()
    run("tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-xpf", str(tar), "-C", str(dest))
    assert snapshot(dest) == snapshot(src)
