"""Raw syscalls Python 3.11 lacks (the new mount API, mount/umount2), through ctypes.

Nothing happens at import time; libc is loaded on first use.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

# Generic syscall numbers: the new mount API has the same numbers on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432

FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8


@cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _syscall(nr: int, *args: object) -> int:
    fn = libc().syscall
    fn.restype = ctypes.c_long
    return int(fn(ctypes.c_long(nr), *args))


def fsopen(fstype: str) -> int:
    return _check(
        _syscall(SYS_FSOPEN, ctypes.c_char_p(fstype.encode()), ctypes.c_uint(FSOPEN_CLOEXEC)),
        "fsopen",
    )


def fsconfig(fd: int, cmd: int, key: str | None, value: str | None) -> None:
    k = ctypes.c_char_p(key.encode() if key is not None else None)
    v = ctypes.c_char_p(os.fsencode(value) if value is not None else None)
    _check(
        _syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(cmd), k, v, ctypes.c_int(0)),
        f"fsconfig {key or ''}",
        value,
    )


def fsmount(fd: int) -> int:
    return _check(
        _syscall(SYS_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(0)),
        "fsmount",
    )


def move_mount(from_fd: int, target: str) -> None:
    ret = _syscall(
        SYS_MOVE_MOUNT,
        ctypes.c_int(from_fd),
        ctypes.c_char_p(b""),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(target)),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )
    _check(ret, "move_mount", target)


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    ret = libc().mount(
        os.fsencode(source),
        os.fsencode(target),
        fstype.encode(),
        ctypes.c_ulong(flags),
        os.fsencode(data),
    )
    _check(ret, "mount", target)


def umount2(target: str, flags: int) -> None:
    _check(libc().umount2(os.fsencode(target), ctypes.c_int(flags)), "umount", target)
