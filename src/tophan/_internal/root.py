"""The store on disk: where it lives, its layout, its writer lock, staging and trash.

Layout (see docs/store.md)::

    <root>/store.meta            format version, xattr namespace
    <root>/version               "1" (what overlayd writes; kept so its scripts recognise a store)
    <root>/layers/<hex>/         tree/ (the immutable layer tree) + meta
    <root>/refs/layers/<name>    key=value meta: digest + provenance of a layer name
    <root>/blobs/sha256/<hex>    OCI blobs: manifests, configs, compressed layers (images.md)
    <root>/refs/images/<name>    image name -> manifest digest; refs/diffids: DiffID -> layer
    <root>/workspaces/<name>/    meta, upper/, work/, merged/
    <root>/volumes/<name>/       meta, data/ (named volumes, tophan.run.volumes)
    <root>/apps/<name>/          spec.json, state.json, logs (tophan.app)
    <root>/tmp/                  staging: everything is built here, then renamed into place
    <root>/lock                  writers hold flock(LOCK_EX) on it while they publish or remove

Readers never lock: every file they read was made visible by one rename.
"""

from __future__ import annotations

import fcntl
import os
import time

from tophan._internal import meta
from tophan._internal.fs import (
    FileLock,
    Staging,
    atomic_write,
    flock_held,
    rmtree,
    try_flock,
    write_meta,
)
from tophan.errors import NotFound, TophanError

# typing is imported for the type checker only: it costs a path command's start-up ~2 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal, Self

    XattrNs = Literal["trusted", "user"]

FORMAT_VERSION = 1
# Images (tophan.image): blobs by digest, image names, DiffID -> layer tree. Stores made before
# images existed get them on first use (Images.ensure_dirs).
_IMAGE_DIRS = ("blobs", "blobs/sha256", "refs/images", "refs/diffids")


def default_root() -> str:
    """``$TOPHAN_ROOT``, else /var/lib/tophan for root, else the XDG data dir."""
    env = os.environ.get("TOPHAN_ROOT")
    if env:
        return env
    if os.geteuid() == 0 and not _in_user_namespace():
        return "/var/lib/tophan"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(data, "tophan")


def overlayd_default_root() -> str:
    """The seed tool's rule, kept exactly: ``$OVERLAYD_ROOT``, else ``./.overlayd``."""
    return os.environ.get("OVERLAYD_ROOT") or "./.overlayd"


def _in_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:3] != ["0", "0", "4294967295"]


def is_privileged() -> bool:
    """Real root: may create device nodes and use trusted.* xattrs."""
    return os.geteuid() == 0 and not _in_user_namespace()


def _check_private(top: str, label: str) -> None:
    """The store holds image and container content: setuid files, device nodes, secrets in
    app specs. Only its owner may reach it (0700 at the top), and root never works in a store
    another user could write (the CVE-2021-41091 pattern, the other way round)."""
    try:
        st = os.stat(top)
    except OSError as e:
        raise TophanError(f"cannot open store {label}: {e.strerror}") from e
    euid = os.geteuid()
    if st.st_uid != euid:
        raise TophanError(
            f"store {label} belongs to uid {st.st_uid}, not to you (uid {euid})",
            "use a store of your own (`tophan init`; the default is per user)",
        )
    if st.st_mode & 0o022:
        raise TophanError(
            f"store {label} is writable by other users (mode {st.st_mode & 0o777:o})",
            f"make it private: chmod 700 {label}",
        )
    if st.st_mode & 0o077:
        os.chmod(top, 0o700)  # a store made before stores were private: close it now


class StoreRoot:
    """An opened store's disk: paths, the writer lock, staging and trash.

    The packages (layer, image, run, app) work on this; ``tophan.Store`` adds the accessors
    (``store.layers`` ...) that API users call."""

    def __init__(self, root: str, *, overlayd: bool = False) -> None:
        self.root_arg = root
        self.root = os.path.abspath(root)
        self.overlayd = overlayd
        try:
            info = meta.read(os.path.join(self.root, "store.meta"))
        except PermissionError as e:
            raise TophanError(
                f"cannot open store {root}: permission denied",
                "a store is private to its owner: use your own (`tophan init`)",
            ) from e
        except OSError as e:
            cmd = "overlayd init" if overlayd else "tophan init"
            raise NotFound(f"no store at {root}", f"run `{cmd}` first, or pass --root PATH") from e
        if info.get("format") != str(FORMAT_VERSION):
            raise TophanError(
                f"store {root} has format {info.get('format')!r};"
                f" this tophan reads format {FORMAT_VERSION}",
                "use a matching tophan version",
            )
        self.xattr_ns: XattrNs = "user" if info.get("xattr_ns") == "user" else "trusted"
        _check_private(self.root, root)

    @classmethod
    def init(cls, root: str, *, overlayd: bool = False) -> Self:
        """Create the store (idempotent) and open it."""
        top = os.path.abspath(root)
        try:
            os.makedirs(top, mode=0o700, exist_ok=True)
            if not os.path.exists(os.path.join(top, "store.meta")):
                os.chmod(top, 0o700)  # whatever the umask: see _check_private
            for sub in ("layers", "refs", "refs/layers", "workspaces", "tmp", *_IMAGE_DIRS):
                os.makedirs(os.path.join(top, sub), mode=0o755, exist_ok=True)
            meta_path = os.path.join(top, "store.meta")
            if not os.path.exists(meta_path):
                ns = "trusted" if is_privileged() else "user"
                write_meta(meta_path, {"format": FORMAT_VERSION, "xattr_ns": ns})
            version = os.path.join(top, "version")
            if not os.path.exists(version):
                atomic_write(version, b"1\n")
            open(os.path.join(top, "lock"), "a").close()
        except OSError as e:
            raise TophanError(f"cannot create store at {root}: {e.strerror}") from e
        return cls(root, overlayd=overlayd)

    # -- paths ---------------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def privileged(self) -> bool:
        return is_privileged()

    # -- locking and staging -------------------------------------------------------------------

    def lock(self) -> FileLock:
        """The store-wide writer lock, held only for the short publish/remove step."""
        return FileLock(self.path("lock"))

    def staging(self, kind: str) -> Staging:
        """A fresh private dir under tmp/; holds a lock on itself until closed."""
        path = self.path("tmp", f"{kind}-{os.urandom(8).hex()}")
        try:
            os.mkdir(path, 0o700)
        except OSError as e:
            raise TophanError(
                f"cannot create a staging dir in {self.path('tmp')}: {e.strerror}"
            ) from e
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return Staging(path, fd)

    def staging_lines(self, kind: str, name: str) -> list[str]:
        """The lines of file ``name`` in the live staging dirs of ``kind``: what transactions
        and builds in progress hold. A crashed one's dir is no longer locked, and its holds
        no longer count."""
        out: list[str] = []
        for entry in os.scandir(self.path("tmp")):
            if not entry.name.startswith(f"{kind}-") or not flock_held(entry.path):
                continue
            try:
                with open(os.path.join(entry.path, name)) as f:
                    out += [line for line in f.read().splitlines() if line]
            except OSError:
                continue
        return out

    def hide(self, path: str) -> str | None:
        """Make ``path`` vanish at once by renaming it into tmp/; returns where it went.

        Callers rename under the store lock and delete (``rmtree``) after releasing it, so a
        large removal never holds up other writers; gc finishes what a crash interrupts."""
        dest = self.path("tmp", f"trash-{os.urandom(8).hex()}")
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None
        return dest

    def trash(self, path: str) -> None:
        """Hide ``path`` under the store lock and delete it after releasing the lock."""
        with self.lock():
            hidden = self.hide(path)
        if hidden is not None:
            rmtree(hidden)

    def clean_tmp(self) -> int:
        """Remove staging leftovers nobody holds a lock on. Returns how many."""
        removed = 0
        tmp = self.path("tmp")
        for entry in os.scandir(tmp):
            if entry.is_dir(follow_symlinks=False):
                try:
                    fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    if not try_flock(fd):
                        continue  # an import, commit or run in progress
                finally:
                    os.close(fd)
            elif time.time() - entry.stat(follow_symlinks=False).st_mtime < 60:
                continue  # a file being written right now (AtomicFile temporaries live elsewhere)
            rmtree(entry.path)
            removed += 1
        return removed
