"""Files and trees on disk: atomic writes, tree removal, file locks, staging directories.

Every file that readers may see appears by one rename; see docs/store.md.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from tophan._internal import meta

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO


# Temporaries carry this mark: it holds a character no name may have, so listings of names
# (layers, images, volumes) never mistake one for a name; see ``is_temporary``.
TEMP_MARK = "~tmp-"


def temp_path(path: str) -> str:
    """A fresh, unguessable name next to ``path`` for a file that will be renamed onto it."""
    d, base = os.path.split(path)
    return os.path.join(d, f".{base[:200]}{TEMP_MARK}{os.urandom(8).hex()}")


def is_temporary(name: str) -> bool:
    return TEMP_MARK in name


class AtomicFile:
    """``with AtomicFile(path) as f: f.write(...)``: ``path`` appears by one rename when the
    block succeeds, never partly written; on failure nothing is left.

    The temporary is created with O_EXCL|O_NOFOLLOW under a random name in ``path``'s directory,
    so a file or symlink planted there (e.g. in /tmp, by another user) is never opened. ``mode``
    is set exactly (store files), or None: 0666 less the umask, as for any new file (exports).
    ``durable``: fsync the file before the rename and the directory after it, so that the new
    content, not an empty file, is what a crash leaves."""

    def __init__(self, path: str, mode: int | None = 0o644, *, durable: bool = False) -> None:
        self.path = path
        self.mode = mode
        self.durable = durable
        self.tmp = temp_path(path)
        self.file: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.tmp, flags, 0o666 if self.mode is None else self.mode)
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        return self.file

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self.file is not None
        f, self.file = self.file, None
        try:
            if exc_type is None:
                f.flush()  # a buffered file writes everything: short writes are retried
                if self.mode is not None:
                    os.fchmod(f.fileno(), self.mode)
                if self.durable:
                    os.fsync(f.fileno())
            f.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
        except BaseException:
            f.close()
            _unlink_quietly(self.tmp)
            raise
        if exc_type is not None:
            _unlink_quietly(self.tmp)
        elif self.durable:
            fsync_dir(os.path.dirname(self.path) or ".")


def atomic_write(path: str, data: bytes, mode: int = 0o644, *, durable: bool = False) -> None:
    """Write ``data`` so that readers see either the old file or the new one, never a part."""
    with AtomicFile(path, mode, durable=durable) as f:
        f.write(data)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def try_flock(fd: int, *, shared: bool = False) -> bool:
    """Take flock on ``fd`` without waiting: True if taken, False if another holder has it.
    Any other error (EBADF, ENOLCK, EINTR...) is raised, never taken for "held"."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def flock_held(path: str, *, exclusive: bool = True) -> bool:
    """Whether someone holds an flock on ``path`` (exclusively, or at all); False if ``path``
    does not exist. Only asks: takes the lock for a moment if it is free."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        return not try_flock(fd, shared=exclusive)
    finally:
        os.close(fd)


def write_meta(path: str, items: dict[str, str | int | list[str]]) -> None:
    atomic_write(path, meta.dumps(items))


def rmtree(path: str) -> None:
    """Remove a tree we own, even one with read-only directories (layers keep exact modes).

    Our own walk rather than shutil's: importing shutil costs a container start more than
    removing its run dir does."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        _rmtree_dir(path)
    else:
        os.unlink(path)


def _rmtree_dir(path: str) -> None:
    try:
        it = os.scandir(path)
    except FileNotFoundError:
        return
    except PermissionError:
        os.chmod(path, 0o700)  # only an unprivileged owner gets here
        it = os.scandir(path)
    with it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _rmtree_dir(entry.path)
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass
        except PermissionError:
            os.chmod(path, 0o700)
            os.unlink(entry.path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        os.chmod(os.path.dirname(path), 0o700)
        os.rmdir(path)


class FileLock:
    """``with FileLock(path):`` holds flock(LOCK_EX) on ``path`` (created if missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        self.fd = -1


class Staging:
    """A private directory under tmp/, locked while in use so ``gc`` leaves it alone."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        rmtree(self.path)
