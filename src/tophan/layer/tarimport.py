"""Tar stream -> layer tree, exactly and safely.

Our own streaming parser (``tarfile`` applies no xattrs, buffers pax headers of any declared size
and is slow). It reads ustar/GNU/v7 headers, pax and global pax records, GNU long names, old-GNU
and pax sparse files, base-256 numbers; it translates OCI whiteouts into overlayfs markers.

Hostile input is refused, never followed: ``..`` anywhere, members below a symlink this archive
created, hardlinks leaving the layer or pointing at what is not there, device nodes without
privilege, truncated or absurd headers. The destination is a private staging dir that only we
write to, so our record of what we created there is the truth about it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

from tophan.errors import ArchiveError
from tophan.layer import tarexport
from tophan.layer.tarexport import Node

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~8 ms at start-up; annotations need no import
    from collections.abc import Callable
    from typing import IO, Any, Literal

    XattrNs = Literal["trusted", "user"]

BLOCK = 512
CHUNK = 1 << 20
MAX_META = 1 << 20  # pax / GNU long-name headers larger than this are refused as absurd
KEEP_BUDGET = 256 << 20  # file content held in memory for the digest, instead of re-reading it
OWNER_XATTR = "user.tophan.owner"
WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"

# kinds of what we created
DIR, FILE, LINK, OTHER, WHITEOUT = "d", "f", "l", "o", "w"


class ExtractStats:
    """What an extraction did, and the digest of the layer it produced."""

    def __init__(self) -> None:
        self.members = 0
        self.bytes = 0
        self.xattrs_skipped: list[str] = []
        self.digest = ""  # of the canonical tar of what was extracted (the layer's DiffID)
        self.size = 0  # of that canonical tar
        self.input_digest = ""  # of the (decompressed) input, when asked for
        self.absolute_names = 0  # member names (or hardlink targets) whose leading / was removed


class _Member:
    __slots__ = (
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "mode",
        "mtime_ns",
        "name",
        "realsize",
        "size",
        "sparse",
        "typeflag",
        "uid",
        "xattrs",
    )

    def __init__(
        self,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        size: int,
        mtime_ns: int,
        typeflag: bytes,
        linkname: bytes,
        devmajor: int,
        devminor: int,
        xattrs: dict[str, bytes],
    ) -> None:
        self.name = name
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.mtime_ns = mtime_ns
        self.typeflag = typeflag
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs = xattrs
        self.sparse: list[tuple[int, int]] | None = None
        self.realsize = 0


class _DirMeta:
    __slots__ = ("gid", "mode", "mtime_ns", "uid", "xattrs")

    def __init__(self, mode: int, uid: int, gid: int, mtime_ns: int, xattrs: dict[str, bytes]):
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.xattrs = xattrs


class _Finally:
    """Runs ``fn`` when the block exits by an exception (stops the hashing thread)."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.fn()


def _xattr_bytes(xattrs: dict[str, bytes]) -> dict[bytes, bytes]:
    return {k.encode("utf-8", "surrogateescape"): xattrs[k] for k in sorted(xattrs)}


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


# -- numbers ------------------------------------------------------------------------------------


def _num(field_: bytes, what: str) -> int:
    if not field_[0] & 0x80:
        try:
            return int(field_.rstrip(b"\0 ") or b"0", 8)  # the common case, fast
        except ValueError:
            pass
    if field_ and field_[0] & 0x80:
        if field_[0] == 0xFF:
            raise ArchiveError(f"corrupt tar header: negative {what}")
        value = field_[0] & 0x7F
        for b in field_[1:]:
            value = (value << 8) | b
        return value
    text = field_.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveError(
            f"corrupt tar header: {what} is {text!r}", "not a tar archive?"
        ) from None


def _pax_int(value: bytes, key: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ArchiveError(f"corrupt pax record {key}={value!r}") from None
    if n < 0:
        raise ArchiveError(f"corrupt pax record {key}={value!r}")
    return n


def _pax_time(value: bytes) -> int:
    try:
        text = value.decode("ascii")
        neg = text.startswith("-")
        whole, _, frac = text.lstrip("-").partition(".")
        ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    except ValueError:
        raise ArchiveError(f"corrupt pax mtime {value!r}") from None
    return -ns if neg else ns


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break  # padding
        sp = data.find(b" ", pos)
        if sp < 0:
            raise ArchiveError("corrupt pax header: record without length")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise ArchiveError("corrupt pax header: bad record length") from None
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1] != 0x0A:
            raise ArchiveError("corrupt pax header: record length out of range")
        key, eq, value = data[sp + 1 : end - 1].partition(b"=")
        if not eq:
            raise ArchiveError("corrupt pax header: record without '='")
        out[key] = value
        pos = end
    return out


# -- the stream ---------------------------------------------------------------------------------


def _corrupt(e: Exception) -> ArchiveError:
    return ArchiveError(f"compressed input is corrupt or truncated: {e}", "fetch the file again")


def _truncated(what: str | bytes, missing: int) -> ArchiveError:
    if isinstance(what, bytes):  # a member name: formatted only when it is needed
        what = f"member {_show(what)!r}"
    return ArchiveError(
        f"archive is truncated: {what} needs {missing} more bytes",
        "the file is incomplete; fetch it again",
    )


class _Stream:
    def __init__(self, src: IO[bytes]) -> None:
        self.src = src
        self.offset = 0
        self.tap: _Hasher | None = None  # sees what ``read`` returns (not ``exact_into``'s)
        # Views of the source's own chunks (``tophan.image.images``' pipes), where it has them.
        self.take_src: Callable[[int], memoryview] | None = getattr(src, "take", None)

    def read(self, n: int) -> bytes:
        try:
            data = self.src.read(n) or b""
            while len(data) < n:
                more = self.src.read(n - len(data))
                if not more:
                    break
                data += more
        except Exception as e:  # gzip/zstd/lzma/bz2 each raise their own kinds
            raise _corrupt(e) from e
        self.offset += len(data)
        if self.tap is not None:
            self.tap.raw(data)
        return data

    def exact_into(self, view: memoryview, what: str | bytes) -> None:
        """Fill ``view`` completely from the stream."""
        got = 0
        try:
            while got < len(view):
                n = self.src.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    break
                got += n
        except Exception as e:  # gzip/zstd/lzma/bz2 each raise their own kinds
            raise _corrupt(e) from e
        self.offset += got
        if got != len(view):
            raise _truncated(what, len(view) - got)

    def take(self, n: int, what: str | bytes) -> memoryview:
        """Up to ``n`` bytes (at least one) without a copy; needs ``take_src``."""
        assert self.take_src is not None
        try:
            view = self.take_src(n)
        except Exception as e:  # gzip/zstd/lzma/bz2 each raise their own kinds
            raise _corrupt(e) from e
        if not view:
            raise _truncated(what, n)
        self.offset += len(view)
        return view

    def exact(self, n: int, what: str | bytes) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise _truncated(what, n - len(data))
        return data


# -- the digests --------------------------------------------------------------------------------

_UPDATE, _FORK, _SNAP = 0, 1, 2
_HELD_MAX = 4 * CHUNK  # input held for comparison with the canonical tar, at most


class _Hasher(tarexport._Sink):
    """The SHA-256 of the canonical tar (the layer's digest) and, with ``want_input``, of the
    input itself (to check it against the DiffID it came with), on another thread: hashlib
    releases the GIL, so hashing runs on the other core while this one extracts.

    An archive that *is* the canonical tar (our own exports, so every tophan-to-tophan pull)
    needs one hash for both: while the two streams agree, the canonical bytes are compared with
    the input's (headers and padding: a few hundred bytes a member; contents are the same
    buffers) and hashed once. At the first difference the hash forks (``copy()``) and each
    stream goes on with its own. The input is fed by ``raw`` (what ``_Stream.read`` returns)
    and ``content`` (file data read into this sink's buffers); the canonical tar by ``add``
    and ``content`` (the ``tarexport.ThreadedSink`` interface the :class:`Writer` uses).
    """

    POOL = 4

    def __init__(self, want_input: bool) -> None:
        import queue
        import threading
        from collections import deque

        # Not _Sink.__init__: its batch buffer would be made whether it is needed or not.
        self.out = None
        self.h = hashlib.sha256()
        self.parts = []
        self.pending = 0
        self.size = 0
        self.buf = bytearray()
        self.q: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        # Buffers are made as needed, up to POOL (a fresh one costs a page fault per 4 KiB).
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self.made = 0
        self.hashers: list[Any] = [self.h, None]
        # batches of small parts on their way to hasher 0 (canonical) and 1 (input, forked)
        self.batches: tuple[list[Any], list[Any]] = ([], [])
        self.batched = [0, 0]
        self.canon_on = True
        self.raw_on = want_input
        self.verbatim = want_input  # both streams are one so far (hasher 0)
        self.raw_t = 0  # the input's hasher
        self.held: deque[Any] = deque()  # input not yet matched by the canonical stream
        self.held_off = 0  # into held[0]
        self.held_len = 0
        self.inflight = threading.Semaphore(self.POOL * 2)
        self.thread: threading.Thread | None = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        hashers = self.hashers
        while (item := self.q.get()) is not None:
            op = item[0]
            if op == _UPDATE:
                _, targets, data, n = item
                with memoryview(data) as view:
                    part = view[:n]
                    for t in targets:
                        hashers[t].update(part)
                    part.release()
                if isinstance(data, bytearray):
                    self._free.put(data)
                elif isinstance(data, memoryview):
                    self.inflight.release()
            elif op == _FORK:
                hashers[1] = hashers[0].copy()
            else:
                item[2].put("sha256:" + hashers[item[1]].hexdigest())

    # -- batching ------------------------------------------------------------------------------

    def buffer(self) -> bytearray:
        """A free buffer of ``tarexport.BATCH`` bytes; give it back through ``content``."""
        if self.made < self.POOL and self._free.empty():
            self.made += 1
            return bytearray(tarexport.BATCH)
        return self._free.get()

    def _emit(self, t: int, data: Any) -> None:
        n = len(data)
        if not n:
            return
        if self.batched[t] + n > tarexport.BATCH:
            self._flush(t)
            if n > tarexport.BATCH:
                self.q.put((_UPDATE, (t,), bytes(data), n))
                return
        self.batches[t].append(data)
        self.batched[t] += n
        if self.batched[t] >= CHUNK:
            self._flush(t)

    def _flush(self, t: int) -> None:
        parts = self.batches[t]
        if parts:
            buf = self.buffer()
            n = 0
            for part in parts:
                end = n + len(part)
                buf[n:end] = part
                n = end
            parts.clear()
            self.batched[t] = 0
            self.q.put((_UPDATE, (t,), buf, n))

    def _snap(self, t: int) -> str:
        import queue

        self._flush(t)
        reply: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.q.put((_SNAP, t, reply))
        return reply.get()

    # -- the two streams -----------------------------------------------------------------------

    def _unpend(self) -> None:
        """The input held for comparison goes to the input's hasher."""
        first = True
        for part in self.held:
            self._emit(self.raw_t, memoryview(part)[self.held_off :] if first else part)
            first = False
        self.held.clear()
        self.held_off = self.held_len = 0

    def _diverge(self) -> None:
        """The streams differ from here on: the input gets a hasher of its own."""
        self.verbatim = False
        self._flush(0)
        self.q.put((_FORK,))
        self.raw_t = 1
        self._unpend()

    def _match(self, data: Any) -> None:
        n = len(data)
        if n > self.held_len:
            self._diverge()
            self._emit(0, data)
            return
        pos, i, off = 0, 0, self.held_off
        while pos < n:
            head = self.held[i]
            k = min(len(head) - off, n - pos)
            if not head.startswith(data[pos : pos + k], off):
                self._diverge()
                self._emit(0, data)
                return
            pos += k
            off += k
            if off == len(head):
                i, off = i + 1, 0
        for _ in range(i):
            self.held.popleft()
        self.held_off = off
        self.held_len -= n
        self._emit(0, data)

    def raw(self, data: bytes) -> None:
        """Input bytes, in order (those read into this sink's buffers go to ``content``)."""
        if not self.raw_on or not data:
            return
        if self.verbatim:
            self.held.append(data)
            self.held_len += len(data)
            if self.held_len > _HELD_MAX:
                self._diverge()
        else:
            self._emit(self.raw_t, data)

    def add(self, data: bytes | bytearray | memoryview, zeros: int = 0) -> None:
        """Canonical bytes, then ``zeros`` zero bytes."""
        if not self.canon_on:
            return
        self.size += len(data) + zeros
        for part in (data, tarexport._ZEROS[:zeros]) if zeros else (data,):
            if not len(part):
                continue
            if self.verbatim:
                self._match(memoryview(part) if isinstance(part, bytearray) else part)
            else:
                self._emit(0, part)

    def big(self, data: bytes | memoryview) -> None:
        self.add(bytes(data))

    def flush(self) -> None:
        self._flush(0)

    def content(self, buf: bytearray | memoryview, n: int, canonical: bool) -> None:
        """``buf[:n]`` is input and, when ``canonical``, also the canonical tar's next bytes.
        ``buf`` is one of ``buffer()``'s (handed back once hashed) or a view of immutable
        bytes (a few at a time in flight)."""
        canonical = canonical and self.canon_on
        if canonical:
            self.size += n
        if self.raw_on and self.verbatim and (self.held_len or not canonical):
            self._diverge()
        targets: tuple[int, ...] = (0,) if canonical else ()
        if self.raw_on and self.raw_t not in targets:
            targets += (self.raw_t,)
        if not targets:
            if isinstance(buf, bytearray):
                self._free.put(buf)
            return
        for t in targets:
            self._flush(t)
        if isinstance(buf, memoryview):
            self.inflight.acquire()  # bounds the memory held by views waiting to be hashed
        self.q.put((_UPDATE, targets, buf, n))

    # -- results -------------------------------------------------------------------------------

    def cancel(self) -> None:
        """The canonical tar's digest is not wanted any more (the input's still is)."""
        if not self.canon_on:
            return
        self.canon_on = False
        if self.verbatim:
            self.verbatim = False  # the input goes on with hasher 0
            self._unpend()
        elif self.raw_t:
            self.batches[0].clear()
            self.batched[0] = 0
        if not self.raw_on:
            self.close()

    def finish(self) -> tuple[str, int]:
        """The canonical tar's digest and size (the input may go on)."""
        self.add(tarexport.ZERO_BLOCK * 2)
        digest = self._snap(0)
        self.canon_on = False
        if self.verbatim:
            self.verbatim = False
            self._unpend()
        if not self.raw_on:
            self.close()
        return digest, self.size

    def finish_input(self) -> str:
        """The input's digest: call after the input's end and ``finish``/``cancel``."""
        assert not self.canon_on
        digest = self._snap(self.raw_t)
        self.raw_on = False
        self.close()
        return digest

    def close(self) -> None:
        if self.thread is not None:
            self.q.put(None)
            self.thread.join()
            self.thread = None


# -- the speculative digest ---------------------------------------------------------------------


class _Spec:
    """Hash the canonical tar while extracting, on the other core, as long as the archive lists
    its entries in canonical order (our exports do, and so do tools that walk trees sorted) and
    nothing changes an entry after it was hashed. Anything else abandons it; the digest is then
    computed from the recorded nodes at the end (``tarexport.write_nodes``)."""

    def __init__(self, tree: bytes, sink: _Hasher) -> None:
        self.sink = sink
        self.writer = tarexport.Writer(tree, self.sink)
        self.last: list[bytes] = []
        self.dirs: dict[bytes, Node] = {}
        self.opaque: set[bytes] = set()
        self.ok = True

    def abort(self) -> None:
        if self.ok:
            self.ok = False
            self.sink.cancel()

    def in_order(self, rel: bytes) -> bool:
        key = rel.split(b"/")
        if key <= self.last:
            self.abort()
            return False
        self.last = key
        return True

    def emit(self, rel: bytes, node: Node) -> None:
        if self.ok and self.in_order(rel):
            self.writer.emit(rel, node, id(node) if node.kind == "f" else rel)

    def dir(self, rel: bytes, node: Node) -> None:
        self.emit(rel, node)
        self.dirs[rel] = node

    def opaque_marker(self, parent: bytes) -> None:
        # canonical: the marker directly follows its directory's entry
        if self.ok and parent in self.dirs and self.last == parent.split(b"/"):
            self.writer.header(parent + b"/" + WH_OPAQUE, b"0", 0o644, 0, 0, 0, {})
            self.opaque.add(parent)
        else:
            self.abort()

    def check_dir(self, rel: bytes, final: Node) -> None:
        seen = self.dirs.get(rel)
        if (
            seen is None
            or (seen.mode, seen.uid, seen.gid, seen.mtime_ns, seen.xattrs)
            != (final.mode, final.uid, final.gid, final.mtime_ns, final.xattrs)
            or (rel in self.opaque) != final.opaque
        ):
            self.abort()


# -- the extractor ------------------------------------------------------------------------------


class _Extractor:
    def __init__(
        self, dest: str, xattr_ns: XattrNs, privileged: bool, hash_input: bool, strict: bool
    ) -> None:
        self.dest = os.fsencode(dest)
        self.strict = strict
        self.opaque_key = f"{xattr_ns}.overlay.opaque"
        self.privileged = privileged
        self.kinds: dict[bytes, str] = {b"": DIR}
        self.dirs: dict[bytes, _DirMeta] = {}
        self.opaque: set[bytes] = set()
        self.stats = ExtractStats()
        self.nodes: dict[bytes, Node] = {}  # what the canonical tar will say, path by path
        self.kept = 0
        self.hasher = _Hasher(hash_input)
        self.spec = _Spec(self.dest, self.hasher)
        self._iobuf: bytearray | None = None
        self.euid = os.geteuid()
        self.egid = os.getegid()

    def path(self, rel: bytes) -> bytes:
        return self.dest + b"/" + rel

    @property
    def iobuf(self) -> bytearray:
        if self._iobuf is None:
            self._iobuf = bytearray(CHUNK)
        return self._iobuf

    # -- names ---------------------------------------------------------------------------------

    @staticmethod
    def normalize(raw: bytes) -> bytes:
        if b"\0" in raw:
            raise ArchiveError(f"unsafe archive: member name {_show(raw)!r} contains NUL")
        parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
        if b".." in parts:
            raise ArchiveError(
                f"unsafe archive: member {_show(raw)!r} escapes the layer ('..')",
                "refusing to extract it",
            )
        return b"/".join(parts)

    def ensure_parents(self, rel: bytes, raw: bytes) -> None:
        parent = rel.rpartition(b"/")[0]
        if self.kinds.get(parent) == DIR:
            return
        parts = parent.split(b"/")
        for i in range(1, len(parts) + 1):
            p = b"/".join(parts[:i])
            kind = self.kinds.get(p)
            if kind == DIR:
                continue
            if kind == LINK:
                raise ArchiveError(
                    f"unsafe archive: member {_show(raw)!r} lies below symlink {_show(p)!r}",
                    "refusing to follow links out of the layer",
                )
            if kind is not None:
                raise ArchiveError(
                    f"bad archive: member {_show(raw)!r} needs {_show(p)!r} to be a directory"
                )
            os.mkdir(self.path(p), 0o700)
            self.kinds[p] = DIR
            self.dirs[p] = _DirMeta(0o755, 0, 0, 0, {})
            self.spec.dir(p, Node("d", 0o755, 0, 0, 0, {}))

    def make_room(self, rel: bytes, new_kind: str) -> None:
        """A later member replaces an earlier one of the same name (dirs merge)."""
        old = self.kinds.get(rel)
        if old is None:
            return
        self.spec.abort()  # an entry already hashed changes
        if old == DIR and new_kind == DIR:
            return
        full = self.path(rel)
        if old == DIR:
            from tophan._internal.fs import rmtree

            rmtree(os.fsdecode(full))
            prefix = rel + b"/"
            for k in [k for k in self.kinds if k.startswith(prefix)]:
                del self.kinds[k]
                self.nodes.pop(k, None)
                self.dirs.pop(k, None)
                self.opaque.discard(k)
            self.dirs.pop(rel, None)
            self.opaque.discard(rel)
        else:
            os.unlink(full)
        del self.kinds[rel]
        self.nodes.pop(rel, None)

    # -- metadata ------------------------------------------------------------------------------

    def chown(self, target: int | bytes, uid: int, gid: int, holds_xattrs: bool) -> tuple[int, int]:
        """Apply ownership; returns the owner export will see.

        Unprivileged (a rootless store), nothing is chowned, even to ids a user namespace maps:
        the files stay the user's, which a layer reads as root's (``tarexport.stored_owner``),
        so the user can read and remove all of its store outside any namespace. Another owner is
        kept in user.tophan.owner where the file can hold it (regular files, directories), else
        it is lost: the entry is root's."""
        if not self.privileged:
            if (uid, gid) == (0, 0):
                return 0, 0
            if holds_xattrs:
                self.set_xattr(target, OWNER_XATTR, b"%d:%d" % (uid, gid), strict=True)
                return uid, gid
            return 0, 0
        if uid == self.euid and gid == self.egid:
            return uid, gid
        if isinstance(target, int):
            os.fchown(target, uid, gid)
        else:
            os.chown(target, uid, gid, follow_symlinks=False)
        return uid, gid

    def set_xattr(self, target: int | bytes, key: str, value: bytes, strict: bool = False) -> bool:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
            return True
        except OSError as e:
            if strict or self.privileged or e.errno not in (errno.EPERM, errno.ENOTSUP):
                raise ArchiveError(f"cannot set xattr {key}: {e.strerror}") from e
            self.stats.xattrs_skipped.append(key)
            return False

    def xattrs(self, target: int | bytes, xattrs: dict[str, bytes]) -> dict[bytes, bytes]:
        """Apply xattrs; returns those applied, as export will see them."""
        applied = {}
        for key in sorted(xattrs):
            if self.set_xattr(target, key, xattrs[key]):
                applied[key.encode("utf-8", "surrogateescape")] = xattrs[key]
        return applied

    def finish_dirs(self) -> None:
        # Deepest first: creating children changes a dir's mtime, and a 0555 dir takes none.
        for rel in sorted(self.dirs, key=lambda r: r.count(b"/"), reverse=True):
            meta = self.dirs[rel]
            full = self.path(rel)
            uid, gid = self.chown(full, meta.uid, meta.gid, True)
            applied = self.xattrs(full, meta.xattrs)
            os.chmod(full, meta.mode)
            os.utime(full, ns=(meta.mtime_ns, meta.mtime_ns), follow_symlinks=False)
            node = Node("d", meta.mode, uid, gid, meta.mtime_ns, applied)
            node.opaque = rel in self.opaque
            self.nodes[rel] = node
            self.spec.check_dir(rel, node)

    # -- members -------------------------------------------------------------------------------

    def absolute(self, raw: bytes, what: str) -> None:
        """A leading / is removed, as GNU tar does (and counted, for the caller to say so);
        under overlayd's contract (``strict``) the archive is refused instead."""
        if self.strict:
            raise ArchiveError(
                f"unsafe archive: {what} {_show(raw)!r} is an absolute path",
                "refusing to extract it",
            )
        self.stats.absolute_names += 1

    def member(self, m: _Member, stream: _Stream) -> None:
        raw = m.name
        if raw.startswith(b"/"):
            self.absolute(raw, "member")
        rel = self.normalize(raw)
        self.stats.members += 1
        if not rel:
            self.skip(stream, m.size)  # the layer root itself: its metadata is not ours to take
            return
        base = rel.rpartition(b"/")[2]
        if base.startswith(WH_PREFIX):
            self.skip(stream, m.size)
            self.whiteout(rel, base, m, raw)
            return
        t = m.typeflag
        if t == b"5" or (t in (b"0", b"\0") and raw.endswith(b"/")):
            self.ensure_parents(rel, raw)
            self.make_room(rel, DIR)
            if rel not in self.kinds:
                os.mkdir(self.path(rel), 0o700)
                self.kinds[rel] = DIR
            self.dirs[rel] = _DirMeta(m.mode, m.uid, m.gid, m.mtime_ns, m.xattrs)
            self.spec.dir(rel, Node("d", m.mode, m.uid, m.gid, m.mtime_ns, _xattr_bytes(m.xattrs)))
            self.skip(stream, m.size)
            return
        self.ensure_parents(rel, raw)
        if t in (b"0", b"\0", b"7", b"S") or m.sparse is not None:
            if self.strict and self.kinds.get(rel) == LINK:
                # overlayd opens a file O_NOFOLLOW: a file over an earlier symlink of the same
                # name is refused there (GNU tar, and tophan otherwise, replace the link).
                raise ArchiveError(
                    f"unsafe archive: file {_show(raw)!r} follows a symlink of the same name",
                    "refusing to write through or over it",
                )
            self.make_room(rel, FILE)
            self.regular(rel, m, stream)
            self.kinds[rel] = FILE
        elif t == b"1":
            self.skip(stream, m.size)
            self.hardlink(rel, m, raw)
        elif t == b"2":
            self.skip(stream, m.size)
            self.make_room(rel, LINK)
            full = self.path(rel)
            os.symlink(m.linkname, full)
            self.kinds[rel] = LINK
            uid, gid = self.chown(full, m.uid, m.gid, False)
            applied = self.xattrs(full, m.xattrs)
            os.utime(full, ns=(m.mtime_ns, m.mtime_ns), follow_symlinks=False)
            self.nodes[rel] = Node("l", 0o777, uid, gid, m.mtime_ns, applied, link=m.linkname)
            self.spec.emit(rel, self.nodes[rel])
        elif t in (b"3", b"4", b"6"):
            self.skip(stream, m.size)
            self.special(rel, m, raw)
        else:
            raise ArchiveError(
                f"unsupported tar member type {t!r} for {_show(raw)!r}", "re-create the archive"
            )

    def skip(self, stream: _Stream, size: int) -> None:
        left = size + (-size % BLOCK)
        while left:
            n = len(stream.exact(min(left, CHUNK), "a member's data"))
            left -= n

    def regular(self, rel: bytes, m: _Member, stream: _Stream) -> None:
        fd = os.open(
            self.path(rel),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        kept: memoryview | None = None
        size = m.realsize if m.sparse is not None else m.size
        # What export will say, predicted before the content is hashed; checked afterwards.
        node = Node("f", m.mode, m.uid, m.gid, m.mtime_ns, _xattr_bytes(m.xattrs), size=size)
        spec = self.spec
        if m.sparse is not None:
            spec.abort()
        elif spec.ok and spec.in_order(rel):
            spec.writer.file_start(rel, node)
        try:
            if m.sparse is not None:
                self.write_sparse(fd, m, stream)
            elif m.size <= CHUNK:
                pad = -m.size % BLOCK
                data = stream.exact(m.size + pad, m.name)
                if size:
                    kept = memoryview(data)[:size]
                    os.write(fd, kept)
                if spec.ok:  # the archive's own padding may hold garbage: canonical is zeros
                    spec.sink.add(memoryview(data)[:size], pad)
                # Held for a digest computed at the end; not needed while hashing in flight.
                if size and not spec.ok and self.kept + size <= KEEP_BUDGET:
                    self.kept += size
                else:
                    kept = None
            else:
                self.write_stream(fd, m.size, stream, m.name, spec.ok)
                stream.exact(-m.size % BLOCK, "padding")
                if spec.ok:
                    spec.sink.add(b"", -m.size % BLOCK)
            self.stats.bytes += size
            uid, gid = self.chown(fd, m.uid, m.gid, True)
            applied = self.xattrs(fd, m.xattrs)
            os.fchmod(fd, m.mode)
            os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
        finally:
            os.close(fd)
        if (uid, gid) != (node.uid, node.gid) or applied != node.xattrs:
            spec.abort()
            node.uid, node.gid, node.xattrs = uid, gid, applied
        node.data = kept
        self.nodes[rel] = node

    def write_stream(
        self, fd: int, size: int, stream: _Stream, name: bytes, canonical: bool = False
    ) -> None:
        """Copy ``size`` bytes to ``fd`` through reused buffers: a fresh 1 MiB object per
        chunk would page-fault on every chunk. Each chunk is hashed on the other core (as input
        and, when ``canonical``, as the canonical tar's) while the next one is read and written."""
        hasher = self.hasher
        hashed = canonical or hasher.raw_on
        left = size
        if stream.take_src is not None:
            # The source's chunks are immutable: written and hashed as they are, no copy.
            while left:
                view = stream.take(min(left, CHUNK), name)
                left -= len(view)
                part = view
                while part:
                    part = part[os.write(fd, part) :]
                if hashed:
                    hasher.content(view, len(view), canonical)
            return
        while left:
            n = min(left, CHUNK)
            buf = hasher.buffer() if hashed else self.iobuf
            with memoryview(buf) as whole:
                view = whole[:n]
                stream.exact_into(view, name)
                while view:
                    view = view[os.write(fd, view) :]
            if hashed:
                hasher.content(buf, n, canonical)
            left -= n

    def write_sparse(self, fd: int, m: _Member, stream: _Stream) -> None:
        assert m.sparse is not None
        stored = 0
        for offset, length in m.sparse:
            os.lseek(fd, offset, os.SEEK_SET)
            self.write_stream(fd, length, stream, m.name)
            stored += length
        if stored > m.size:
            raise ArchiveError(f"corrupt sparse map for {_show(m.name)!r}")
        self.skip_raw(stream, m.size - stored)
        stream.exact(-m.size % BLOCK, "padding")
        os.ftruncate(fd, m.realsize)

    @staticmethod
    def skip_raw(stream: _Stream, n: int) -> None:
        while n:
            n -= len(stream.exact(min(n, CHUNK), "sparse data"))

    def hardlink(self, rel: bytes, m: _Member, raw: bytes) -> None:
        if m.linkname.startswith(b"/"):
            self.absolute(m.linkname, "hardlink target")
        target = self.normalize(m.linkname)
        kind = self.kinds.get(target)
        if not target or kind in (None, DIR, WHITEOUT):
            what = "a directory" if kind == DIR else "not in the archive before it"
            raise ArchiveError(
                f"unsafe archive: hardlink {_show(raw)!r} -> {_show(m.linkname)!r}:"
                f" target is {what}",
                "hardlinks must point at an earlier file of the same layer",
            )
        self.ensure_parents(target, m.linkname)  # refuses a target reached through a symlink
        if target == rel:
            return
        self.make_room(rel, kind)
        os.link(self.path(target), self.path(rel), follow_symlinks=False)
        self.kinds[rel] = kind
        self.nodes[rel] = self.nodes[target]  # one Node object: one inode
        self.spec.emit(rel, self.nodes[rel])

    def special(self, rel: bytes, m: _Member, raw: bytes) -> None:
        self.make_room(rel, OTHER)
        full = self.path(rel)
        if m.typeflag == b"6":
            os.mkfifo(full, 0o600)
            kind = "p"
        else:
            is_whiteout = m.typeflag == b"3" and m.devmajor == 0 and m.devminor == 0
            if not self.privileged and not is_whiteout:
                raise ArchiveError(
                    f"device node {_show(raw)!r} needs root",
                    "import as root, or drop device nodes from the archive",
                )
            ifmt = stat.S_IFCHR if m.typeflag == b"3" else stat.S_IFBLK
            os.mknod(full, ifmt | 0o600, os.makedev(m.devmajor, m.devminor))
            kind = "w" if is_whiteout else ("c" if m.typeflag == b"3" else "b")
        self.kinds[rel] = WHITEOUT if kind == "w" else OTHER
        self.meta_path(rel, full, m, kind, os.makedev(m.devmajor, m.devminor))

    def meta_path(self, rel: bytes, full: bytes, m: _Member, kind: str, rdev: int = 0) -> None:
        # devices and fifos cannot hold user.* xattrs, so no user.tophan.owner either
        uid, gid = self.chown(full, m.uid, m.gid, False)
        applied = self.xattrs(full, m.xattrs)
        os.chmod(full, m.mode)
        os.utime(full, ns=(m.mtime_ns, m.mtime_ns), follow_symlinks=False)
        self.nodes[rel] = Node(kind, m.mode, uid, gid, m.mtime_ns, applied, rdev=rdev)
        self.spec.emit(rel, self.nodes[rel])

    def whiteout(self, rel: bytes, base: bytes, m: _Member, raw: bytes) -> None:
        parent = rel.rpartition(b"/")[0]
        if base == WH_OPAQUE:
            self.ensure_parents(rel, raw)
            if self.kinds.get(parent) != DIR:
                raise ArchiveError(
                    f"bad archive: opaque marker {_show(raw)!r} below a non-directory"
                )
            self.set_xattr(self.path(parent) if parent else self.dest, self.opaque_key, b"y", True)
            self.opaque.add(parent)
            if parent:
                self.spec.opaque_marker(parent)
            else:
                self.spec.abort()
            # A whiteout inside an opaque dir would hide nothing and confuse overlayfs: drop any.
            prefix = parent + b"/" if parent else b""
            for k in [k for k, v in self.kinds.items() if v == WHITEOUT and k.startswith(prefix)]:
                if k.rpartition(b"/")[0] == parent:
                    self.spec.abort()
                    os.unlink(self.path(k))
                    del self.kinds[k]
                    self.nodes.pop(k, None)
            return
        if base.startswith(WH_PREFIX + WH_PREFIX):
            return  # other aufs metadata (.wh..wh.plnk and friends): nothing for overlayfs
        if parent in self.opaque:
            return
        name = base[len(WH_PREFIX) :]
        target = (parent + b"/" + name) if parent else name
        self.ensure_parents(target, raw)
        self.make_room(target, WHITEOUT)
        full = self.path(target)
        os.mknod(full, stat.S_IFCHR | 0o600, 0)
        self.kinds[target] = WHITEOUT
        self.meta_path(target, full, m, "w")


# -- the header loop ----------------------------------------------------------------------------


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _num(block[148:156], "checksum")
    except ArchiveError:
        return False
    field = block[148:156]
    unsigned = sum(block) - sum(field) + 256
    if stored == unsigned:
        return True
    signed = sum((b - 256 if b > 127 else b) for b in block[:148] + block[156:]) + 256
    return stored == signed


def _old_gnu_sparse(block: bytes, stream: _Stream) -> tuple[list[tuple[int, int]], int]:
    entries: list[tuple[int, int]] = []

    def read_entries(area: bytes, count: int) -> None:
        for i in range(count):
            off = _num(area[i * 24 : i * 24 + 12], "sparse offset")
            length = _num(area[i * 24 + 12 : i * 24 + 24], "sparse length")
            if off == 0 and length == 0 and not area[i * 24 : i * 24 + 24].strip(b"\0"):
                continue
            entries.append((off, length))

    read_entries(block[386:482], 4)
    extended = block[482]
    realsize = _num(block[483:495], "sparse real size")
    guard = 0
    while extended:
        ext = stream.exact(BLOCK, "a sparse header")
        read_entries(ext[:504], 21)
        extended = ext[504]
        guard += 1
        if guard > 1 << 16:
            raise ArchiveError("absurd sparse map", "not a sane tar archive")
    return entries, realsize


def _pax_sparse(pax: dict[bytes, bytes], stream: _Stream, m: _Member) -> None:
    major = pax.get(b"GNU.sparse.major")
    if major == b"1":
        # 1.0: the map is at the start of the data, as decimal lines, padded to a block.
        m.realsize = _pax_int(pax.get(b"GNU.sparse.realsize", b"0"), "GNU.sparse.realsize")
        head = b""
        numbers: list[int] = []
        needed = None
        while needed is None or len(numbers) < needed:
            chunk = stream.exact(BLOCK, "a sparse map")
            m.size -= BLOCK
            head += chunk
            lines = head.split(b"\n")
            numbers = [_pax_int(x, "sparse map") for x in lines[:-1]]
            if numbers:
                needed = 1 + 2 * numbers[0]
            if len(head) > MAX_META:
                raise ArchiveError("absurd sparse map", "not a sane tar archive")
        values = numbers[1:needed]
        m.sparse = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
        return
    m.realsize = _pax_int(pax.get(b"GNU.sparse.size", b"0"), "GNU.sparse.size")
    if b"GNU.sparse.map" in pax:  # 0.1
        vals = [_pax_int(x, "GNU.sparse.map") for x in pax[b"GNU.sparse.map"].split(b",") if x]
        m.sparse = [(vals[i], vals[i + 1]) for i in range(0, len(vals) - 1, 2)]
    else:  # 0.0 keeps only the last offset/numbytes pair in a dict: unsupported that way
        raise ArchiveError("GNU sparse format 0.0 is not supported", "re-create with --format=pax")


def extract(
    src: IO[bytes],
    dest: str,
    *,
    xattr_ns: XattrNs,
    privileged: bool,
    hash_input: bool = False,
    strict: bool = False,
) -> ExtractStats:
    """Extract a (maybe compressed) tar stream into the empty staging dir ``dest``.

    With ``hash_input``, the (decompressed) input is read to its end and its SHA-256 is
    ``stats.input_digest``: the DiffID it claims to have, for the caller to check.

    Absolute member names lose their leading / (``stats.absolute_names`` counts them) and a
    later member replaces an earlier one of the same name, as with GNU tar. ``strict`` keeps
    overlayd's contract instead: both an absolute name and a file over an earlier symlink of
    the same name refuse the archive."""
    from tophan._internal import compression

    try:
        stream = _Stream(compression.open_decompressed(src))
    except OSError as e:
        raise ArchiveError(f"cannot read the archive: {e}") from e
    ex = _Extractor(dest, xattr_ns, privileged, hash_input, strict)
    if hash_input:
        stream.tap = ex.hasher
    try:
        with tarexport.NoGC(), _Finally(ex.hasher.close):
            _loop(stream, ex)
            ex.finish_dirs()
            if hash_input:
                while stream.read(CHUNK):  # what follows the archive is part of the input
                    pass
            if ex.spec.ok:
                ex.stats.digest, ex.stats.size = ex.hasher.finish()
            else:
                ex.hasher.cancel()
                ex.stats.digest, ex.stats.size = tarexport.write_nodes(dest, ex.nodes, None)
            if hash_input:
                ex.stats.input_digest = ex.hasher.finish_input()
            ex.hasher.close()
    except OSError as e:
        where = f" ({os.fsdecode(e.filename)[len(dest) + 1 :]})" if e.filename else ""
        raise ArchiveError(f"cannot extract: {e.strerror}{where}") from e
    return ex.stats


def _loop(stream: _Stream, ex: _Extractor) -> None:
    global_pax: dict[bytes, bytes] = {}
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    seen = 0
    while True:
        block = stream.read(BLOCK)
        if not block:
            if seen == 0:
                raise ArchiveError("empty input: not a tar archive")
            return  # a missing end-of-archive marker, as GNU tar tolerates
        if len(block) < BLOCK:
            raise ArchiveError("archive is truncated: it ends inside a header")
        if not block.strip(b"\0"):
            return  # end of archive (an archive of no members is an empty layer)
        if not _checksum_ok(block):
            what = "not a tar archive" if seen == 0 else "corrupt tar header"
            raise ArchiveError(f"{what} (bad header checksum at byte {stream.offset - BLOCK})")
        seen += 1
        t = block[156:157]
        size = _num(block[124:136], "size")
        if t in (b"x", b"g", b"L", b"K"):
            if size > MAX_META:
                raise ArchiveError(
                    f"absurd tar header: a {t.decode()} header declares {size} bytes",
                    "not a sane tar archive",
                )
            data = stream.exact(size + (-size % BLOCK), "a metadata header")[:size]
            if t == b"x":
                pax.update(_parse_pax(data))
            elif t == b"g":
                global_pax.update(_parse_pax(data))
            elif t == b"L":
                long_name = data.split(b"\0", 1)[0]
            else:
                long_link = data.split(b"\0", 1)[0]
            continue
        if t == b"V":
            ex.skip(stream, size)
            continue
        if t == b"M":
            raise ArchiveError("multi-volume archives are not supported")
        merged = {**global_pax, **pax} if global_pax else pax
        m = _member(block, size, t, merged, long_name, long_link, stream)
        pax, long_name, long_link = {}, None, None
        ex.member(m, stream)


def _member(
    block: bytes,
    size: int,
    t: bytes,
    pax: dict[bytes, bytes],
    long_name: bytes | None,
    long_link: bytes | None,
    stream: _Stream,
) -> _Member:
    magic = block[257:265]
    name = block[:100].split(b"\0", 1)[0]
    if magic[:6] == b"ustar\0":
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    if long_name is not None:
        name = long_name
    linkname = block[157:257].split(b"\0", 1)[0]
    if long_link is not None:
        linkname = long_link
    m = _Member(
        name=pax.get(b"path", name),
        mode=_num(block[100:108], "mode") & 0o7777,
        uid=_num(block[108:116], "uid"),
        gid=_num(block[116:124], "gid"),
        size=size,
        mtime_ns=_num(block[136:148], "mtime") * 1_000_000_000,
        typeflag=t,
        linkname=pax.get(b"linkpath", linkname),
        devmajor=_num(block[329:337], "devmajor") if t in (b"3", b"4") else 0,
        devminor=_num(block[337:345], "devminor") if t in (b"3", b"4") else 0,
        xattrs={},
    )
    if b"size" in pax:
        m.size = _pax_int(pax[b"size"], "size")
    if b"uid" in pax:
        m.uid = _pax_int(pax[b"uid"], "uid")
    if b"gid" in pax:
        m.gid = _pax_int(pax[b"gid"], "gid")
    if b"mtime" in pax:
        m.mtime_ns = _pax_time(pax[b"mtime"])
    for key, value in pax.items():
        if key.startswith(b"SCHILY.xattr."):
            xname = key[13:].decode("utf-8", "surrogateescape")
            if xname.startswith(("trusted.overlay.", "user.overlay.")) or xname == OWNER_XATTR:
                continue  # overlayfs would act on these; ours is ours
            m.xattrs[xname] = value
    if t == b"S":
        m.sparse, m.realsize = _old_gnu_sparse(block, stream)
    elif b"GNU.sparse.major" in pax or b"GNU.sparse.map" in pax or b"GNU.sparse.size" in pax:
        if b"GNU.sparse.name" in pax:
            m.name = pax[b"GNU.sparse.name"]
        _pax_sparse(pax, stream, m)
    return m
