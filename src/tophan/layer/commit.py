"""Workspace upper dir -> an exact layer tree (what ``layer commit`` publishes).

The upper dir of a mount made with ``index=off,metacopy=off,redirect_dir=off`` is already close to
an OCI diff; what it still holds that a layer must not:

- overlayfs bookkeeping xattrs (``origin``, ``impure``, ``protattr``…): dropped;
- whiteouts of names no lower has (created, then deleted, in the workspace): dropped;
- entries identical to what the lowers show at that path — ``mv a t; mv t a``, or a file opened
  for writing and closed unchanged, or chmod to the same mode: dropped (metadata compared first,
  then the content, only when everything else is equal);
- directories that exist only to hold such dropped entries: dropped.

What the lowers "show" follows overlayfs' own lookup: the first lower (top first) that has the
name, stopping at whiteouts and below opaque directories.
"""

from __future__ import annotations

import errno
import os
import stat

from tophan.errors import TophanError
from tophan.layer.tarexport import (
    OWNER_XATTR,
    Node,
    NoGC,
    parse_owner,
    stored_owner,
    write_nodes,
)
from tophan.layer.tarexport import filtered_xattrs as _xattrs

CHUNK = 1 << 20
KEEP_BUDGET = 256 << 20  # small files' content held for the digest instead of re-read
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Literal

    XattrNs = Literal["trusted", "user"]


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def _same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            x = fa.read(CHUNK)
            y = fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


class _Dir:
    """A directory of the upper dir being walked: its entries still to do, and what it was."""

    def __init__(
        self,
        rel: bytes,
        src: bytes,
        stack: list[bytes],
        st: os.stat_result | None,
        lower: tuple[bytes, os.stat_result] | None,
        xattrs: dict[bytes, bytes],
        opaque: bool | None,
    ) -> None:
        self.rel = rel
        self.src = src
        self.stack = stack  # the lower dirs it shows, top first
        self.st = st
        self.lower = lower
        self.xattrs = xattrs
        self.opaque = opaque
        self.kept = False
        self.entries: Iterator[os.DirEntry[bytes]] = iter(_listdir(src))


def _listdir(path: bytes) -> list[os.DirEntry[bytes]]:
    with os.scandir(path) as it:
        return list(it)  # closed now: open directories do not pile up with the depth


class _Differ:
    def __init__(self, upper: bytes, dest: bytes, xattr_ns: XattrNs, record: bool) -> None:
        self.upper = upper
        # Unprivileged (a rootless store): owners are recorded, never applied (see ownership)
        self.record = record
        self.dest = dest
        self.opaque_key = f"{xattr_ns}.overlay.opaque"
        self.links: dict[tuple[int, int], bytes] = {}
        self.dirs: list[
            tuple[bytes, os.stat_result, dict[bytes, bytes], tuple[int, int] | None]
        ] = []
        # what the canonical tar of dest will say, so the digest needs no second pass
        self.nodes: dict[bytes, Node] = {}
        self.kept = 0

    # -- what the lowers show ------------------------------------------------------------------

    @staticmethod
    def lower_entry(stack: list[bytes], name: bytes) -> tuple[bytes, os.stat_result] | None:
        for d in stack:
            p = d + b"/" + name
            st = _lstat(p)
            if st is None:
                continue
            return None if _is_whiteout(st) else (p, st)
        return None

    def child_stack(self, stack: list[bytes], name: bytes) -> list[bytes]:
        """The lower dirs that a merged dir ``name`` shows, top first."""
        out = []
        for d in stack:
            p = d + b"/" + name
            st = _lstat(p)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-dir hides everything below
            out.append(p)
            if _xattrs_opaque(p, self.opaque_key):
                break
        return out

    # -- the walk ------------------------------------------------------------------------------

    def walk(self, rel: bytes, stack: list[bytes]) -> bool:
        """Copy what differs below ``rel``; True if anything was kept.

        Iterative (its own stack of directories, not Python's): an upper dir of any depth
        commits, where recursion stopped at about a thousand levels."""
        top = _Dir(rel, self.upper + b"/" + rel if rel else self.upper, stack, None, None, {}, None)
        frames = [top]
        while frames:
            d = frames[-1]
            e = next(d.entries, None)
            if e is None:
                frames.pop()
                if frames:
                    frames[-1].kept |= self.finish_directory(d)
                continue
            child = d.rel + b"/" + e.name if d.rel else e.name
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                d.kept |= self.entry(child, e.name, e.path, st, d.stack)
                continue
            frames.append(self.start_directory(child, e.name, e.path, st, d.stack))
        return top.kept

    def entry(
        self, rel: bytes, name: bytes, src: bytes, st: os.stat_result, stack: list[bytes]
    ) -> bool:
        """A non-directory: a whiteout, a copy, or nothing when the lowers have it the same."""
        lower = self.lower_entry(stack, name)
        if _is_whiteout(st):
            if lower is None:
                return False  # nothing below to hide
            self.make_whiteout(rel, st, src)
            return True
        xattrs = _xattrs(src)
        if lower is not None and self.identical(src, st, xattrs, *lower):
            return False
        self.copy(rel, src, st, *self.ownership(st, xattrs))
        return True

    def start_directory(
        self, rel: bytes, name: bytes, src: bytes, st: os.stat_result, stack: list[bytes]
    ) -> _Dir:
        """Make the directory in dest (removed again by finish_directory if nothing differs)."""
        lower = self.lower_entry(stack, name)
        xattrs = _xattrs(src)
        opaque = _xattrs_opaque(src, self.opaque_key)
        os.mkdir(self.dest + b"/" + rel, 0o700)
        sub = [] if opaque else self.child_stack(stack, name)
        return _Dir(rel, src, sub, st, lower, xattrs, opaque)

    def finish_directory(self, d: _Dir) -> bool:
        """Once its children are done: keep the directory if it or anything below differs."""
        assert d.st is not None
        dst = self.dest + b"/" + d.rel
        same = (
            not d.opaque
            and d.lower is not None
            and stat.S_ISDIR(d.lower[1].st_mode)
            and self.same_meta(d.st, d.xattrs, d.lower[1], _xattrs(d.lower[0]))
        )
        if same and not d.kept:
            os.rmdir(dst)
            return False
        if d.opaque:
            os.setxattr(dst, self.opaque_key, b"y")
        xattrs, owner = self.ownership(d.st, d.xattrs)
        self.dirs.append((dst, d.st, xattrs, owner))
        node = _node("d", d.st, xattrs, owner)
        node.opaque = bool(d.opaque)
        self.nodes[d.rel] = node
        return True

    def identical(
        self,
        src: bytes,
        st: os.stat_result,
        xattrs: dict[bytes, bytes],
        lpath: bytes,
        lst: os.stat_result,
    ) -> bool:
        if stat.S_IFMT(st.st_mode) != stat.S_IFMT(lst.st_mode):
            return False
        if not self.same_meta(st, xattrs, lst, _xattrs(lpath)):
            return False
        if stat.S_ISLNK(st.st_mode):
            return os.readlink(src) == os.readlink(lpath)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return st.st_rdev == lst.st_rdev
        if stat.S_ISREG(st.st_mode):
            return st.st_size == lst.st_size and _same_content(src, lpath)
        return True

    def ownership(
        self, st: os.stat_result, xattrs: dict[bytes, bytes]
    ) -> tuple[dict[bytes, bytes], tuple[int, int] | None]:
        """The xattrs to write and the owner to chown to (None: leave the file ours).

        Privileged, owners are applied. Recorded (a rootless store): the new tree stays the
        user's, and an owner other than root goes to user.tophan.owner where the file can
        hold it (regular files, directories; elsewhere it is lost: root's, as in tarimport). An
        upper file that still has the root owner of a lower's file (copied up, not chowned)
        keeps the owner that lower recorded; one chowned in the container has a real owner,
        which wins."""
        if not self.record:
            return xattrs, (st.st_uid, st.st_gid)
        out = dict(xattrs)
        owner = self.effective_owner(st, out)
        if owner != (0, 0) and (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            out[OWNER_XATTR] = b"%d:%d" % owner
        return out, None

    @staticmethod
    def effective_owner(st: os.stat_result, xattrs: dict[bytes, bytes]) -> tuple[int, int]:
        """The owner a file means (its user.tophan.owner is popped from ``xattrs``)."""
        recorded = parse_owner(xattrs.pop(OWNER_XATTR, None))
        own = stored_owner(st)
        return recorded if recorded is not None and own == (0, 0) else own

    def same_meta(
        self,
        a: os.stat_result,
        ax: dict[bytes, bytes],
        b: os.stat_result,
        bx: dict[bytes, bytes],
    ) -> bool:
        if not self.record:
            return _same_meta(a, ax, b, bx)
        ax, bx = dict(ax), dict(bx)
        return (
            a.st_mode == b.st_mode
            and a.st_mtime_ns == b.st_mtime_ns
            and self.effective_owner(a, ax) == self.effective_owner(b, bx)
            and ax == bx
        )

    # -- writing -------------------------------------------------------------------------------

    def make_whiteout(self, rel: bytes, st: os.stat_result, src: bytes) -> None:
        dst = self.dest + b"/" + rel
        os.mknod(dst, stat.S_IFCHR | 0o600, 0)
        xattrs, owner = self.ownership(st, _xattrs(src))
        self.meta(dst, st, xattrs, None, owner)
        self.nodes[rel] = _node("w", st, xattrs, owner)

    def copy(
        self,
        rel: bytes,
        src: bytes,
        st: os.stat_result,
        xattrs: dict[bytes, bytes],
        owner: tuple[int, int] | None,
    ) -> None:
        dst = self.dest + b"/" + rel
        m = st.st_mode
        if stat.S_ISREG(m):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                first = self.links.get(key)
                if first is not None:
                    os.link(self.dest + b"/" + first, dst)
                    self.nodes[rel] = self.nodes[first]  # one Node object: one inode
                    return
                self.links[key] = rel
            data = self.copy_file(src, dst, st, xattrs, owner)
            self.nodes[rel] = _node("f", st, xattrs, owner, size=st.st_size, data=data)
        elif stat.S_ISLNK(m):
            target = os.readlink(src)
            os.symlink(target, dst)
            self.meta(dst, st, xattrs, None, owner, link=True)
            self.nodes[rel] = _node("l", st, xattrs, owner, link=target)
        elif stat.S_ISFIFO(m):
            os.mkfifo(dst, 0o600)
            self.meta(dst, st, xattrs, None, owner)
            self.nodes[rel] = _node("p", st, xattrs, owner)
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            os.mknod(dst, stat.S_IFMT(m) | 0o600, st.st_rdev)
            self.meta(dst, st, xattrs, None, owner)
            kind = "c" if stat.S_ISCHR(m) else "b"
            self.nodes[rel] = _node(kind, st, xattrs, owner, rdev=st.st_rdev)
        # sockets are not layer content

    def copy_file(
        self,
        src: bytes,
        dst: bytes,
        st: os.stat_result,
        xattrs: dict[bytes, bytes],
        owner: tuple[int, int] | None,
    ) -> bytes | None:
        """Copy content and metadata; small files' content is returned for the digest."""
        data = None
        fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if st.st_size <= CHUNK and self.kept + st.st_size <= KEEP_BUDGET:
                    data = os.read(fin, st.st_size + 1)
                    if len(data) != st.st_size:
                        raise TophanError(f"{os.fsdecode(src)} changed while it was committed")
                    os.write(fout, data)
                    self.kept += st.st_size
                else:
                    left = st.st_size
                    while left > 0:
                        n = os.copy_file_range(fin, fout, min(left, 1 << 30))
                        if n == 0:
                            break
                        left -= n
                self.meta(dst, st, xattrs, fout, owner)
            finally:
                os.close(fout)
        finally:
            os.close(fin)
        return data

    @staticmethod
    def meta(
        dst: bytes,
        st: os.stat_result,
        xattrs: dict[bytes, bytes],
        fd: int | None,
        owner: tuple[int, int] | None,
        *,
        link: bool = False,
    ) -> None:
        # chown first (it clears setuid bits and capabilities), then xattrs, then the mode.
        target: int | bytes = fd if fd is not None else dst
        if owner is None:
            pass  # recorded in xattrs (Differ.ownership)
        elif isinstance(target, int):
            os.fchown(target, *owner)
        else:
            os.chown(target, *owner, follow_symlinks=False)
        for k, v in xattrs.items():
            if isinstance(target, int):
                os.setxattr(target, k, v)
            else:
                os.setxattr(target, k, v, follow_symlinks=False)
        if not link:
            os.chmod(target, stat.S_IMODE(st.st_mode))
        ns = (st.st_atime_ns, st.st_mtime_ns)
        if isinstance(target, int):
            os.utime(target, ns=ns)
        else:
            os.utime(target, ns=ns, follow_symlinks=False)

    def finish(self) -> None:
        for dst, st, xattrs, owner in reversed(self.dirs):  # children come before parents
            self.meta(dst, st, xattrs, None, owner)


def _node(
    kind: str,
    st: os.stat_result,
    xattrs: dict[bytes, bytes],
    owner: tuple[int, int] | None,
    **kw: object,
) -> Node:
    """The Node export would build from the copy we just made (see tarexport.node_from_disk):
    ``owner`` None is a copy left ours, i.e. root's in the layer."""
    xb = dict(xattrs)  # our own xattr is not in what export will show
    uid, gid = parse_owner(xb.pop(OWNER_XATTR, None)) or owner or (0, 0)
    mode = stat.S_IMODE(st.st_mode)
    return Node(kind, mode, uid, gid, st.st_mtime_ns, xb, **kw)  # type: ignore[arg-type]


def _xattrs_opaque(path: bytes, key: str) -> bool:
    try:
        return os.getxattr(path, key, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _same_meta(
    a: os.stat_result, ax: dict[bytes, bytes], b: os.stat_result, bx: dict[bytes, bytes]
) -> bool:
    return (
        a.st_mode == b.st_mode
        and a.st_uid == b.st_uid
        and a.st_gid == b.st_gid
        and a.st_mtime_ns == b.st_mtime_ns
        and ax == bx
    )


def diff_upper(
    upper: str, lowers: list[str], dest: str, *, xattr_ns: XattrNs, privileged: bool
) -> tuple[str, int]:
    """Write into the empty dir ``dest`` the layer that ``upper`` adds on top of ``lowers``.

    ``privileged`` (real root): owners are applied; else they are recorded as a rootless store
    keeps them (``_Differ.ownership``). Returns the new layer's digest and canonical tar size."""
    d = _Differ(os.fsencode(upper), os.fsencode(dest), xattr_ns, not privileged)
    try:
        with NoGC():
            d.walk(b"", [os.fsencode(lo) for lo in lowers])
            d.finish()
            return write_nodes(dest, d.nodes, None)
    except OSError as e:
        where = f" ({os.fsdecode(e.filename)})" if e.filename else ""
        raise TophanError(f"cannot commit: {e.strerror}{where}") from e
