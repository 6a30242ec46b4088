"""Overlay mounts: the new mount API first, a checked legacy string only as a fallback.

A legacy ``mount(2)`` option string lives in one page: a ``lowerdir=a:b:c`` longer than that is
cut *silently* by the kernel. With ``fsopen``/``fsconfig("lowerdir+")`` (Linux >= 6.8) each layer
is its own call, so a 500-layer stack mounts whatever its path lengths: fsconfig takes strings of
at most 255 bytes, so a longer path goes over as an ``O_PATH`` fd (``FSCONFIG_SET_FD``, Linux >=
6.13). We fall back to the legacy string only when the kernel lacks ``lowerdir+``, and refuse
(never truncate) a string that would not fit.

Every mount is made with ``index=off,metacopy=off`` and no redirects, so an upper dir is a
self-contained diff that ``commit`` can read without understanding overlayfs internals.

Mount state is always read back from the kernel (``/proc/self/mountinfo``), never remembered.
"""

from __future__ import annotations

import errno
import os

from tophan._internal import libc as _libc
from tophan._internal.libc import once
from tophan.errors import InUse, MountError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_LOWERS = 500  # the kernel's OVL_MAX_STACK
_NO_REDIRECTS = (("index", "off"), ("metacopy", "off"), ("redirect_dir", "off"))
# With userxattr the kernel refuses redirect_dir=off ("conflicting options: userxattr,
# redirect_dir=follow", checked on 6.18): nofollow neither creates nor follows redirects either.
_NO_REDIRECTS_USERXATTR = (("index", "off"), ("metacopy", "off"), ("redirect_dir", "nofollow"))
_ROOTLESS_HINT = "mounting needs root, or a user and mount namespace: run it under `unshare -Urm`"
_NEW_API_HINT = "use Linux >= 6.8, whose new mount API takes one layer at a time"


# -- mounting ----------------------------------------------------------------------------------


def mount_overlay(
    target: str,
    lowers: Sequence[str],
    upper: str | None,
    work: str | None,
    *,
    userxattr: bool,
    nodev: bool = False,
    nosuid: bool = False,
) -> None:
    """Mount an overlay of ``lowers`` at ``target``; raises MountError with the kernel's reason.

    ``lowers`` are top first (like overlayfs' ``lowerdir=``): ``lowers[0]`` wins over the rest.
    ``upper`` and ``work`` go together; without them the overlay is read-only and the kernel
    needs at least two lowers. ``userxattr`` is for user namespaces: overlayfs then keeps its
    markers in ``user.overlay.*`` (it cannot write ``trusted.*`` there).
    """
    # The same layer twice (it can happen: names are refs, and two may share a digest) is
    # refused by overlayfs with ELOOP. Only its topmost copy can ever show anything.
    if len(lowers) <= MAX_LOWERS:
        lowers = list(dict.fromkeys(lowers))
    _check_stack(target, lowers, upper, work)
    try:
        _mount_new_api(target, lowers, upper, work, userxattr, nodev, nosuid)
    except _NoLowerdirPlus:
        mount_overlay_legacy(
            target, lowers, upper, work, userxattr=userxattr, nodev=nodev, nosuid=nosuid
        )


def _check_stack(target: str, lowers: Sequence[str], upper: str | None, work: str | None) -> None:
    what = f"cannot mount overlay on {_show(target)}"
    if not lowers:
        raise MountError(f"{what}: no lower layers given")
    if len(lowers) > MAX_LOWERS:
        raise MountError(
            f"{what}: {len(lowers)} layers, and the kernel stacks at most {MAX_LOWERS}",
            "squash some layers into one",
        )
    if (upper is None) != (work is None):
        raise MountError(f"{what}: an upper dir needs a work dir and vice versa")
    if upper is None and len(lowers) < 2:
        raise MountError(
            f"{what}: a read-only overlay needs at least 2 lower layers (the kernel refuses one)",
            "give it an upper and a work dir, or bind-mount the single layer read-only",
        )


class _NoLowerdirPlus(Exception):
    """The kernel has no fsopen, or its overlayfs does not know ``lowerdir+``."""


def _params(
    lowers: Sequence[str], upper: str | None, work: str | None, userxattr: bool
) -> list[tuple[str, str | None]]:
    """(key, value) pairs for fsconfig, in order; a None value is a flag."""
    # The source is what mountinfo, findmnt and mount(8) show: `overlay`, as `mount -t overlay
    # overlay` and overlayd give it, which scripts grep for (without it the kernel says `none`).
    params: list[tuple[str, str | None]] = [("source", "overlay")]
    params += [("lowerdir+", lower) for lower in lowers]
    if upper is not None and work is not None:
        params += [("upperdir", upper), ("workdir", work)]
    params += _NO_REDIRECTS_USERXATTR if userxattr else _NO_REDIRECTS
    if userxattr:
        params.append(("userxattr", None))
    return params


def _mount_new_api(
    target: str,
    lowers: Sequence[str],
    upper: str | None,
    work: str | None,
    userxattr: bool,
    nodev: bool = False,
    nosuid: bool = False,
) -> None:
    try:
        fd = _libc.fsopen("overlay")
    except OSError as e:
        if e.errno == errno.ENOSYS:
            raise _NoLowerdirPlus from e
        raise _mount_error(target, e, "", "") from e
    try:
        key: str | None = None
        value: str | None = None
        try:
            for key, value in _params(lowers, upper, work, userxattr):
                _set(fd, key, value)
            key = value = None
            _libc.fsconfig(fd, _libc.FSCONFIG_CMD_CREATE)
            attrs = (_libc.MOUNT_ATTR_NODEV if nodev else 0) | (
                _libc.MOUNT_ATTR_NOSUID if nosuid else 0
            )
            mfd = _libc.fsmount(fd, attr_flags=attrs)
        except OSError as e:
            log = _context_log(fd)
            if e.errno in (errno.EINVAL, errno.ENAMETOOLONG) and not lowerdir_plus_supported():
                raise _NoLowerdirPlus from e
            raise _mount_error(target, e, _param_label(key, value), log) from e
        try:
            _libc.move_mount(mfd, target)
        except OSError as e:
            raise _mount_error(target, e, f"mount point {_show(target)}", "") from e
        finally:
            # The detached-mount fd pins the mount: closed, the mount lives on at target only.
            os.close(mfd)
    finally:
        os.close(fd)


def _set(fd: int, key: str, value: str | None) -> None:
    if value is None:
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_FLAG, key)
    elif key in _PATH_KEYS and _by_fd(key, value):
        _set_path_by_fd(fd, key, value)
    else:
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, key, value)


_PATH_KEYS = frozenset(("lowerdir+", "upperdir", "workdir"))


def _by_fd(key: str, path: str) -> bool:
    # fsconfig takes strings of at most 255 bytes. And the kernel strips backslash escapes from
    # an upperdir/workdir string (not from lowerdir+): a dir handed over by fd needs neither.
    if len(path) > _libc.FSCONFIG_MAX_STRING // 4 and (
        len(os.fsencode(path)) > _libc.FSCONFIG_MAX_STRING
    ):
        return True
    return key != "lowerdir+" and "\\" in path


def _set_path_by_fd(fd: int, key: str, path: str) -> None:
    dfd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_FD, key, None, dfd)
    except OSError as e:
        if e.errno != errno.EINVAL or layer_fds_supported():
            raise
        _context_log(fd)  # drop the kernel's complaint about the fd: we retry another way
        if len(os.fsencode(path)) > _libc.FSCONFIG_MAX_STRING:
            raise OSError(
                errno.ENAMETOOLONG,
                f"longer than {_libc.FSCONFIG_MAX_STRING} bytes, which fsconfig takes"
                " only by file descriptor (Linux >= 6.13)",
                path,
            ) from e
        _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, key, path.replace("\\", "\\\\"))
    finally:
        os.close(dfd)


def _context_log(fd: int) -> str:
    """The kernel's messages for a context: lines like "e overlay: Unknown parameter 'x'"."""
    msgs = []
    while True:
        try:
            msg = os.read(fd, 1024)
        except OSError:  # ENODATA: no more messages
            break
        if not msg:
            break
        text = msg.decode(errors="replace").strip()
        msgs.append(text[2:] if text[:2] in ("e ", "w ", "i ") else text)
    return "; ".join(msgs)


@once
def lowerdir_plus_supported() -> bool:
    """Whether this kernel's overlayfs takes ``lowerdir+`` through fsconfig (Linux >= 6.8).

    Asked only after a mount failed with EINVAL, to tell "old kernel" from "bad options".
    Kernels 5.2-6.4 give overlayfs a *legacy* fs context that accepts any key (and fails only
    at create), so an unknown flag being accepted means "legacy"; 6.5-6.7 reject the key itself.
    """
    try:
        fd = _libc.fsopen("overlay")
    except OSError:
        return False
    try:
        try:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_FLAG, "tophan-probe-unknown-key")
            return False
        except OSError:
            pass
        try:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_STRING, "lowerdir+", "/")
            return True
        except OSError:
            return False
    finally:
        os.close(fd)


@once
def layer_fds_supported() -> bool:
    """Whether overlayfs takes layers as file descriptors (FSCONFIG_SET_FD, Linux >= 6.13)."""
    try:
        fd = _libc.fsopen("overlay")
    except OSError:
        return False
    try:
        dfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _libc.fsconfig(fd, _libc.FSCONFIG_SET_FD, "lowerdir+", None, dfd)
            return True
        except OSError:
            return False
        finally:
            os.close(dfd)
    finally:
        os.close(fd)


# -- the legacy fallback -----------------------------------------------------------------------


def _escape(path: str) -> str:
    # overlayfs splits options at unescaped ',' and lowerdir at unescaped ':', then drops the
    # backslashes, for upperdir and workdir too (checked on 6.18; the same code since 3.18).
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


@once
def legacy_limit() -> int:
    """Bytes of mount(2) data the kernel keeps: one page minus its terminating NUL."""
    return os.sysconf("SC_PAGE_SIZE") - 1


def legacy_options(
    lowers: Sequence[str], upper: str | None, work: str | None, *, userxattr: bool
) -> str:
    """The ``mount(2)`` data string; MountError if it would not fit in one page."""
    parts = ["lowerdir=" + ":".join(_escape(lower) for lower in lowers)]
    if upper is not None and work is not None:
        parts += [f"upperdir={_escape(upper)}", f"workdir={_escape(work)}"]
    parts += [f"{k}={v}" for k, v in (_NO_REDIRECTS_USERXATTR if userxattr else _NO_REDIRECTS)]
    if userxattr:
        parts.append("userxattr")
    data = ",".join(parts)
    size = len(os.fsencode(data))
    if size > legacy_limit():
        raise MountError(
            f"cannot mount {len(lowers)} layers with a mount(2) option string: it needs {size}"
            f" bytes and the kernel keeps {legacy_limit()} (and would cut the rest silently)",
            f"{_NEW_API_HINT}, or use fewer layers or a shorter store path",
        )
    return data


def mount_overlay_legacy(
    target: str,
    lowers: Sequence[str],
    upper: str | None,
    work: str | None,
    *,
    userxattr: bool,
    nodev: bool = False,
    nosuid: bool = False,
) -> None:
    """:func:`mount_overlay` through a ``mount(2)`` option string, for kernels before 6.8."""
    _check_stack(target, lowers, upper, work)
    data = legacy_options(lowers, upper, work, userxattr=userxattr)
    try:
        flags = (_libc.MS_NODEV if nodev else 0) | (_libc.MS_NOSUID if nosuid else 0)
        _libc.mount("overlay", target, "overlay", flags, data)
    except OSError as e:
        raise _mount_error(target, e, "", "") from e


# -- errors ------------------------------------------------------------------------------------


def _show(path: str | None) -> str:
    """A path for a one-line message."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _param_label(key: str | None, value: str | None) -> str:
    label = {"lowerdir+": "lower dir", "upperdir": "upper dir", "workdir": "work dir"}.get(
        key or ""
    )
    if label is not None:
        return f"{label} {_show(value)}"
    if key is not None:
        return f"option {key}" + ("" if value is None else f"={_show(value)}")
    return ""


def _mount_error(target: str, e: OSError, what: str, log: str) -> MountError:
    reason = e.strerror or os.strerror(e.errno or 0)
    if log:
        reason = log
    elif e.errno == errno.EINVAL and not what:
        reason = "the kernel refused the overlay options (its reason is in `dmesg`)"
    why = f"{what}: {reason}" if what else reason
    hint = _ROOTLESS_HINT if e.errno == errno.EPERM else None
    if e.errno == errno.ENODEV:
        hint = "this kernel has no overlayfs (try `modprobe overlay`)"
    return MountError(f"cannot mount overlay on {_show(target)}: {why}", hint)


# -- unmounting --------------------------------------------------------------------------------


def unmount(target: str, *, missing_ok: bool = True) -> bool:
    """Unmount the topmost mount at ``target``; True if something was unmounted.

    A busy mount raises :class:`InUse` and stays mounted (we never detach lazily: a process
    would keep writing into an upper dir we then commit or delete). When nothing is mounted
    there (or ``target`` does not exist) this returns False, or raises MountError if
    ``missing_ok`` is false.
    """
    try:
        _libc.umount2(target, _libc.UMOUNT_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            if missing_ok:
                return False
            raise MountError(f"cannot unmount {_show(target)}: nothing is mounted there") from e
        if e.errno == errno.EBUSY:
            raise InUse(
                f"mount {_show(target)} is busy: a process has files open or its working"
                " directory there",
                f"find it with `fuser -vm {_show(target)}`, stop it, then retry",
            ) from e
        hint = _ROOTLESS_HINT if e.errno == errno.EPERM else None
        raise MountError(f"cannot unmount {_show(target)}: {e.strerror}", hint) from e
    return True


# -- reading mount state -----------------------------------------------------------------------


class MountEntry:
    """One line of ``/proc/self/mountinfo``, escapes decoded.

    ``super_options`` maps each superblock option to its (last) value, "" for a flag. Overlay
    layer paths are best read from ``lowerdirs``/``upperdir``/``workdir``: a mount made with
    ``lowerdir+`` lists one ``lowerdir+`` per layer, while a legacy mount shows its option string
    as given, with overlayfs' backslash escapes, which these properties undo. (The kernel shows
    a path given as a string as it was given and one given by fd as its canonical path; only a
    new-API upper/work dir with a backslash, on Linux < 6.13, then shows escaped.)
    """

    def __init__(
        self,
        *,
        mount_id: int,
        parent_id: int,
        mountpoint: str,
        root: str,
        fstype: str,
        source: str,
        options: str,
        super_items: tuple[tuple[str, str], ...],
    ) -> None:
        # A plain class (no dataclasses import on a container's start path).
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.mountpoint = mountpoint
        self.root = root
        self.fstype = fstype
        self.source = source
        self.options = options
        self.super_items = super_items

    def _key(self) -> tuple[object, ...]:
        return (self.mount_id, self.parent_id, self.mountpoint, self.root, self.fstype,
                self.source, self.options, self.super_items)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MountEntry) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"MountEntry({self.mountpoint!r}, {self.fstype!r}, {self.source!r})"

    @property
    def super_options(self) -> dict[str, str]:
        return dict(self.super_items)

    @property
    def _legacy(self) -> bool:
        return "lowerdir" in self.super_options

    @property
    def lowerdirs(self) -> tuple[str, ...]:
        """Overlay lower dirs, top first."""
        if self._legacy:
            return tuple(_ovl_unescape(p) for p in _split_lowerdir(self.super_options["lowerdir"]))
        return tuple(v for k, v in self.super_items if k == "lowerdir+")

    @property
    def upperdir(self) -> str | None:
        return self._overlay_path("upperdir")

    @property
    def workdir(self) -> str | None:
        return self._overlay_path("workdir")

    def _overlay_path(self, key: str) -> str | None:
        value = self.super_options.get(key)
        if value is None or not self._legacy:
            return value
        return _ovl_unescape(value)


def _unescape(field: str) -> str:
    r"""Undo mountinfo's octal escapes (``\040`` space, ``\011`` tab, ``\012``, ``\134``, ...)."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        octal = raw[i + 1 : i + 4]
        if raw[i] == 0x5C and len(octal) == 3 and all(0x30 <= c <= 0x37 for c in octal):
            out.append(int(octal, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _escape_mountinfo(path: str) -> str:
    # The kernel escapes these in mount points; escaping our target once is cheaper than
    # unescaping every line.
    return (
        path.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )


def _ovl_unescape(s: str) -> str:
    """Drop overlayfs' backslash escapes: ``\\x`` -> ``x``."""
    if "\\" not in s:
        return s
    out = []
    chars = iter(s)
    for c in chars:
        out.append(next(chars, "") if c == "\\" else c)
    return "".join(out)


def _split_lowerdir(value: str) -> list[str]:
    """Split a legacy ``lowerdir=`` value at its unescaped colons (escapes kept)."""
    parts, cur, escaped = [], [], False
    for c in value:
        if escaped:
            cur.append(c)
            escaped = False
        elif c == "\\":
            cur.append(c)
            escaped = True
        elif c == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _parse_super(opts: str) -> tuple[tuple[str, str], ...]:
    items = []
    for item in opts.split(","):
        key, _, value = item.partition("=")
        items.append((_unescape(key), _unescape(value)))
    return tuple(items)


def _entry(fields: list[str]) -> MountEntry:
    sep = fields.index("-", 6)  # optional fields (shared:N, master:N) come before "-"
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        mountpoint=_unescape(fields[4]),
        root=_unescape(fields[3]),
        fstype=fields[sep + 1],
        source=_unescape(fields[sep + 2]),
        options=fields[5],
        super_items=_parse_super(fields[sep + 3]),
    )


def mount_entry(target: str) -> MountEntry | None:
    """The topmost mount whose mount point is exactly ``target``, or None.

    ``target`` is compared as an absolute, normalised path; symlinks are not resolved (pass a
    realpath if it may contain any), since mountinfo shows canonical paths.
    """
    want = _escape_mountinfo(os.path.abspath(target))
    with open("/proc/self/mountinfo", "rb") as f:
        data = f.read().decode("utf-8", "surrogateescape")
    found = [fields for line in data.splitlines() if (fields := line.split(" "))[4] == want]
    if not found:
        return None
    # Stacked mounts on one point: the top one is the mount no other of them sits on.
    parents = {fields[1] for fields in found}
    top = [fields for fields in found if fields[0] not in parents]
    return _entry(top[-1] if top else found[-1])


def is_our_overlay(target: str, upper: str) -> bool:
    """True if the topmost mount at ``target`` is an overlay whose upper dir is ``upper``.

    This is how a workspace tells that it really is mounted, and that what sits on its
    mount point is its own overlay and not some other mount.
    """
    entry = mount_entry(target)
    if entry is None or entry.fstype != "overlay":
        return False
    shown = entry.upperdir
    if shown is None:
        return False
    if shown == upper or ("\\" in shown and _ovl_unescape(shown) == upper):
        return True
    return os.path.realpath(shown) == os.path.realpath(upper)


def overlays_with_upper(upper: str) -> list[MountEntry]:
    """Every overlay mount (in this mount namespace) whose upper dir is ``upper``, topmost last:
    where a workspace is mounted when its metadata no longer says."""
    with open("/proc/self/mountinfo", "rb") as f:
        data = f.read().decode("utf-8", "surrogateescape")
    real = os.path.realpath(upper)
    out = []
    for line in data.splitlines():
        fields = line.split(" ")
        if fields[fields.index("-", 6) + 1] != "overlay":
            continue
        entry = _entry(fields)
        shown = entry.upperdir
        if shown is not None and real in (shown, _ovl_unescape(shown), os.path.realpath(shown)):
            out.append(entry)
    return out


# -- namespaces and privileges -----------------------------------------------------------------


def in_user_namespace() -> bool:
    """True unless this process's user namespace is the initial one (identity uid map)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def can_mount() -> bool:
    """A cheap guess: do we hold CAP_SYS_ADMIN (root, or root of a user namespace)?

    The kernel has the last word (a user namespace must also own our mount namespace);
    callers still handle MountError.
    """
    cap_sys_admin = 1 << 21
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & cap_sys_admin)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def mount_namespace_id() -> int:
    """The inode of our mount namespace: equal ids mean the same set of mounts."""
    return os.stat("/proc/self/ns/mnt").st_ino
