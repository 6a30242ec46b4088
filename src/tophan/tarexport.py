"""Layer tree -> canonical tar, and the layer digest (the OCI DiffID) that is its SHA-256.

The rules are in docs/layer-format.md; the same tree always gives the same bytes, whatever the
readdir order, umask or clock. Headers are built by hand (``tarfile`` is several times slower and
would not let us control every byte).
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import IO, Literal

from tophan.errors import TophanError

BLOCK = 512
CHUNK = 1 << 20
ZERO_BLOCK = bytes(BLOCK)
OCTAL7_MAX = 0o7777777  # uid/gid/mode fields
OCTAL11_MAX = 0o77777777777  # size/mtime fields
OWNER_XATTR = b"user.tophan.owner"
OPAQUE_ENTRY = b".wh..wh..opq"

XattrNs = Literal["trusted", "user"]


class _Sink:
    """Hashes everything and (optionally) writes it, in large batches."""

    def __init__(self, out: IO[bytes] | None) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.buf = bytearray()
        self.size = 0

    def add(self, data: bytes | bytearray | memoryview) -> None:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()

    def big(self, data: bytes | memoryview) -> None:
        self.flush()
        self.h.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)

    def flush(self) -> None:
        if self.buf:
            self.h.update(self.buf)
            self.size += len(self.buf)
            if self.out is not None:
                self.out.write(self.buf)
            self.buf = bytearray()


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _header(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    head = (
        name[:100].ljust(100, b"\0")
        + _octal(mode, 8)
        + _octal(uid, 8)
        + _octal(gid, 8)
        + _octal(size, 12)
        + _octal(mtime, 12)
    )
    tail = (
        typeflag
        + linkname[:100].ljust(100, b"\0")
        + b"ustar\x0000"
        + bytes(64)  # uname, gname
        + _octal(devmajor, 8)
        + _octal(devminor, 8)
        + bytes(167)  # prefix + pad
    )
    chksum = sum(head) + 256 + sum(tail)  # the checksum field counts as eight spaces
    return head + b"%06o\0 " % chksum + tail


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


def _mtime_text(ns: int) -> bytes:
    sign = b"-" if ns < 0 else b""
    sec, frac = divmod(abs(ns), 1_000_000_000)
    return sign + b"%d.%09d" % (sec, frac)


def _owner(xattrs: dict[bytes, bytes], st: os.stat_result) -> tuple[int, int]:
    raw = xattrs.get(OWNER_XATTR)
    if raw:
        try:
            u, g = raw.split(b":")
            return int(u), int(g)
        except ValueError:
            pass
    return st.st_uid, st.st_gid


class _Writer:
    def __init__(self, tree: bytes, sink: _Sink, opaque_key: bytes) -> None:
        self.tree = tree
        self.sink = sink
        self.opaque_key = opaque_key.decode()
        self.links: dict[tuple[int, int], bytes] = {}
        self.readbuf = bytearray(CHUNK)

    def entry(
        self,
        name: bytes,
        st: os.stat_result,
        typeflag: bytes,
        xattrs: dict[bytes, bytes],
        *,
        size: int = 0,
        linkname: bytes = b"",
        owner: tuple[int, int] | None = None,
        mode: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        uid, gid = owner if owner is not None else _owner(xattrs, st)
        mode = stat.S_IMODE(st.st_mode) if mode is None else mode
        mtime_ns = st.st_mtime_ns if mtime_ns is None else mtime_ns
        sec, frac = divmod(mtime_ns, 1_000_000_000)
        pax: dict[bytes, bytes] = {}
        if len(name) > 100:
            pax[b"path"] = name
        if len(linkname) > 100:
            pax[b"linkpath"] = linkname
        if size > OCTAL11_MAX:
            pax[b"size"] = b"%d" % size
        if uid > OCTAL7_MAX:
            pax[b"uid"] = b"%d" % uid
        if gid > OCTAL7_MAX:
            pax[b"gid"] = b"%d" % gid
        if frac or not 0 <= sec <= OCTAL11_MAX:
            pax[b"mtime"] = _mtime_text(mtime_ns)
        for key, value in xattrs.items():
            if key != OWNER_XATTR:
                pax[b"SCHILY.xattr." + key] = value
        if pax:
            records = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
            base = name.rstrip(b"/").rsplit(b"/", 1)[-1]
            self.sink.add(_header(b"PaxHeaders/" + base, 0o644, 0, 0, len(records), 0, b"x"))
            self.sink.add(records)
            self.sink.add(bytes(-len(records) % BLOCK))
        dev_major = dev_minor = 0
        if typeflag in (b"3", b"4"):
            dev_major, dev_minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        self.sink.add(
            _header(
                name,
                mode,
                uid if uid <= OCTAL7_MAX else 0,
                gid if gid <= OCTAL7_MAX else 0,
                size if size <= OCTAL11_MAX else 0,
                sec if 0 <= sec <= OCTAL11_MAX else 0,
                typeflag,
                linkname,
                dev_major,
                dev_minor,
            )
        )

    def xattrs(self, path: bytes) -> dict[bytes, bytes]:
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return {}
        out = {}
        for n in sorted(names):
            key = n.encode("utf-8", "surrogateescape")
            if key.startswith((b"trusted.overlay.", b"user.overlay.")):
                continue
            try:
                out[key] = os.getxattr(path, n, follow_symlinks=False)
            except OSError:
                continue  # vanished between list and get
        return out

    def is_opaque(self, path: bytes) -> bool:
        try:
            return os.getxattr(path, self.opaque_key, follow_symlinks=False) == b"y"
        except OSError:
            return False

    def walk(self, rel: bytes, opaque: bool = False) -> None:
        path = self.tree + b"/" + rel if rel else self.tree
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            child = rel + b"/" + e.name if rel else e.name
            self.one(child, e.path, e.stat(follow_symlinks=False), e.name, opaque)

    def one(
        self, rel: bytes, path: bytes, st: os.stat_result, base: bytes, in_opaque: bool
    ) -> None:
        m = st.st_mode
        if stat.S_ISCHR(m) and st.st_rdev == 0:
            if in_opaque:
                return  # hides nothing: an opaque dir already hides all below it
            # An overlay whiteout: its own entry, never a hardlink (see docs/layer-format.md).
            parent = rel[: -len(base)]
            xattrs = self.xattrs(path)
            owner = _owner(xattrs, st)
            self.entry(parent + b".wh." + base, st, b"0", {}, owner=owner)
            return
        xattrs = self.xattrs(path)
        if stat.S_ISDIR(m):
            opaque = self.is_opaque(path)
            self.entry(rel + b"/", st, b"5", xattrs)
            if opaque:
                self.entry(
                    rel + b"/" + OPAQUE_ENTRY, st, b"0", {}, owner=(0, 0), mode=0o644, mtime_ns=0
                )
            self.walk(rel, opaque)
        elif stat.S_ISREG(m):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self.links.get(key)
                if first is not None:
                    self.entry(rel, st, b"1", xattrs, linkname=first)
                    return
                self.links[key] = rel
            self.entry(rel, st, b"0", xattrs, size=st.st_size)
            self.content(path, st.st_size, rel)
        elif stat.S_ISLNK(m):
            self.entry(rel, st, b"2", xattrs, linkname=os.readlink(path))
        elif stat.S_ISCHR(m):
            self.entry(rel, st, b"3", xattrs)
        elif stat.S_ISBLK(m):
            self.entry(rel, st, b"4", xattrs)
        elif stat.S_ISFIFO(m):
            self.entry(rel, st, b"6", xattrs)
        # sockets cannot be represented in tar: skipped

    def content(self, path: bytes, size: int, rel: bytes) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if size <= CHUNK:
                data = os.read(fd, size + 1) if size else b""
                if len(data) != size:
                    raise _changed(rel)
                self.sink.add(data)
            else:
                self._stream(fd, size, rel)
        finally:
            os.close(fd)
        self.sink.add(bytes(-size % BLOCK))

    def _stream(self, fd: int, size: int, rel: bytes) -> None:
        view = memoryview(self.readbuf)
        left = size
        while left:
            n = os.readv(fd, [view[: min(left, CHUNK)]])
            if n == 0:
                raise _changed(rel)
            self.sink.big(view[:n])
            left -= n
        if os.read(fd, 1):
            raise _changed(rel)


def _changed(rel: bytes) -> TophanError:
    return TophanError(
        f"{os.fsdecode(rel)} changed size while it was exported",
        "layers are immutable: run `layer verify`",
    )


def write_tar(tree: str, out: IO[bytes] | None, *, xattr_ns: XattrNs) -> tuple[str, int]:
    """Write ``tree``'s canonical tar to ``out`` (None: only hash it).

    Returns ``("sha256:<hex>", uncompressed size)``.
    """
    sink = _Sink(out)
    writer = _Writer(os.fsencode(tree), sink, f"{xattr_ns}.overlay.opaque".encode())
    writer.walk(b"")
    sink.add(ZERO_BLOCK * 2)
    sink.flush()
    return "sha256:" + sink.h.hexdigest(), sink.size


def digest_tree(tree: str, *, xattr_ns: XattrNs) -> str:
    return write_tar(tree, None, xattr_ns=xattr_ns)[0]


def export(tree: str, out: IO[bytes], *, xattr_ns: XattrNs, compress: str | None = None) -> str:
    """Write the canonical tar, compressed if asked; returns the *uncompressed* digest."""
    if compress is None:
        return write_tar(tree, out, xattr_ns=xattr_ns)[0]
    from tophan import compression

    with compression.compressor(compress, out) as z:
        return write_tar(tree, z, xattr_ns=xattr_ns)[0]
