"""Raw syscalls Python 3.11 lacks (the new mount API, mount/umount2, unshare), through ctypes.

Importing this module does no work: libc is loaded on the first call. Every wrapper raises
:class:`OSError` with the call's errno (and the path involved, if any); callers turn that into a
:class:`~tophan.errors.TophanError` with a message for users.
"""

from __future__ import annotations

import ctypes
import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn, TypeVar

    T = TypeVar("T")


def once(fn: Callable[[], T]) -> Callable[[], T]:
    """functools.cache for a function of no arguments, without importing functools (and with
    it collections): this module is on a container start's path."""
    memo: list[T] = []

    def wrapper() -> T:
        if not memo:
            memo.append(fn())
        return memo[0]

    wrapper.__doc__ = fn.__doc__
    return wrapper


# The new mount API arrived after the syscall tables were unified (5.1), so these numbers are the
# same on x86_64, i386, arm, aarch64, riscv, powerpc and s390 (asm-generic/unistd.h agrees with
# x86_64's unistd_64.h). Only a few old ABIs add an offset; there we report ENOSYS and the caller
# falls back to mount(2).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
_OFFSET_ABIS = ("alpha", "ia64", "mips")

FSOPEN_CLOEXEC = 0x1
# fsconfig copies at most 256 bytes of a key or string value, NUL included (strndup_user).
FSCONFIG_MAX_STRING = 255
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6

MOVE_MOUNT_F_EMPTY_PATH = 0x4
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100

MS_RDONLY = 0x1
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000


@once
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@once
def _syscall_fn() -> ctypes._NamedFuncPointer:
    if os.uname().machine.startswith(_OFFSET_ABIS):
        raise_errno(errno.ENOSYS)
    fn = libc().syscall
    fn.restype = ctypes.c_long
    return fn


def raise_errno(err: int | None = None, path: str | None = None) -> NoReturn:
    """Raise OSError for ``err`` (default: the errno the last libc call left)."""
    if err is None:
        err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), path)


def _check(ret: int, path: str | None = None) -> int:
    if ret < 0:
        raise_errno(None, path)
    return ret


def _str(s: str | None) -> ctypes.c_char_p:
    return ctypes.c_char_p(None if s is None else os.fsencode(s))


def _syscall(nr: int, *args: ctypes.c_long | ctypes.c_char_p) -> int:
    # Every argument is passed as a full word: syscall() is variadic and reads longs.
    return int(_syscall_fn()(ctypes.c_long(nr), *args))


def fsopen(fstype: str, flags: int = FSOPEN_CLOEXEC) -> int:
    """A filesystem context fd; read() on it yields the kernel's messages ("e overlay: ...")."""
    return _check(_syscall(SYS_FSOPEN, _str(fstype), ctypes.c_long(flags)))


def fsconfig(
    fd: int, cmd: int, key: str | None = None, value: str | None = None, aux: int = 0
) -> None:
    """Set one parameter of a context (or run CMD_CREATE); the error's filename is ``value``.

    ``aux`` is the file descriptor of FSCONFIG_SET_FD. String values longer than
    FSCONFIG_MAX_STRING bytes fail with EINVAL.
    """
    ret = _syscall(
        SYS_FSCONFIG,
        ctypes.c_long(fd),
        ctypes.c_long(cmd),
        _str(key),
        _str(value),
        ctypes.c_long(aux),
    )
    _check(ret, value)


def fsmount(fd: int, flags: int = FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    """A detached mount fd for a created context."""
    return _check(
        _syscall(SYS_FSMOUNT, ctypes.c_long(fd), ctypes.c_long(flags), ctypes.c_long(attr_flags))
    )


def move_mount(
    from_fd: int,
    to_path: str,
    *,
    from_path: str = "",
    to_fd: int = AT_FDCWD,
    flags: int = MOVE_MOUNT_F_EMPTY_PATH,
) -> None:
    """Attach a mount (by default the detached mount ``from_fd``) at ``to_path``."""
    ret = _syscall(
        SYS_MOVE_MOUNT,
        ctypes.c_long(from_fd),
        _str(from_path),
        ctypes.c_long(to_fd),
        _str(to_path),
        ctypes.c_long(flags),
    )
    _check(ret, to_path)


def open_tree(
    path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC, dfd: int = AT_FDCWD
) -> int:
    """An fd for ``path``'s mount; with OPEN_TREE_CLONE a detached copy (a bind mount to move)."""
    return _check(
        _syscall(SYS_OPEN_TREE, ctypes.c_long(dfd), _str(path), ctypes.c_long(flags)), path
    )


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    """mount(2). ``data`` goes to the kernel as one page: callers must check its length."""
    fn = libc().mount
    ret = fn(_str(source), _str(target), _str(fstype), ctypes.c_ulong(flags), _str(data))
    _check(ret, target)


def umount2(target: str, flags: int = 0) -> None:
    _check(libc().umount2(_str(target), ctypes.c_int(flags)), target)


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread (CLONE_NEWUSER needs a single-threaded process)."""
    _check(libc().unshare(ctypes.c_int(flags)))


# -- namespaces and process setup (the runtime) ------------------------------------------------

CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_STRICTATIME = 0x1000000

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace ``fd`` refers to (a /proc/PID/ns/* file)."""
    _check(libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)))


def pivot_root(new_root: str, put_old: str) -> None:
    SYS_PIVOT_ROOT = 155  # x86_64; aarch64 and the generic table use 41
    nr = 41 if os.uname().machine in ("aarch64", "riscv64") else SYS_PIVOT_ROOT
    _check(_syscall(nr, _str(new_root), _str(put_old)), new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(libc().sethostname(ctypes.c_char_p(raw), ctypes.c_size_t(len(raw))))


def child_subreaper() -> bool:
    """Whether this process is a child subreaper (PR_GET_CHILD_SUBREAPER)."""
    value = ctypes.c_int(0)
    fn = libc().prctl
    fn.restype = ctypes.c_int
    zero = ctypes.c_ulong(0)
    _check(fn(ctypes.c_int(PR_GET_CHILD_SUBREAPER), ctypes.byref(value), zero, zero, zero))
    return bool(value.value)


def prctl(option: int, arg2: int = 0) -> int:
    fn = libc().prctl
    fn.restype = ctypes.c_int
    return _check(
        fn(
            ctypes.c_int(option),
            ctypes.c_ulong(arg2),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    )


# bpf(2) predates the unified syscall table: its number differs per architecture.
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}


def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """bpf(cmd, attr, sizeof attr); returns what the kernel returns (a new fd for PROG_LOAD)."""
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise_errno(errno.ENOSYS)
    addr = ctypes.c_long(ctypes.addressof(attr))
    return _check(_syscall(nr, ctypes.c_long(cmd), addr, ctypes.c_long(len(attr))))


PTRACE_DETACH = 17


def ptrace_detach(pid: int, sig: int = 0) -> None:
    """Stop tracing ``pid`` (in a ptrace-stop), delivering ``sig`` to it (0: none)."""
    fn = libc().ptrace
    fn.restype = ctypes.c_long
    if fn(ctypes.c_long(PTRACE_DETACH), ctypes.c_long(pid), None, ctypes.c_long(sig)) < 0:
        err = ctypes.get_errno()
        if err != errno.ESRCH:  # gone (or no longer stopped): nothing to undo
            raise_errno(err)
