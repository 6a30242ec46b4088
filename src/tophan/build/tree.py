"""A read-only view of a root filesystem made of directory trees, top first, with overlayfs's
lookup rules: what COPY reads from (the build context, another stage) and writes over (the
image being built), and where ``--chown`` finds /etc/passwd.

Paths inside the tree are absolute strings (``"/usr/bin"``). On the host side nothing follows a
symlink: a host path is only ever made of components each checked (lstat) to be a real directory
of that layer, and a file is opened through a chain of ``O_DIRECTORY|O_NOFOLLOW`` directory fds,
then checked to be the inode that was looked up. A symlink in a layer or in the context is only
ever read as a link; links are followed *inside* the tree, by :meth:`Tree.resolve`, as in a
chroot.

Layer trees (``xattr_ns`` set) use the store's on-disk format (see ``tophan.layer.commit``):
whiteouts are char devices 0:0, an opaque directory has ``{ns}.overlay.opaque = y``, and an owner
a rootless store could not apply is in ``user.tophan.owner``. A plain directory (``xattr_ns``
None, the build context) gets no such interpretation: its char devices are char devices, and
its xattrs decide nothing.
"""

from __future__ import annotations

import errno
import os
import stat

from tophan.errors import TophanError
from tophan.layer.tarexport import OWNER_XATTR, filtered_xattrs, stored_owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_LINKS = 40  # the kernel's MAXSYMLINKS: one more is ELOOP
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a file (in a context being edited) must not hang the open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# FROM scratch: the root exists (an empty directory, owned by root) and holds nothing.
_EMPTY_ROOT = os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0))

Comps = tuple[str, ...]


def split(path: str) -> Comps:
    """``path``'s components, ``..`` removed lexically (clamped at the root): the lookups that
    follow no symlink have nothing else to go on."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return tuple(out)


def join(comps: Sequence[str]) -> str:
    return "/" + "/".join(comps)


def _parts(path: str) -> list[str]:
    """Components as written, ``..`` kept (resolve gives it its meaning after each link)."""
    return [p for p in path.split("/") if p not in ("", ".")]


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise TophanError(f"cannot look at {path}: {e.strerror}") from e


class Tree:
    """A read-only root filesystem made of directory trees, top first, with overlayfs's rules.

    ``xattr_ns`` None: a plain directory (the build context), one root at most, no whiteout or
    opaque interpretation. No roots at all: an empty root (FROM scratch)."""

    def __init__(self, lowers: Sequence[str], *, xattr_ns: str | None) -> None:
        if xattr_ns is None and len(lowers) > 1:
            raise ValueError("a plain directory tree has a single root")
        # realpath once, here: the caller names the roots; below them nothing is followed.
        self.lowers = [os.path.realpath(p) for p in lowers]
        self.xattr_ns = xattr_ns
        self._opaque_key = f"{xattr_ns}.overlay.opaque" if xattr_ns else ""
        # directory (components) -> the layers that show it, top first (an overlay "lower stack")
        self._stacks: dict[Comps, list[int]] = {(): list(range(len(self.lowers)))}

    def __repr__(self) -> str:
        return f"Tree({self.lowers!r}, xattr_ns={self.xattr_ns!r})"

    # -- lookups -------------------------------------------------------------------------------

    def _host(self, layer: int, comps: Comps) -> str:
        return self.lowers[layer] + "".join("/" + c for c in comps)

    def _opaque(self, host: str) -> bool:
        try:
            return os.getxattr(host, self._opaque_key, follow_symlinks=False) == b"y"
        except OSError:
            return False

    def _child_stack(self, stack: list[int], comps: Comps) -> list[int]:
        """The layers showing directory ``comps`` given those showing its parent: the first
        layer holding the name decides; a non-dir (file, link, whiteout) hides all below it,
        and so does an opaque directory (overlayfs's lookup)."""
        out = []
        for layer in stack:
            host = self._host(layer, comps)
            st = _lstat(host)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break
            out.append(layer)
            if self._opaque_key and self._opaque(host):
                break
        return out

    def _dir_stack(self, comps: Comps) -> list[int]:
        """The layers showing directory ``comps`` (empty if it is not a directory)."""
        known = len(comps)
        while comps[:known] not in self._stacks:
            known -= 1
        stack = self._stacks[comps[:known]]
        while known < len(comps) and stack:
            known += 1
            stack = self._child_stack(stack, comps[:known])
            self._stacks[comps[:known]] = stack
        return stack if known == len(comps) else []

    def _find(self, comps: Comps) -> tuple[int, os.stat_result] | None:
        """(layer, lstat) of the entry at ``comps`` (the top-most layer holding it); None if
        absent, whited out, or below a non-directory. The root of an empty tree is None."""
        if not comps:
            return (0, os.lstat(self.lowers[0])) if self.lowers else None
        for layer in self._dir_stack(comps[:-1]):
            st = _lstat(self._host(layer, comps))
            if st is None:
                continue
            if self._opaque_key and is_whiteout(st):
                return None
            return layer, st
        return None

    def lstat(self, path: str) -> os.stat_result | None:
        """The entry at ``path`` (no symlink followed, ``..`` lexical); None if absent."""
        comps = split(path)
        if not comps and not self.lowers:
            return _EMPTY_ROOT
        hit = self._find(comps)
        return hit[1] if hit else None

    def locate(self, path: str) -> str | None:
        """The host path of the entry at ``path`` (in the top-most layer holding it)."""
        comps = split(path)
        hit = self._find(comps)
        return self._host(hit[0], comps) if hit else None

    def readlink(self, path: str) -> str:
        """The target of the symlink at ``path`` (an addition to the builder's interface)."""
        host = self.locate(path)
        if host is None:
            raise TophanError(f"{path}: no such symlink")
        return os.readlink(host)

    def resolve(self, path: str, *, follow_last: bool = True) -> str:
        """``path`` with every symlink followed inside the tree, as in a chroot: an absolute
        target starts again at the tree's root, ``..`` at the root stays there. The result may
        not exist. More than MAX_LINKS links: TophanError, as the kernel's ELOOP.

        A component that is absent or not a directory ends the following: what comes after it
        is kept as written (``..`` still removes the component before it)."""
        todo = _parts(path)[::-1]
        out: list[str] = []
        links = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if out:
                    out.pop()
                continue
            comps = (*out, name)
            if todo or follow_last:
                hit = self._find(comps)
                if hit is not None and stat.S_ISLNK(hit[1].st_mode):
                    target = os.readlink(self._host(hit[0], comps))
                    links += 1
                    if links > MAX_LINKS:
                        raise TophanError(
                            f"too many levels of symbolic links in {path}",
                            "the image or the context holds a symlink loop",
                        )
                    if target:  # an empty target is ENOENT for the kernel: left as the link
                        if target.startswith("/"):
                            out = []
                        todo.extend(_parts(target)[::-1])
                        continue
            out.append(name)
        return join(out)

    def listdir(self, path: str) -> list[str]:
        """The names in directory ``path``, merged over the layers (sorted), whiteouts removed;
        [] if ``path`` is absent or not a directory (a symlink is not followed)."""
        comps = split(path)
        hit = self._find(comps)
        if hit is None or not stat.S_ISDIR(hit[1].st_mode):
            return []
        seen: set[str] = set()
        out = []
        for layer in self._dir_stack(comps):
            host = self._host(layer, comps)
            try:
                with os.scandir(host) as it:
                    entries = list(it)
            except OSError as err:
                raise TophanError(f"cannot list {host}: {err.strerror}") from err
            for e in entries:
                if e.name in seen:
                    continue
                seen.add(e.name)
                if self._opaque_key and self._whiteout(e):
                    continue  # hides the name in the layers below, and is no entry itself
                out.append(e.name)
        return sorted(out)

    @staticmethod
    def _whiteout(e: os.DirEntry[str]) -> bool:
        if e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False):
            return False  # the common cases, answered by readdir's d_type without a stat
        return is_whiteout(e.stat(follow_symlinks=False))

    # -- metadata ------------------------------------------------------------------------------

    def _hit(self, path: str) -> tuple[Comps, int, os.stat_result] | None:
        comps = split(path)
        hit = self._find(comps)
        if hit is None:
            if comps or self.lowers:
                raise TophanError(f"{path}: no such file in the tree")
            return None  # the empty tree's root
        return comps, hit[0], hit[1]

    def owner(self, path: str) -> tuple[int, int]:
        """The entry's effective (uid, gid): a layer's ``user.tophan.owner`` when it has one
        (rootless stores keep there what they could not apply), else the file's own."""
        hit = self._hit(path)
        if hit is None:
            return 0, 0
        comps, layer, st = hit
        if self.xattr_ns is not None and not stat.S_ISLNK(st.st_mode):
            try:
                raw = os.getxattr(self._host(layer, comps), OWNER_XATTR, follow_symlinks=False)
                uid, gid = raw.split(b":")
                return int(uid), int(gid)
            except (OSError, ValueError):
                pass
            return stored_owner(st)
        return st.st_uid, st.st_gid

    def xattrs(self, path: str) -> dict[str, bytes]:
        """The entry's xattrs as a layer carries them: overlayfs's and our owner bookkeeping
        removed (in the context they mean nothing, and must not become layer content)."""
        hit = self._hit(path)
        if hit is None:
            return {}
        comps, layer, _ = hit
        got = filtered_xattrs(os.fsencode(self._host(layer, comps)))
        got.pop(OWNER_XATTR, None)
        return {k.decode("utf-8", "surrogateescape"): v for k, v in got.items()}

    # -- content -------------------------------------------------------------------------------

    def open_file(self, path: str, expect: os.stat_result | None = None) -> int:
        """An fd on the regular file at ``path`` (no symlink followed anywhere, on the host or
        in the tree), checked to be ``expect``'s inode when given (an addition to the builder's
        interface: COPY reads content through it)."""
        comps = split(path)
        hit = self._find(comps)
        if hit is None or not comps:
            raise TophanError(f"{path}: no such file")
        layer, st = hit
        want = expect or st
        try:
            fd = self._open_under(layer, comps)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO):
                raise _changed(path) from e  # the checked path is not what it was
            raise TophanError(f"cannot read {path}: {e.strerror}") from e
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (want.st_dev, want.st_ino):
            os.close(fd)
            raise _changed(path)
        return fd

    def _open_under(self, layer: int, comps: Comps) -> int:
        fd = os.open(self.lowers[layer], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in comps[:-1]:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            return os.open(comps[-1], _FILE_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)

    def read_file(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """The content of the regular file at ``path`` (symlinks followed inside the tree);
        None if there is none. More than ``limit`` bytes, or not a regular file: TophanError."""
        resolved = self.resolve(path)
        st = self.lstat(resolved)
        if st is None:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise TophanError(f"{path} is not a regular file", "the image's copy of it is odd")
        fd = self.open_file(resolved, st)
        try:
            data = b""
            while len(data) <= limit:
                chunk = os.read(fd, limit + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) > limit:
            raise TophanError(f"{path} is larger than {limit} bytes", "too large to be read here")
        return data


def _changed(path: str) -> TophanError:
    return TophanError(
        f"{path} changed while it was being read", "keep the build context still during a build"
    )
