"""Overlay mounts: the new mount API first, a checked legacy string only as a fallback.

A legacy ``mount(2)`` option string lives in one page: a ``lowerdir=a:b:c`` longer than that is
cut *silently* by the kernel. With ``fsopen``/``fsconfig("lowerdir+")`` each layer is its own call,
so a 500-layer stack mounts whatever its path lengths. We fall back to the legacy string only when
the new API is missing, and refuse (never truncate) a string that would not fit.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass

from tophan import _libc
from tophan.errors import InUse, MountError

MAX_LOWERS = 500  # the kernel's OVL_MAX_STACK
PAGE_LIMIT = 4095  # the legacy data page, minus its NUL
FIXED_OPTIONS = ("index", "off"), ("metacopy", "off"), ("redirect_dir", "off")
# With userxattr the kernel refuses redirect_dir=off ("conflicting options: userxattr,
# redirect_dir=follow"): nofollow neither creates nor follows redirects, which is what we want.
USERXATTR_OPTIONS = ("index", "off"), ("metacopy", "off"), ("redirect_dir", "nofollow")


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    mountpoint: str
    fstype: str
    source: str
    options: str
    super_options: dict[str, str]


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out = bytearray()
    b = s.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(b):
        if b[i] == 0x5C and i + 3 < len(b) + 0 and b[i + 1 : i + 4].isdigit():
            out.append(int(b[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _parse_super(opts: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in opts.split(","):
        key, _, value = item.partition("=")
        out[key] = _unescape(value)
    return out


def mount_entry(target: str) -> MountEntry | None:
    """The topmost mount whose mount point is exactly ``target`` (None if nothing is there)."""
    found: MountEntry | None = None
    with open("/proc/self/mountinfo", "rb") as f:
        data = f.read().decode("utf-8", "surrogateescape")
    want = target.rstrip("/") or "/"
    for line in data.splitlines():
        fields = line.split(" ")
        if _unescape(fields[4]) != want:
            continue
        sep = fields.index("-", 6)
        found = MountEntry(
            int(fields[0]),
            want,
            fields[sep + 1],
            _unescape(fields[sep + 2]),
            fields[5],
            _parse_super(fields[sep + 3]),
        )
    return found


def is_our_overlay(target: str, upper: str) -> bool:
    """True if ``target`` carries an overlay whose upper dir is ``upper``."""
    entry = mount_entry(target)
    if entry is None or entry.fstype != "overlay":
        return False
    shown = entry.super_options.get("upperdir")
    return shown is not None and os.path.realpath(shown) == os.path.realpath(upper)


def in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split()[:3] != ["0", "0", "4294967295"]
    except OSError:
        return False


def mount_overlay(
    target: str,
    lowers: Sequence[str],
    upper: str | None,
    work: str | None,
    *,
    userxattr: bool,
) -> None:
    """Mount an overlay of ``lowers`` (top first) with ``upper``/``work`` at ``target``."""
    if not lowers:
        raise MountError("cannot mount an overlay without lower layers")
    if len(lowers) > MAX_LOWERS:
        raise MountError(
            f"cannot mount {len(lowers)} layers: the kernel stacks at most {MAX_LOWERS}",
            "squash some layers into one",
        )
    if (upper is None) != (work is None):
        raise MountError("an overlay needs both an upper and a work dir, or neither")
    try:
        _mount_new_api(target, lowers, upper, work, userxattr)
    except _NoNewApi:
        _mount_legacy(target, lowers, upper, work, userxattr)


class _NoNewApi(Exception):
    pass


def _context_log(fd: int) -> str:
    """The messages the kernel left in the fs context, e.g. 'overlay: failed to resolve ...'."""
    msgs = []
    while True:
        try:
            msg = os.read(fd, 1024)
        except OSError:
            break
        if not msg:
            break
        msgs.append(msg.decode(errors="replace").strip().removeprefix("e ").removeprefix("w "))
    return "; ".join(msgs)


def _mount_new_api(
    target: str, lowers: Sequence[str], upper: str | None, work: str | None, userxattr: bool
) -> None:
    try:
        fd = _libc.fsopen("overlay")
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.ENODEV):
            raise _NoNewApi from e
        raise _mount_error(e, target, "") from e
    try:
        try:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "lowerdir+", lowers[0])
        except OSError as e:
            if e.errno == errno.EINVAL and "lowerdir+" not in _context_log(fd):
                raise _NoNewApi from e  # a kernel before 6.8 knows no lowerdir+
            raise _mount_error(e, target, _context_log(fd)) from e
        try:
            for lower in lowers[1:]:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "lowerdir+", lower)
            if upper is not None and work is not None:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "upperdir", upper)
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "workdir", work)
            for key, value in USERXATTR_OPTIONS if userxattr else FIXED_OPTIONS:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, key, value)
            if userxattr:
                _libc.fsconfig(fd, _libc.FSCONFIG_SET_FLAG, "userxattr", None)
            _libc.fsconfig(fd, _libc.FSCONFIG_CMD_CREATE, None, None)
            mfd = _libc.fsmount(fd)
        except OSError as e:
            raise _mount_error(e, target, _context_log(fd)) from e
        try:
            _libc.move_mount(mfd, target)
        except OSError as e:
            raise _mount_error(e, target, "") from e
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def legacy_options(
    lowers: Sequence[str], upper: str | None, work: str | None, userxattr: bool
) -> str:
    """The ``mount(2)`` data string, or MountError if it cannot be expressed or would not fit."""
    for path in (*lowers, upper or "", work or ""):
        if any(c in path for c in ",:\\"):
            raise MountError(
                f"cannot mount {path!r} with a legacy option string: it contains ',' ':' or '\\'",
                "use a kernel with the new mount API (Linux >= 6.8), or a plainer store path",
            )
    parts = ["lowerdir=" + ":".join(lowers)]
    if upper is not None and work is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    parts += [f"{k}={v}" for k, v in (USERXATTR_OPTIONS if userxattr else FIXED_OPTIONS)]
    if userxattr:
        parts.append("userxattr")
    data = ",".join(parts)
    if len(data.encode()) > PAGE_LIMIT:
        raise MountError(
            f"cannot mount {len(lowers)} layers with a legacy option string:"
            f" it needs {len(data.encode())} bytes and the kernel keeps {PAGE_LIMIT}",
            "use a kernel with the new mount API (Linux >= 6.8), or a shorter store path",
        )
    return data


def _mount_legacy(
    target: str, lowers: Sequence[str], upper: str | None, work: str | None, userxattr: bool
) -> None:
    data = legacy_options(lowers, upper, work, userxattr)
    try:
        _libc.mount("overlay", target, "overlay", 0, data)
    except OSError as e:
        raise _mount_error(e, target, "") from e


def _mount_error(e: OSError, target: str, log: str) -> MountError:
    why = log or e.strerror or os.strerror(e.errno or 0)
    if not log and e.errno == errno.EINVAL:
        why = "the kernel refused the overlay options (its reason is in dmesg)"
    if e.filename and e.filename != target:
        why += f" ({e.filename})"
    hint = None
    if e.errno == errno.EPERM:
        hint = "mounting needs root or a user+mount namespace (unshare -Urm)"
    return MountError(f"cannot mount overlay on {target}: {why}", hint)


def unmount(target: str) -> bool:
    """Unmount ``target``. Returns False if nothing was mounted; a busy mount raises InUse."""
    try:
        _libc.umount2(target, _libc.UMOUNT_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT):
            return False
        if e.errno == errno.EBUSY:
            raise InUse(
                f"{target} is busy: a process has files open or its working directory there",
                "stop it and retry",
            ) from e
        raise MountError(f"cannot unmount {target}: {os.strerror(e.errno or 0)}") from e
    return True
