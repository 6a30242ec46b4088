"""Helpers to build test archives (normal and hostile) and to read trees back."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path


def tar_bytes(
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    fmt: int = tarfile.PAX_FORMAT,
    pax_headers: dict[str, str] | None = None,
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as tf:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def ti(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: float = 1_700_000_000,
    linkname: str = "",
    pax: dict[str, str] | None = None,
) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type = kind
    t.mode = mode
    t.uid, t.gid = uid, gid
    t.mtime = mtime
    t.linkname = linkname
    if pax:
        t.pax_headers = dict(pax)
    return t


def f(name: str, data: bytes = b"", **kw: object) -> tuple[tarfile.TarInfo, bytes | None]:
    return ti(name, tarfile.REGTYPE, **kw), data  # type: ignore[arg-type]


def d(name: str, **kw: object) -> tuple[tarfile.TarInfo, bytes | None]:
    return ti(name, tarfile.DIRTYPE, mode=kw.pop("mode", 0o755), **kw), None  # type: ignore[arg-type]


def sym(name: str, target: str, **kw: object) -> tuple[tarfile.TarInfo, bytes | None]:
    return ti(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw), None  # type: ignore[arg-type]


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return ti(name, tarfile.LNKTYPE, linkname=target), None


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a layer tree says about itself, keyed by relative path (inodes as groups)."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            xattrs = {
                k: os.getxattr(p, k, follow_symlinks=False)
                for k in sorted(os.listxattr(p, follow_symlinks=False))
            }
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            link = None
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                link = inodes.setdefault(st.st_ino, rel)
            out[rel] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns,
                st.st_rdev,
                xattrs,
                content,
                link,
            )
    # directory mtimes compared separately (they are part of the tree too)
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            out[rel] = (*out[rel][:3], os.lstat(p).st_mtime_ns, *out[rel][4:])
    return out
