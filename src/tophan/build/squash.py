"""Several layers as one: what ``--layer STAGE=NAME`` keeps of a stage.

The layers (top first) are merged the way overlayfs shows them into one directory in upper-dir
form (hard links to the immutable layer files, whiteouts and opaque directories where the
merged layers hide what lies below them), and that is diffed against the base exactly as a
workspace commit is: entries identical to the base and whiteouts of names the base lacks go.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    XattrNs = Literal["trusted", "user"]


def squash(
    layers: list[str],
    base: list[str],
    dest: str,
    scratch: str,
    *,
    xattr_ns: XattrNs,
    privileged: bool,
) -> tuple[str, int]:
    """Write into the empty dir ``dest`` one layer equal to ``layers`` (top first) on top of
    ``base`` (top first); ``scratch`` is a new dir for the merged upper. Returns the digest and
    tar size."""
    from tophan._internal.fs import rmtree
    from tophan.layer import commit

    opaque = f"{xattr_ns}.overlay.opaque"
    os.mkdir(scratch, 0o700)
    try:
        _merge(layers, scratch, opaque)
        return commit.diff_upper(scratch, base, dest, xattr_ns=xattr_ns, privileged=privileged)
    finally:
        rmtree(scratch)


def _merge(layers: list[str], out: str, opaque: str) -> None:
    # Iterative (a deep tree must not hit the recursion limit): (relative dir, its stack).
    todo: list[tuple[str, list[str]]] = [("", list(layers))]
    while todo:
        rel, stack = todo.pop()
        names: set[str] = set()
        for d in stack:
            names.update(os.listdir(os.path.join(d, rel)))
        for name in sorted(names):
            child = os.path.join(rel, name)
            top = _top(stack, child)
            if top is None:
                continue
            path, st = top
            target = os.path.join(out, child)
            if stat.S_ISDIR(st.st_mode):
                below, hides = _child_stack(stack, child, opaque)
                _mkdir_like(path, target, st, opaque if hides else None)
                todo.append((child, below))
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), target)
                _meta(path, target, st, link=True)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                os.mknod(target, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
                _meta(path, target, st)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(target, 0o600)
                _meta(path, target, st)
            else:
                os.link(path, target)  # layer files are immutable: share, don't copy
    # directory times last: creating entries changed them
    _fix_dir_times(layers, out)


def _top(stack: list[str], rel: str) -> tuple[str, os.stat_result] | None:
    for d in stack:
        path = os.path.join(d, rel)
        try:
            return path, os.lstat(path)
        except FileNotFoundError:
            continue
    return None


def _child_stack(stack: list[str], rel: str, opaque: str) -> tuple[list[str], bool]:
    """The layers a merged dir ``rel`` shows (top first), and whether they hide the base: an
    opaque dir, a whiteout or a non-directory among them ends the view below."""
    out: list[str] = []
    for d in stack:
        path = os.path.join(d, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            return out, True
        out.append(d)
        if _is_opaque(path, opaque):
            return out, True
    return out, False


def _is_opaque(path: str, key: str) -> bool:
    try:
        return os.getxattr(path, key, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _mkdir_like(src: str, dst: str, st: os.stat_result, opaque: str | None) -> None:
    os.mkdir(dst, 0o700)
    _meta(src, dst, st)
    if opaque is not None:  # (a top dir that is opaque already carries it)
        os.setxattr(dst, opaque, b"y", follow_symlinks=False)


def _meta(src: str, dst: str, st: os.stat_result, *, link: bool = False) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    for key in os.listxattr(src, follow_symlinks=False):
        os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=False), follow_symlinks=False)
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _fix_dir_times(layers: list[str], out: str) -> None:
    for root, dirs, _files in os.walk(out, topdown=False):
        for name in dirs:
            rel = os.path.relpath(os.path.join(root, name), out)
            top = _top(layers, rel)
            if top is not None:
                st = top[1]
                os.utime(
                    os.path.join(root, name),
                    ns=(st.st_atime_ns, st.st_mtime_ns),
                    follow_symlinks=False,
                )
