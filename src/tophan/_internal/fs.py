"""Files and trees on disk: atomic writes, tree removal, file locks, staging directories, and
a stream handed from a writer to a reader through a pipe.

Every file that readers may see appears by one rename; see docs/store.md.
"""

from __future__ import annotations

import errno
import fcntl
import os

from tophan._internal import meta

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, BinaryIO, TypeVar

    T = TypeVar("T")


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


def read_bounded(fd: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes from ``fd``: more than ``limit`` tells the caller the file
    is too large without reading a hostile one whole."""
    chunks: list[bytes] = []
    got = 0
    while got <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_meta(path: str, items: dict[str, str | int | list[str]]) -> None:
    atomic_write(path, meta.dumps(items))


def rmtree(path: str) -> None:
    """Remove a tree we own, even one with read-only directories (layers keep exact modes), or
    one a rootless container of ours left (owned by our subordinate ids).

    Iterative and relative to directory fds (openat/unlinkat): no recursion and no path-length
    limit, so a legal layer 10000 directories deep goes like any other; a symlink is never
    followed (directories are opened O_NOFOLLOW|O_DIRECTORY), so whatever a container made of
    its tree cannot send the removal elsewhere. Our own walk rather than shutil's: importing
    shutil costs a container start more than removing its run dir does."""
    parent, name = os.path.split(os.path.abspath(path))
    try:
        top = os.open(parent, _DIR_FLAGS)
    except FileNotFoundError:
        return
    try:
        if not _remove_nondir(top, name):
            _remove_dir(top, name)
    except PermissionError:
        if os.geteuid() == 0:
            raise
        from tophan._internal import userns

        if not userns.has_subordinate_ids():
            raise
        # What a rootless container's other users made (their ids are subordinate ids of
        # ours): removable as root of a namespace that maps them.
        userns.call_mapped(rmtree, path)
    finally:
        os.close(top)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Directory fds held open at once on the way down; above this depth a directory is closed and
# reopened through its child's ``..`` (checked to be the same directory) on the way back up.
_MAX_OPEN_DIRS = 64


class _Frame:
    __slots__ = ("fd", "ident", "name", "subdirs")

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        st = os.fstat(fd)
        self.ident = (st.st_dev, st.st_ino)
        self.subdirs: list[str] | None = None  # None: not listed yet


def _remove_dir(top: int, name: str) -> None:
    fd = _open_dir(top, name)
    if fd < 0:
        return
    stack = [_Frame(fd, name)]
    try:
        while stack:
            frame = stack[-1]
            if frame.subdirs is None:
                frame.subdirs = _clear_files(frame.fd)
            if frame.subdirs:
                sub = frame.subdirs.pop()
                child = _open_dir(frame.fd, sub)
                if child >= 0:
                    stack.append(_Frame(child, sub))
                    if len(stack) > _MAX_OPEN_DIRS:
                        far = stack[-_MAX_OPEN_DIRS - 1]
                        os.close(far.fd)
                        far.fd = -1
                continue
            parent_fd = top if len(stack) == 1 else _reopen_parent(frame, stack[-2])
            if not _rmdir(parent_fd, frame.name):
                frame.subdirs = None  # something appeared meanwhile: list it again
                continue
            stack.pop()
            os.close(frame.fd)
            frame.fd = -1
    finally:
        for frame in stack:
            if frame.fd >= 0:
                os.close(frame.fd)


def _open_dir(dir_fd: int, name: str) -> int:
    """``name`` in ``dir_fd`` opened as a directory, never through a symlink; -1 if it is gone
    or turned out not to be a directory (then it is unlinked)."""
    for attempt in (1, 2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return -1
        except PermissionError:
            if attempt == 2:
                raise
            _chmod_dir(dir_fd, name)  # only an unprivileged owner gets here
        except OSError as e:
            if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            _remove_nondir(dir_fd, name)  # a symlink or file now: removed as one
            return -1
    return -1


def _chmod_dir(dir_fd: int, name: str) -> None:
    """chmod 0700 the directory ``name`` without following a symlink: through an O_PATH fd."""
    fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)
    finally:
        os.close(fd)


def _clear_files(fd: int) -> list[str]:
    """Unlink everything in directory ``fd`` but its subdirectories; returns their names."""
    subdirs = []
    with os.scandir(fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if is_dir or not _remove_nondir(fd, name):
            subdirs.append(name)
    return subdirs


def _remove_nondir(dir_fd: int, name: str) -> bool:
    """Unlink ``name`` in ``dir_fd``: True if it is gone, False if it is a directory."""
    for attempt in (1, 2):
        try:
            os.unlink(name, dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return True
        except IsADirectoryError:
            return False
        except PermissionError:
            if attempt == 2:
                raise
            os.fchmod(dir_fd, 0o700)
    return True


def _rmdir(dir_fd: int, name: str) -> bool:
    """rmdir ``name`` in ``dir_fd``: False if it is not empty (filled meanwhile)."""
    for attempt in (1, 2):
        try:
            os.rmdir(name, dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return True
        except PermissionError:
            if attempt == 2:
                raise
            os.fchmod(dir_fd, 0o700)
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
            return False
    return True


def _reopen_parent(frame: _Frame, parent: _Frame) -> int:
    """``parent``'s fd, reopened through ``frame``'s ``..`` if it was closed on the way down;
    refused if that is not the directory we came down from (it was moved meanwhile)."""
    if parent.fd < 0:
        fd = os.open("..", _DIR_FLAGS, dir_fd=frame.fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != parent.ident:
            os.close(fd)
            raise OSError(errno.ESTALE, "directory moved while it was being removed", frame.name)
        parent.fd = fd
    return parent.fd


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


def through_pipe(write: Callable[[IO[bytes]], None], read: Callable[[IO[bytes]], T]) -> T:
    """``read`` what ``write`` produces (in a thread), through a pipe: a tar stream never lands
    on disk. The reader's error wins; else a writer's error is raised after the reader is done."""
    import threading

    r, w = os.pipe()
    errors: list[BaseException] = []

    def produce() -> None:
        with open(w, "wb", buffering=1 << 20) as out:
            try:
                write(out)
            except BaseException as e:  # reported below, in the caller's thread
                errors.append(e)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        with open(r, "rb", buffering=1 << 20) as src:
            result = read(src)
            while src.read(1 << 20):  # let the writer finish if the reader stopped early
                pass
    finally:
        t.join()  # (closing our end above has ended a writer blocked on a full pipe)
    if errors:
        raise errors[0]
    return result
