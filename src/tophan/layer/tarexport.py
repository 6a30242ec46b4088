"""Layer tree -> canonical tar, and the layer digest (the OCI DiffID) that is its SHA-256.

The rules are in docs/layer-format.md; the same tree always gives the same bytes, whatever the
readdir order, umask or clock. Headers are built by hand (``tarfile`` is several times slower and
would not let us control every byte).
"""

from __future__ import annotations

import hashlib
import os
import stat

from tophan.errors import TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~8 ms at start-up; annotations need no import
    from collections.abc import Iterator
    from typing import IO, Literal

    XattrNs = Literal["trusted", "user"]

BLOCK = 512
CHUNK = 1 << 20
BATCH = 2 * CHUNK + 4 * 512  # a batch: under CHUNK pending, plus one part of up to CHUNK
ZERO_BLOCK = bytes(BLOCK)
OCTAL7_MAX = 0o7777777  # uid/gid/mode fields
OCTAL11_MAX = 0o77777777777  # size/mtime fields
OWNER_XATTR = b"user.tophan.owner"
OPAQUE_ENTRY = b".wh..wh..opq"


class NoGC:
    """``with NoGC():`` pauses the cyclic garbage collector for a bulk operation.

    Import and commit allocate one small acyclic object per entry; the collector's passes over
    them cost ~10% of an import of 10,000 files and free nothing.
    """

    def __enter__(self) -> None:
        import gc

        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        import gc

        if self.was:
            gc.enable()


_ZEROS = bytes(BLOCK)


class _Sink:
    """Hashes everything and (optionally) writes it, in batches of about CHUNK bytes.

    Parts are copied into a reused buffer, one batch at a time: a fresh 1 MiB object per
    batch costs a page fault per 4 KiB on every batch, which showed as a quarter of an import's
    time in a fresh process.
    """

    def __init__(self, out: IO[bytes] | None) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.parts: list[bytes | bytearray | memoryview] = []
        self.pending = 0
        self.size = 0
        self.buf = bytearray(BATCH)

    def add(self, data: bytes | bytearray | memoryview, zeros: int = 0) -> None:
        """Append ``data`` and then ``zeros`` zero bytes (a block's padding)."""
        self.parts.append(data)
        self.pending += len(data)
        if zeros:
            self.parts.append(_ZEROS[:zeros])
            self.pending += zeros
        if self.pending >= CHUNK:
            self.flush()

    def fill(self, buf: bytearray) -> memoryview:
        """Copy the pending parts into ``buf``; returns the filled part."""
        n = 0
        for part in self.parts:
            end = n + len(part)
            buf[n:end] = part
            n = end
        self.parts = []
        self.pending = 0
        self.size += n
        return memoryview(buf)[:n]

    def big(self, data: bytes | memoryview) -> None:
        self.flush()
        self.h.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)

    def flush(self) -> None:
        if self.parts:
            with self.fill(self.buf) as view:
                self.h.update(view)
                if self.out is not None:
                    self.out.write(view)


class ThreadedSink(_Sink):
    """Hash-only, on another thread (hashlib releases the GIL), so hashing overlaps the
    caller's I/O on a second core. Batches travel in a small pool of reused buffers."""

    POOL = 4

    def __init__(self) -> None:
        import queue
        import threading

        super().__init__(None)
        self.q: queue.Queue[tuple[bytes | bytearray, int] | None] = queue.Queue()
        self.free: queue.Queue[bytearray] = queue.Queue()
        self.free.put(self.buf)
        for _ in range(self.POOL - 1):
            self.free.put(bytearray(BATCH))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            data, n = item
            with memoryview(data) as view:
                self.h.update(view[:n])
            if isinstance(data, bytearray):
                self.free.put(data)

    def big(self, data: bytes | memoryview) -> None:
        self.flush()
        self.size += len(data)
        blob = data if isinstance(data, bytes) else bytes(data)
        self.q.put((blob, len(blob)))

    def chunk(self, buf: bytearray, n: int) -> None:
        """Hash ``buf[:n]``, a buffer taken from ``self.free``; it goes back there after."""
        self.flush()
        self.size += n
        self.q.put((buf, n))

    def flush(self) -> None:
        if self.parts:
            buf = self.free.get()
            n = len(self.fill(buf))
            self.q.put((buf, n))

    def finish(self) -> tuple[str, int]:
        self.add(ZERO_BLOCK * 2)
        self.flush()
        self.q.put(None)
        self.thread.join()
        return "sha256:" + self.h.hexdigest(), self.size

    def cancel(self) -> None:
        self.parts = []
        self.q.put(None)
        self.thread.join()


_MAGIC_SUM = sum(b"ustar\x0000") + 8 * 32  # + the checksum field, counted as eight spaces
_TAIL_MAGIC = b"ustar\x0000" + bytes(64)  # magic, version, empty uname and gname
_PAD = bytes(167)  # prefix + padding


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
    name = name[:100]
    linkname = linkname[:100]
    nums = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime)
    devs = b"%07o\0%07o\0" % (devmajor, devminor)
    # Summing only the non-constant bytes: the zero padding adds nothing.
    chksum = sum(name) + sum(nums) + typeflag[0] + sum(linkname) + sum(devs) + _MAGIC_SUM
    return b"".join(
        (
            name.ljust(100, b"\0"),
            nums,
            b"%06o\0 " % chksum,
            typeflag,
            linkname.ljust(100, b"\0"),
            _TAIL_MAGIC,
            devs,
            _PAD,
        )
    )


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


class Node:
    """What the canonical tar says about one path: built from disk by export, and from the
    archive by import (so an import needs no second pass over the tree to know its digest).

    Regular files that share one Node object are hardlinks of each other.
    """

    __slots__ = (
        "data",
        "gid",
        "kind",
        "link",
        "mode",
        "mtime_ns",
        "opaque",
        "rdev",
        "size",
        "uid",
        "xattrs",
    )

    def __init__(
        self,
        kind: str,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        xattrs: dict[bytes, bytes],
        size: int = 0,
        link: bytes = b"",
        rdev: int = 0,
        data: bytes | memoryview | None = None,
    ) -> None:
        self.kind = kind  # one of KINDS
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.xattrs = xattrs  # sorted by key, overlay and owner xattrs excluded
        self.size = size
        self.link = link  # a symlink's target
        self.rdev = rdev
        self.data = data  # a regular file's content when held in memory
        self.opaque = False


# d dir, f file, l symlink, c char device, b block device, p fifo, w whiteout
_TYPEFLAGS = {"d": b"5", "f": b"0", "l": b"2", "c": b"3", "b": b"4", "p": b"6", "w": b"0"}


def filtered_xattrs(path: bytes) -> dict[bytes, bytes]:
    """A path's xattrs, sorted, without overlayfs' own (which never belong to a layer)."""
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


def take_owner(xattrs: dict[bytes, bytes], st: os.stat_result) -> tuple[int, int]:
    """The owner export reports: ``user.tophan.owner`` if present (removed from ``xattrs``:
    it is ours, never exported), else the file's own (:func:`stored_owner`)."""
    recorded = parse_owner(xattrs.pop(OWNER_XATTR, None))
    return recorded if recorded is not None else stored_owner(st)


def parse_owner(raw: bytes | None) -> tuple[int, int] | None:
    """A ``user.tophan.owner`` value (``b"UID:GID"``), or None if absent or malformed."""
    if raw:
        try:
            u, g = raw.split(b":")
            return int(u), int(g)
        except ValueError:
            pass
    return None


def stored_owner(st: os.stat_result) -> tuple[int, int]:
    """A file's own owner as a layer means it. For an unprivileged process its own ids are
    root's: a rootless store is its user's, whose containers map that user to root (and as
    root of such a namespace, the ids read 0 already). Per call, not cached: a process may
    become root of a user namespace after a fork (``userns.call_mapped``)."""
    uid, gid = st.st_uid, st.st_gid
    euid = os.geteuid()
    if euid != 0:
        uid = 0 if uid == euid else uid
        gid = 0 if gid == os.getegid() else gid
    return uid, gid


def node_from_disk(path: bytes, st: os.stat_result, opaque_key: str) -> Node | None:
    """The Node of one on-disk entry (None for sockets, which tar cannot hold)."""
    m = st.st_mode
    xattrs = filtered_xattrs(path)
    uid, gid = take_owner(xattrs, st)
    mode = stat.S_IMODE(m)
    if stat.S_ISREG(m):
        return Node("f", mode, uid, gid, st.st_mtime_ns, xattrs, size=st.st_size)
    if stat.S_ISDIR(m):
        node = Node("d", mode, uid, gid, st.st_mtime_ns, xattrs)
        try:
            node.opaque = os.getxattr(path, opaque_key, follow_symlinks=False) == b"y"
        except OSError:
            pass
        return node
    if stat.S_ISLNK(m):
        return Node("l", mode, uid, gid, st.st_mtime_ns, xattrs, link=os.readlink(path))
    if stat.S_ISCHR(m):
        kind = "w" if st.st_rdev == 0 else "c"
        return Node(kind, mode, uid, gid, st.st_mtime_ns, xattrs, rdev=st.st_rdev)
    if stat.S_ISBLK(m):
        return Node("b", mode, uid, gid, st.st_mtime_ns, xattrs, rdev=st.st_rdev)
    if stat.S_ISFIFO(m):
        return Node("p", mode, uid, gid, st.st_mtime_ns, xattrs)
    return None


class Writer:
    """Emits canonical entries, in the order it is given them (the caller sorts)."""

    def __init__(self, tree: bytes, sink: _Sink) -> None:
        self.tree = tree
        self.sink = sink
        self.links: dict[object, bytes] = {}
        self.readbuf = bytearray(CHUNK)

    def header(
        self,
        name: bytes,
        typeflag: bytes,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        xattrs: dict[bytes, bytes],
        size: int = 0,
        linkname: bytes = b"",
        rdev: int = 0,
    ) -> None:
        sec, frac = divmod(mtime_ns, 1_000_000_000)
        if (
            not xattrs
            and len(name) <= 100
            and len(linkname) <= 100
            and size <= OCTAL11_MAX
            and uid <= OCTAL7_MAX
            and gid <= OCTAL7_MAX
            and 0 <= sec <= OCTAL11_MAX
            and typeflag not in (b"3", b"4")
        ):
            # The common case, kept cheap: at most an mtime record (a file's nanoseconds).
            head = _header(name, mode, uid, gid, size, sec, typeflag, linkname)
            if frac:
                rec = _pax_record(b"mtime", b"%d.%09d" % (sec, frac))
                base = name.rstrip(b"/").rsplit(b"/", 1)[-1]
                pax_head = _header(b"PaxHeaders/" + base, 0o644, 0, 0, len(rec), 0, b"x")
                self.sink.add(b"".join((pax_head, rec, _ZEROS[: -len(rec) % BLOCK], head)))
            else:
                self.sink.add(head)
            return
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
            pax[b"SCHILY.xattr." + key] = value
        if pax:
            records = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
            base = name.rstrip(b"/").rsplit(b"/", 1)[-1]
            pad = bytes(-len(records) % BLOCK)
            self.sink.add(
                _header(b"PaxHeaders/" + base, 0o644, 0, 0, len(records), 0, b"x") + records + pad
            )
        dev = (os.major(rdev), os.minor(rdev)) if typeflag in (b"3", b"4") else (0, 0)
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
                *dev,
            )
        )

    def file_start(self, rel: bytes, node: Node) -> None:
        """The header of a regular file whose content the caller adds (``sink.add/big``)."""
        self.links[id(node)] = rel
        self.header(rel, b"0", node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs, node.size)

    def emit(self, rel: bytes, node: Node, link_key: object) -> None:
        """One entry (plus its opaque marker); ``link_key`` identifies a regular file's inode."""
        k = node.kind
        if k == "w":
            parent, _, base = rel.rpartition(b"/")
            name = parent + b"/.wh." + base if parent else b".wh." + base
            self.header(name, b"0", node.mode, node.uid, node.gid, node.mtime_ns, {})
            return
        if k == "d":
            self.header(rel + b"/", b"5", node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs)
            if node.opaque:
                self.header(rel + b"/" + OPAQUE_ENTRY, b"0", 0o644, 0, 0, 0, {})
            return
        if k == "f":
            first = self.links.get(link_key)
            if first is not None:
                self.header(
                    rel,
                    b"1",
                    node.mode,
                    node.uid,
                    node.gid,
                    node.mtime_ns,
                    node.xattrs,
                    linkname=first,
                )
                return
            self.links[link_key] = rel
            self.header(
                rel, b"0", node.mode, node.uid, node.gid, node.mtime_ns, node.xattrs, node.size
            )
            if node.data is not None:
                self.sink.add(node.data, -node.size % BLOCK)
            else:
                self.content(self.tree + b"/" + rel, node.size, rel)
            return
        self.header(
            rel,
            _TYPEFLAGS[k],
            node.mode,
            node.uid,
            node.gid,
            node.mtime_ns,
            node.xattrs,
            linkname=node.link,
            rdev=node.rdev,
        )

    def walk(self, rel: bytes, opaque_key: str, in_opaque: bool = False) -> None:
        """Emit the tree below ``rel`` depth first, entries in name order. Iterative (a stack
        of directories being listed), so a legal tree of any depth is walked."""
        stack = [(rel, in_opaque, self._entries(rel))]
        while stack:
            rel, in_opaque, entries = stack[-1]
            e = next(entries, None)
            if e is None:
                stack.pop()
                continue
            child = rel + b"/" + e.name if rel else e.name
            st = e.stat(follow_symlinks=False)
            node = node_from_disk(e.path, st, opaque_key)
            if node is None or (node.kind == "w" and in_opaque):
                continue  # sockets; whiteouts an opaque dir makes meaningless
            key = (st.st_dev, st.st_ino) if st.st_nlink > 1 else child
            self.emit(child, node, key)
            if node.kind == "d":
                stack.append((child, node.opaque, self._entries(child)))

    def _entries(self, rel: bytes) -> Iterator[os.DirEntry[bytes]]:
        path = self.tree + b"/" + rel if rel else self.tree
        with os.scandir(path) as it:
            return iter(sorted(it, key=lambda e: e.name))

    def content(self, path: bytes, size: int, rel: bytes) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if size <= CHUNK:
                data = os.read(fd, size + 1) if size else b""
                if len(data) != size:
                    raise _changed(rel)
                self.sink.add(data, -size % BLOCK)
                return
            else:
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
        finally:
            os.close(fd)
        self.sink.add(bytes(-size % BLOCK))


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
    with NoGC():
        Writer(os.fsencode(tree), sink).walk(b"", f"{xattr_ns}.overlay.opaque")
    sink.add(ZERO_BLOCK * 2)
    sink.flush()
    return "sha256:" + sink.h.hexdigest(), sink.size


def write_nodes(tree: str, nodes: dict[bytes, Node], out: IO[bytes] | None) -> tuple[str, int]:
    """The canonical tar of a tree described by ``nodes`` (relative path -> Node), as
    :func:`write_tar` would write it from disk; file content not held in a Node is read from
    ``tree``. Import uses this to know a layer's digest without a second pass over the tree."""
    sink = _Sink(out) if out is not None else ThreadedSink()
    writer = Writer(os.fsencode(tree), sink)
    opaque: set[bytes] = set()
    try:
        for rel in sorted(nodes, key=lambda r: r.split(b"/")):
            node = nodes[rel]
            if node.kind == "w" and rel.rpartition(b"/")[0] in opaque:
                continue
            writer.emit(rel, node, id(node) if node.kind == "f" else rel)
            if node.opaque:
                opaque.add(rel)
    except BaseException:
        if isinstance(sink, ThreadedSink):
            sink.cancel()
        raise
    if isinstance(sink, ThreadedSink):
        return sink.finish()
    sink.add(ZERO_BLOCK * 2)
    sink.flush()
    return "sha256:" + sink.h.hexdigest(), sink.size


def digest_tree(tree: str, *, xattr_ns: XattrNs) -> str:
    return write_tar(tree, None, xattr_ns=xattr_ns)[0]


def export(tree: str, out: IO[bytes], *, xattr_ns: XattrNs, compress: str | None = None) -> str:
    """Write the canonical tar, compressed if asked; returns the *uncompressed* digest."""
    if compress is None:
        return write_tar(tree, out, xattr_ns=xattr_ns)[0]
    from tophan._internal import compression

    with compression.compressor(compress, out) as z:
        return write_tar(tree, z, xattr_ns=xattr_ns)[0]
