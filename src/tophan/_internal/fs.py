"""Files and trees on disk: atomic writes, tree removal, file locks, staging directories.

Every file that readers may see appears by one rename; see docs/store.md.
"""

from __future__ import annotations

import fcntl
import os
import stat

from tophan._internal import meta


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` so that readers see either the old file or the new one, never a part."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
