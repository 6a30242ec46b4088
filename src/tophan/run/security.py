"""Process hardening for a container's init, applied in the forked child right before execve.

The defaults are Docker's (moby's), so that what runs under docker runs here and what docker
forbids is forbidden here: docs/security.md lists every one and why. The runtime calls, in order::

    compile_seccomp("default", caps, cache_dir)   # in the caller, before forking: BPF programs
    mask_paths("/")                  # once /proc and /sys are mounted in the new mount namespace
    drop_bounding(caps)              # while still privileged (needs CAP_SETPCAP)
    set_no_new_privs()
    load_bpf(programs)               # while CAP_SYS_ADMIN or no_new_privs is held
    set_caps(caps, uid)              # after setgroups/setgid/setuid with PR_SET_KEEPCAPS

The kernel takes a filter only with no_new_privs or CAP_SYS_ADMIN: without no_new_privs, load
the filter before set_caps (it allows what set_caps and the user switch need).
:func:`load_seccomp` is compile + load in one call, for use in one process.

Capability names are spelled as in the OCI runtime spec and moby: ``CAP_NET_ADMIN``.
Importing this module does no work; the seccomp binding is imported only to compile a filter.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys

from tophan._internal import libc as _libc
from tophan.errors import MountError, TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import ModuleType
    from typing import Any

# capabilities(7), by number: the index is the capability's bit.
# fmt: off
CAP_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_CAP_BITS = {name: bit for bit, name in enumerate(CAP_NAMES)}

# podman 4's default set (containers.conf default_capabilities): moby's DefaultCapabilities()
# without NET_RAW (raw sockets: ARP/ICMP spoofing on the network), MKNOD and AUDIT_WRITE.
# `--cap-add` brings any of them back.
DEFAULT_CAPS: frozenset[str] = frozenset(
    (
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    )
)
# fmt: on

# moby's oci.DefaultLinuxSpec() (with /proc/interrupts and /sys/devices/virtual/powercap, which
# newer releases add): kernel state a container has no business reading (kcore, keys, timer
# and scheduler internals: info leaks and side channels), or hardware knobs it must not reach.
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/sys/dev/block",  # podman's: the host's block devices by number
)
# Readable, but writes would change the host kernel: sysctls, sysrq, IRQ affinity, bus devices.
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# statvfs(3) reports these mount flags with the same bits as mount(2), except relatime.
_KEPT_MOUNT_FLAGS = (
    _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME
)
_MS_RELATIME = 1 << 21


# -- capabilities --------------------------------------------------------------------------------


def _normalize_cap(name: str) -> str:
    """``net_admin``, ``CAP_NET_ADMIN`` -> ``CAP_NET_ADMIN``; ``all`` -> ``ALL``; else raise."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in _CAP_BITS:
        raise UsageError(f"unknown capability {name!r}", _cap_hint(full))
    return full


def _cap_hint(full: str) -> str:
    import difflib  # only on this error path

    # Compared without the CAP_ prefix every name shares, which would make anything "close".
    bare = [name[4:] for name in CAP_NAMES]
    close = difflib.get_close_matches(full[4:], bare, n=1, cutoff=0.75)
    if close:
        return f"did you mean {close[0]}?"
    return "names are those of capabilities(7), with or without CAP_, in any case, or ALL"


def resolve_caps(add: Iterable[str], drop: Iterable[str]) -> frozenset[str]:
    """The capability set of ``docker run --cap-add ADD --cap-drop DROP``.

    ``ALL`` in ``add`` gives every capability but those dropped (it wins over ``ALL`` in
    ``drop``); ``ALL`` in ``drop`` gives only those added; otherwise the default set less
    ``drop`` plus ``add``. Unknown names raise :class:`UsageError`.
    """
    adds = {_normalize_cap(c) for c in add}
    drops = {_normalize_cap(c) for c in drop}
    if "ALL" in adds:
        return frozenset(CAP_NAMES) - drops
    if "ALL" in drops:
        return frozenset(adds)
    return (DEFAULT_CAPS - drops) | adds


def cap_mask(caps: Iterable[str]) -> int:
    """The bit mask of ``caps`` (canonical names), as in /proc/PID/status."""
    mask = 0
    for name in caps:
        mask |= 1 << _CAP_BITS[name]
    return mask


def _cap_last() -> int:
    """The kernel's highest capability number (its cap_last_cap), without needing /proc."""
    last = -1
    for bit in range(64):
        try:
            _libc.prctl(PR_CAPBSET_READ, bit)
        except OSError:  # EINVAL: past the kernel's last capability
            break
        last = bit
    return last


def bounding_caps() -> frozenset[str]:
    """The capabilities in this process's bounding set (those tophan knows by name)."""
    names = set()
    for bit in range(min(_cap_last() + 1, len(CAP_NAMES))):
        if _libc.prctl(PR_CAPBSET_READ, bit) == 1:
            names.add(CAP_NAMES[bit])
    return frozenset(names)


def drop_bounding(keep: frozenset[str]) -> None:
    """Drop from the bounding set every capability not in ``keep``: nothing can regain them.

    Needs CAP_SETPCAP, so it runs before the switch to the container's user. Capabilities the
    kernel has but tophan cannot name are dropped too.
    """
    for bit in range(_cap_last() + 1):
        name = CAP_NAMES[bit] if bit < len(CAP_NAMES) else None
        if name in keep:
            continue
        try:
            _libc.prctl(PR_CAPBSET_DROP, bit)
        except OSError as e:
            raise TophanError(
                f"cannot drop {name or bit} from the bounding set: {e.strerror}",
                "the container's init needs CAP_SETPCAP until drop_bounding",
            ) from e


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _capget() -> tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.libc().capget(ctypes.byref(header), data) != 0:
        _libc.raise_errno()
    lo, hi = data[0], data[1]
    return (
        lo.effective | hi.effective << 32,
        lo.permitted | hi.permitted << 32,
        lo.inheritable | hi.inheritable << 32,
    )


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) with the 64-bit (version 3) layout: two 32-bit words per set."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for word in (0, 1):
        shift = 32 * word
        data[word].effective = (effective >> shift) & 0xFFFFFFFF
        data[word].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[word].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc.libc().capset(ctypes.byref(header), data) != 0:
        _libc.raise_errno()


def set_caps(keep: frozenset[str], uid: int) -> None:
    """Set the process's capabilities as Docker does, after the switch to the container's user.

    uid 0: permitted = effective = ``keep``, and they survive execve (root's exec recomputes
    them from the bounding set, which :func:`drop_bounding` made ``keep``). Any other uid: all
    cleared, so the command runs with none (as Docker's non-root containers do after exec).
    Inheritable and ambient are always empty: a non-empty inheritable set lets a later exec of a
    file with inheritable file capabilities regain them (CVE-2022-24769, moby 20.10.14).
    Capabilities this process does not hold itself cannot be granted and are left out.
    """
    if uid == 0:
        permitted = cap_mask(keep) & _capget()[1]
        target = (permitted, permitted, 0)
    else:
        target = (0, 0, 0)
    try:
        _capset(*target)
    except OSError as e:
        raise TophanError(f"cannot set the container's capabilities: {e.strerror}") from e
    try:
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if e.errno != errno.EINVAL:  # EINVAL: a kernel before ambient capabilities (4.3)
            raise


def set_no_new_privs() -> None:
    """No execve can grant privileges again: setuid bits and file capabilities are ignored."""
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1)


# -- masked and read-only paths ------------------------------------------------------------------


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def mask_paths(root: str = "/") -> None:
    """Hide MASKED_PATHS and make READONLY_PATHS read-only below ``root``, as runc does.

    Call it in the container's mount namespace once its /proc and /sys are mounted (a fresh
    procfs holds no symlinks an image could plant). A masked file gets /dev/null bound over it,
    a masked directory an empty read-only tmpfs; a read-only path is bound onto itself and
    remounted read-only. Paths this kernel does not have are skipped.
    """
    for path in MASKED_PATHS:
        _mask(_under(root, path))
    for path in READONLY_PATHS:
        _make_readonly(_under(root, path))


def _mask(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            flags = _libc.MS_RDONLY | _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
            _libc.mount("tmpfs", path, "tmpfs", flags, "size=0,mode=0555")
        else:
            _libc.mount("/dev/null", path, None, _libc.MS_BIND, None)
    except OSError as e:
        raise MountError(f"cannot mask {path}: {e.strerror}") from e


def _make_readonly(path: str) -> None:
    try:
        vfs = os.statvfs(path)
    except FileNotFoundError:
        return
    # A bind remount must repeat the flags the mount already has: in a user namespace nosuid,
    # nodev and noexec are locked, and dropping them fails with EPERM.
    kept = vfs.f_flag & _KEPT_MOUNT_FLAGS
    if vfs.f_flag & os.ST_RELATIME:
        kept |= _MS_RELATIME
    try:
        _libc.mount(path, path, None, _libc.MS_BIND | _libc.MS_REC, None)
        flags = _libc.MS_BIND | _libc.MS_REMOUNT | _libc.MS_RDONLY | kept
        _libc.mount(path, path, None, flags, None)
    except OSError as e:
        raise MountError(f"cannot make {path} read-only: {e.strerror}") from e


# -- seccomp -------------------------------------------------------------------------------------

# libseccomp's sonames: stable ABI names, so no need for find_library's two `ldconfig -p` runs.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def preload() -> None:
    """Import the seccomp binding (and load libseccomp) now.

    load_seccomp runs after pivot_root, where the host's libraries and modules are gone: call
    this before, in the parent or the child. pyseccomp finds its libraries with
    ctypes.util.find_library, which runs `ldconfig -p` twice (~20 ms); the stable sonames are
    tried first instead.
    """
    if "pyseccomp" in sys.modules:
        return
    import ctypes.util

    original = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        soname = _SONAMES.get(name)
        if soname is not None:
            try:
                ctypes.CDLL(soname)
                return soname
            except OSError:
                pass
        return original(name)

    ctypes.util.find_library = find_library
    try:
        import pyseccomp  # noqa: F401
    finally:
        ctypes.util.find_library = original


def _pyseccomp() -> ModuleType:
    try:
        preload()
    except (ImportError, RuntimeError, OSError) as e:
        raise TophanError(
            f"cannot load libseccomp: {e}",
            "install libseccomp2; compile the filter before pivot_root (compile_seccomp)",
        ) from e
    return sys.modules["pyseccomp"]


def load_seccomp(profile: str | None = "default", caps: frozenset[str] | None = None) -> None:
    """Load a seccomp filter into this process (and so into what it execs).

    ``"default"``: moby's default profile (see docs/security.md), whose conditional rules follow
    ``caps`` like moby's follow the container's bounding set (default: this process's bounding
    set, which :func:`drop_bounding` set). ``None`` or ``"unconfined"``: no filter.

    The kernel takes a filter only from a process with no_new_privs or CAP_SYS_ADMIN: call
    :func:`set_no_new_privs` first, or load before :func:`set_caps` drops CAP_SYS_ADMIN.
    """
    if caps is None:
        caps = bounding_caps()
    programs = compile_seccomp(profile, caps)
    if programs:
        load_bpf(programs)


# Compiled filters by (profile, caps, kernel, machine): building one with libseccomp costs
# ~30 ms with the binding's import, loading a compiled one next to nothing.
_COMPILED: dict[str, list[bytes]] = {}
_SECCOMP_SET_MODE_FILTER = 1
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348}


def compile_seccomp(
    profile: str | None, caps: frozenset[str], cache_dir: str | None = None
) -> list[bytes] | None:
    """The BPF programs of ``profile`` for ``caps`` on this machine (None: unconfined).

    Cached in memory, and in ``cache_dir`` when given (one file per key, written atomically), so
    a container start can load a filter without importing libseccomp at all."""
    if profile is None or profile == "unconfined":
        return None
    if profile != "default":
        raise UsageError(
            f"unknown seccomp profile {profile!r}", "use seccomp=default or seccomp=unconfined"
        )
    key = _cache_key(profile, caps)
    programs = _COMPILED.get(key)
    if programs is None and cache_dir is not None:
        programs = _read_cached(os.path.join(cache_dir, _cache_name(key)), key)
    if programs is None:
        seccomp = _pyseccomp()
        programs = [_export(f) for f in _default_filters(seccomp, caps, os.uname())]
        if cache_dir is not None:
            _write_cached(os.path.join(cache_dir, _cache_name(key)), key, programs)
    _COMPILED[key] = programs
    return programs


def _cache_key(profile: str, caps: frozenset[str]) -> str:
    # No hashlib/glob here: they cost a container start more than loading the filter does.
    u = os.uname()
    st = os.stat(__file__)  # this file holds the profile: a new version is a new key
    parts = [profile, ",".join(sorted(caps)), u.release, u.machine, _libseccomp_id(u.machine),
             f"{st.st_size}:{st.st_mtime_ns}"]  # fmt: skip
    return "\0".join(parts)


def _cache_name(key: str) -> str:
    import zlib

    # A short file name; the full key is inside the file and checked on every read.
    return f"seccomp-{zlib.crc32(key.encode()):08x}-{len(key)}.bpf"


def _libseccomp_id(machine: str) -> str:
    # Which libseccomp names which syscalls: the installed version is part of the key.
    for d in (
        f"/usr/lib/{machine}-linux-gnu",
        f"/lib/{machine}-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ):
        path = os.path.join(d, "libseccomp.so.2")
        if os.path.exists(path):
            return os.path.realpath(path)
    return "unknown"


def _export(flt: Any) -> bytes:
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            flt.export_bpf(f)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_cached(path: str, key: str) -> list[bytes] | None:
    import struct

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    header = key.encode() + b"\n"
    if not data.startswith(header):
        return None  # another key with the same short name, or a torn file: rebuild
    programs, i = [], len(header)
    try:
        (count,) = struct.unpack_from("<I", data, i)
        i += 4
        for _ in range(count):
            (n,) = struct.unpack_from("<I", data, i)
            i += 4
            programs.append(data[i : i + n])
            i += n
    except struct.error:
        return None
    if i != len(data) or any(len(p) % 8 for p in programs):
        return None  # torn or foreign: rebuild
    return programs


def _write_cached(path: str, key: str, programs: list[bytes]) -> None:
    import struct

    from tophan._internal.fs import atomic_write

    blob = (
        key.encode()
        + b"\n"
        + struct.pack("<I", len(programs))
        + b"".join(struct.pack("<I", len(p)) + p for p in programs)
    )
    try:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        atomic_write(path, blob)
    except OSError:
        pass  # a cache: a read-only store just rebuilds next time


def load_bpf(programs: list[bytes]) -> None:
    """Install compiled filters, in order, with seccomp(2): no libseccomp needed here."""

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    nr = _SYS_SECCOMP.get(os.uname().machine)
    if nr is None:
        raise TophanError(f"seccomp filters are not supported on {os.uname().machine} here")
    fn = _libc.libc().syscall
    fn.restype = ctypes.c_long
    for prog in programs:
        buf = ctypes.create_string_buffer(prog, len(prog))
        fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
        ret = fn(
            ctypes.c_long(nr),
            ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
            ctypes.c_long(0),
            ctypes.byref(fprog),
        )
        if ret < 0:
            err = ctypes.get_errno()
            hint = None
            if err == errno.EACCES:
                hint = "set no_new_privs first, or load the filter while CAP_SYS_ADMIN is held"
            raise TophanError(f"cannot load the seccomp filter: {os.strerror(err)}", hint)


class _Rule:
    """One entry of moby's profile: syscalls, an action, argument tests, when it applies."""

    __slots__ = (
        "arches",
        "args",
        "caps",
        "fail_errno",
        "min_kernel",
        "names",
        "not_arches",
        "not_caps",
    )

    def __init__(
        self,
        names: str,
        *,
        fail_errno: int | None = None,
        args: tuple[tuple[int, str, int], ...] = (),
        caps: tuple[str, ...] = (),
        not_caps: tuple[str, ...] = (),
        arches: tuple[str, ...] = (),
        not_arches: tuple[str, ...] = (),
        min_kernel: tuple[int, int] | None = None,
    ) -> None:
        self.names = names.split()
        self.fail_errno = fail_errno  # None: allow; else fail with this errno
        self.args = args  # (index, op, value); for MASKED_EQ value is the mask, compared to 0
        self.caps = caps  # included only if all of these are in the set
        self.not_caps = not_caps  # excluded if any of these is in the set
        self.arches = arches  # included only on these native arches (moby's names)
        self.not_arches = not_arches
        self.min_kernel = min_kernel

    def applies(self, caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
        if any(c in caps for c in self.not_caps) or arch in self.not_arches:
            return False
        if self.arches and arch not in self.arches:
            return False
        if not all(c in caps for c in self.caps):
            return False
        return self.min_kernel is None or kernel >= self.min_kernel


_NS_FLAGS = (
    _libc.CLONE_NEWNS
    | _libc.CLONE_NEWUTS
    | _libc.CLONE_NEWIPC
    | _libc.CLONE_NEWUSER
    | _libc.CLONE_NEWPID
    | _libc.CLONE_NEWNET
    | _libc.CLONE_NEWCGROUP
)
_AF_VSOCK = 40


def _moby_rules() -> list[_Rule]:
    """moby's profiles/seccomp/default.json, entry by entry, in its order."""
    allow = _Rule(
        """
        accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
        clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
        clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
        copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
        epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
        exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
        fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
        flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync
        ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat getcpu getcwd getdents
        getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
        getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid
        getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname
        getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
        inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
        io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit
        io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
        landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
        listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
        membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
        mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
        mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget
        msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
        _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
        pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
        process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
        readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
        remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
        rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
        rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity
        sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
        sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity
        sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget
        semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto
        setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer
        setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32
        setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area
        set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack
        signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs
        statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
        timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
        timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
        timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
        utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
        """
    )
    eq, ne, masked = "EQ", "NE", "MASKED_EQ"
    return [
        allow,
        _Rule("process_vm_readv process_vm_writev ptrace", min_kernel=(4, 8)),
        _Rule("socket", args=((0, ne, _AF_VSOCK),)),
        # Only the personalities programs use (query, linux32, uname26): others change how the
        # kernel lays out memory or interprets the binary (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE).
        *(
            _Rule("personality", args=((0, eq, value),))
            for value in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
        ),
        _Rule("sync_file_range2 swapcontext", arches=("ppc64le",)),
        _Rule(
            "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
            arches=("arm", "arm64"),
        ),
        _Rule("arch_prctl", arches=("amd64", "x32")),
        _Rule("modify_ldt", arches=("amd64", "x32", "x86")),
        _Rule(
            "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr", arches=("s390", "s390x")
        ),
        _Rule("riscv_flush_icache", arches=("riscv64",)),
        _Rule("open_by_handle_at", caps=("CAP_DAC_READ_SEARCH",)),
        _Rule(
            """bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
            mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname
            sethostname setns syslog umount umount2 unshare""",
            caps=("CAP_SYS_ADMIN",),
        ),
        # Without CAP_SYS_ADMIN: clone only without namespace flags (no new user namespace to
        # gain capabilities in); clone3 passes its flags in memory seccomp cannot read, so it
        # fails with ENOSYS and glibc falls back to clone.
        _Rule(
            "clone",
            args=((0, masked, _NS_FLAGS),),
            not_caps=("CAP_SYS_ADMIN",),
            not_arches=("s390", "s390x"),
        ),
        _Rule(
            "clone",
            args=((1, masked, _NS_FLAGS),),  # s390 swaps clone's first two arguments
            arches=("s390", "s390x"),
            not_caps=("CAP_SYS_ADMIN",),
        ),
        _Rule("clone3", fail_errno=errno.ENOSYS, not_caps=("CAP_SYS_ADMIN",)),
        _Rule("reboot", caps=("CAP_SYS_BOOT",)),
        _Rule("chroot", caps=("CAP_SYS_CHROOT",)),
        _Rule("delete_module init_module finit_module", caps=("CAP_SYS_MODULE",)),
        _Rule("acct", caps=("CAP_SYS_PACCT",)),
        _Rule(
            "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
            caps=("CAP_SYS_PTRACE",),
        ),
        _Rule("iopl ioperm", caps=("CAP_SYS_RAWIO",)),
        _Rule("settimeofday stime clock_settime clock_settime64", caps=("CAP_SYS_TIME",)),
        _Rule("vhangup", caps=("CAP_SYS_TTY_CONFIG",)),
        _Rule("get_mempolicy mbind set_mempolicy set_mempolicy_home_node", caps=("CAP_SYS_NICE",)),
        _Rule("syslog", caps=("CAP_SYSLOG",)),
        _Rule("bpf", caps=("CAP_BPF",)),
        _Rule("perf_event_open", caps=("CAP_PERFMON",)),
    ]


# uname's machine -> moby's native arch name (its goToNative) and the sub-architectures its
# archMap loads with it: a 64-bit kernel also runs 32-bit (and x32) code, whose syscalls have
# other numbers and must be filtered too, not let through or killed.
_MOBY_ARCH = {
    "x86_64": "amd64",
    "i386": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv8l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
}
_SUB_ARCHES = {
    "amd64": ("X86", "X32"),
    "arm64": ("ARM",),
    "s390x": ("S390",),
    "mips64": ("MIPS", "MIPS64N32"),
}
# Syscall numbers are below this on every architecture libseccomp's native table covers here
# (x86_64's x32 compat range starts at 512): the bound of the ENOSYS range below.
_NR_LIMIT = 512


def _kernel_version(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _default_filters(
    seccomp: ModuleType, caps: frozenset[str], uname: os.uname_result
) -> list[Any]:
    """libseccomp filters for moby's default profile, in load order.

    The first is the profile: default ERRNO(EPERM), the rules that apply for ``caps`` on this
    architecture and kernel, and, like runc, ENOSYS for every syscall newer than the newest the
    profile names (so libcs fall back from syscalls the profile predates, e.g. fchmodat2). The
    second, present when libseccomp's table is older than _NR_LIMIT, answers ENOSYS for the
    numbers libseccomp cannot name: loaded last, it wins over the first's EPERM.
    """
    arch = _MOBY_ARCH.get(uname.machine, uname.machine)
    kernel = _kernel_version(uname.release)
    main = seccomp.SyscallFilter(seccomp.ERRNO(errno.EPERM))
    for sub in _SUB_ARCHES.get(arch, ()):
        main.add_arch(getattr(seccomp.Arch, sub))
    _common_attrs(seccomp, main, bad_arch=seccomp.KILL_PROCESS)

    newest = -1
    seen: set[tuple[str, int, tuple[tuple[int, str, int], ...]]] = set()
    for rule in _moby_rules():
        if not rule.applies(caps, arch, kernel):
            continue
        action = seccomp.ALLOW if rule.fail_errno is None else seccomp.ERRNO(rule.fail_errno)
        args = [_seccomp_arg(seccomp, a) for a in rule.args]
        for name in rule.names:
            nr = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
            if nr == -1 or (name, action, rule.args) in seen:
                continue  # a name libseccomp does not know is skipped, as runc does
            seen.add((name, action, rule.args))
            _add_rule(main, action, name, args)
            newest = max(newest, nr)

    unnamed = []
    for nr in range(newest + 1, _NR_LIMIT):
        try:
            name = seccomp.resolve_syscall(seccomp.Arch.NATIVE, nr).decode()
        except ValueError:
            unnamed.append(nr)
            continue
        # By name, so libseccomp maps it to each sub-architecture's number.
        _add_rule(main, seccomp.ERRNO(errno.ENOSYS), name, [])
    filters: list[Any] = [main]
    if unnamed:
        tail = seccomp.SyscallFilter(seccomp.ALLOW)
        # Native numbers only (libseccomp cannot translate what it cannot name); other
        # architectures pass this filter and meet the first's EPERM.
        _common_attrs(seccomp, tail, bad_arch=seccomp.ALLOW)
        for nr in unnamed:
            tail.add_rule(seccomp.ERRNO(errno.ENOSYS), nr)
        filters.append(tail)
    return filters


def _common_attrs(seccomp: ModuleType, flt: Any, bad_arch: int) -> None:
    set_attr = flt.set_attr
    set_attr(seccomp.Attr.ACT_BADARCH, bad_arch)
    # no_new_privs is set_no_new_privs()'s business: libseccomp would set it on load.
    set_attr(seccomp.Attr.CTL_NNP, 0)
    try:
        set_attr(seccomp.Attr.API_SYSRAWRC, 1)  # the kernel's errno, not libseccomp's ECANCELED
    except OSError:
        pass
    try:
        set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)  # a binary tree instead of ~370 compares in a row
    except OSError:
        pass  # libseccomp before 2.5: the linear filter works too


def _seccomp_arg(seccomp: ModuleType, arg: tuple[int, str, int]) -> Any:
    index, op, value = arg
    if op == "MASKED_EQ":
        return seccomp.Arg(index, seccomp.MASKED_EQ, value, 0)  # (arg & value) == 0
    return seccomp.Arg(index, getattr(seccomp, op), value)


def _add_rule(flt: Any, action: int, name: str, args: list[Any]) -> None:
    try:
        flt.add_rule(action, name, *args)
    except OSError as e:
        raise TophanError(f"cannot build the seccomp filter: rule for {name}: {e.strerror}") from e
