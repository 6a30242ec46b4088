"""Workspaces: a stack of layers plus a writable upper dir, mounted with overlayfs.

The mount state we report is always the kernel's (``/proc/self/mountinfo``), never a flag in a file:
a workspace is mounted when its mountpoint carries an overlay whose upperdir is its upper dir.
"""

from __future__ import annotations

import os
import time

from tophan._internal import meta, names
from tophan._internal.fs import FileLock, write_meta
from tophan.errors import Exists, InUse, MountError, NotFound, TophanError, UsageError
from tophan.layer.layers import Layers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from tophan._internal.root import StoreRoot

META = "meta"


class Workspace:
    """A workspace as recorded in the store (its mount state is asked of the kernel)."""

    __slots__ = ("created_at", "dir", "lower_digests", "lowers", "mountpoint", "name")

    def __init__(
        self,
        name: str,
        created_at: int,
        lowers: tuple[str, ...],
        lower_digests: tuple[str, ...],
        mountpoint: str,
        dir: str,
    ) -> None:
        self.name = name
        self.created_at = created_at
        self.lowers = lowers  # layer names as given, top first
        self.lower_digests = lower_digests
        self.mountpoint = mountpoint
        self.dir = dir

    @property
    def upper(self) -> str:
        return os.path.join(self.dir, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.dir, "work")

    def as_dict(self, mounted: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": self.created_at,
            "lowers": list(self.lowers),
            "lower_digests": list(self.lower_digests),
            "mounted": mounted,
            "mountpoint": self.mountpoint,
            "upper": self.upper,
        }

    def info_lines(self, mounted: bool) -> list[tuple[str, str]]:
        return [
            ("name", self.name),
            ("created_at", str(self.created_at)),
            ("lowers", ",".join(self.lowers)),
            ("mounted", "1" if mounted else "0"),
            ("mountpoint", self.mountpoint),
            ("upper", self.upper),
            ("lower_digests", ",".join(self.lower_digests)),
        ]


class Workspaces:
    """``store.workspaces``: create, mount, unmount, list and remove workspaces."""

    def __init__(self, store: StoreRoot) -> None:
        self.store = store

    def _dir(self, name: str) -> str:
        return self.store.path("workspaces", name)

    # -- reading -------------------------------------------------------------------------------

    def get(self, name: str) -> Workspace:
        names.check(name, "workspace")
        d = self._dir(name)
        try:
            info = meta.read(os.path.join(d, META))
        except FileNotFoundError:
            raise NotFound(f"no such workspace: {name}", "see `ws list`") from None
        except OSError as e:
            raise TophanError(f"workspace {name}: unreadable metadata: {e}", "run `fsck`") from e
        return self._from_meta(name, info, d)

    @staticmethod
    def _from_meta(name: str, info: dict[str, str], d: str) -> Workspace:
        try:
            return Workspace(
                name,
                int(info["created_at"]),
                tuple(meta.split_list(info["lowers"])),
                tuple(meta.split_list(info["lower_digests"])),
                info["mountpoint"],
                d,
            )
        except (KeyError, ValueError) as e:
            raise TophanError(f"workspace {name}: corrupt metadata ({e})", "run `fsck`") from e

    def all(self) -> list[Workspace]:
        out = []
        top = self.store.path("workspaces")
        for name in sorted(os.listdir(top)):
            if not names.is_valid(name):
                continue
            d = os.path.join(top, name)
            try:
                out.append(self._from_meta(name, meta.read(os.path.join(d, META)), d))
            except (OSError, TophanError):
                continue
        return out

    def is_mounted(self, ws: Workspace) -> bool:
        from tophan.layer import mount

        return bool(mount.is_our_overlay(ws.mountpoint, ws.upper))

    # -- locking -------------------------------------------------------------------------------

    def locked(self, name: str) -> FileLock:
        """Serialise mount/unmount/commit/rm of one workspace."""
        return FileLock(os.path.join(self._dir(name), "lock"))

    # -- creating ------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        layers: Sequence[str],
        *,
        mountpoint: str | None = None,
        mount: bool = True,
    ) -> Workspace:
        """Create a workspace over ``layers`` (top-first) and, by default, mount it."""
        names.check(name, "workspace")
        if not layers:
            raise UsageError("at least one -l layer required")
        for layer in layers:
            names.check(layer, "layer")
        if os.path.exists(self._dir(name)):
            raise Exists(f"workspace exists: {name}", "pick another name or `ws rm` it first")
        digests = [Layers(self.store).get(layer).digest for layer in layers]
        if mountpoint is not None:
            mp = self._make_mountpoint(mountpoint)
        else:
            mp = os.path.join(os.path.realpath(self.store.path("workspaces")), name, "merged")
        staging = self.store.staging("ws")
        try:
            for sub in ("upper", "work", "merged"):
                os.mkdir(os.path.join(staging.path, sub), 0o755)
            created = int(time.time())
            info: dict[str, str | int | list[str]] = {
                "name": name,
                "created_at": created,
                "lowers": list(layers),
                "lower_digests": digests,
                "mountpoint": mp,
            }
            write_meta(os.path.join(staging.path, META), info)
            os.chmod(staging.path, 0o755)
            with self.store.lock():
                if os.path.exists(self._dir(name)):
                    raise Exists(f"workspace exists: {name}")
                for digest, layer in zip(digests, layers, strict=True):
                    if Layers(self.store).get(layer).digest != digest:
                        raise TophanError(f"layer {layer} changed while creating {name}", "retry")
                os.rename(staging.path, self._dir(name))
        finally:
            staging.discard()
        ws = Workspace(name, created, tuple(layers), tuple(digests), mp, self._dir(name))
        if mount:
            try:
                self.mount(name)
            except BaseException:
                self.store.trash(ws.dir)
                raise
        return ws

    @staticmethod
    def _make_mountpoint(path: str) -> str:
        try:
            os.makedirs(path, 0o755, exist_ok=True)
        except OSError as e:
            raise TophanError(f"cannot create mountpoint {path}: {e.strerror}") from e
        if not os.path.isdir(path):
            raise TophanError(f"mountpoint {path} is not a directory")
        return os.path.realpath(path)

    # -- mounting ------------------------------------------------------------------------------

    def mount(self, name: str) -> Workspace:
        """Mount the workspace; a no-op if *its* overlay is already mounted there."""
        from tophan.layer import mount

        ws = self.get(name)
        with self.locked(name):
            if mount.is_our_overlay(ws.mountpoint, ws.upper):
                return ws
            if mount.mount_entry(ws.mountpoint) is not None:
                raise MountError(
                    f"cannot mount workspace {name}: something else is mounted at {ws.mountpoint}",
                    "unmount it first",
                )
            self._check_xattr_ns()
            lowers = [Layers(self.store).tree_path(d) for d in ws.lower_digests]
            for layer, tree in zip(ws.lowers, lowers, strict=True):
                if not os.path.isdir(tree):
                    raise NotFound(f"layer {layer} of workspace {name} is missing", "run `fsck`")
            os.makedirs(ws.mountpoint, 0o755, exist_ok=True)
            mount.mount_overlay(
                ws.mountpoint, lowers, ws.upper, ws.work, userxattr=self.store.xattr_ns == "user"
            )
        return ws

    def _check_xattr_ns(self) -> None:
        from tophan.layer import mount

        if self.store.xattr_ns == "trusted" and mount.in_user_namespace():
            raise MountError(
                f"store {self.store.root_arg} was made by real root: its opaque dirs use"
                " trusted.* xattrs, which a user namespace cannot read",
                "mount it as root, or use a store made inside the user namespace",
            )

    def unmount(self, name: str) -> Workspace:
        """Unmount; a no-op if it is not mounted. Busy mounts are refused, never detached."""
        from tophan.layer import mount

        ws = self.get(name)
        with self.locked(name):
            entry = mount.mount_entry(ws.mountpoint)
            if entry is None:
                return ws
            if not mount.is_our_overlay(ws.mountpoint, ws.upper):
                raise MountError(
                    f"{ws.mountpoint} is mounted, but not by workspace {name}",
                    "unmount it yourself if you mean to",
                )
            mount.unmount(ws.mountpoint)
        return ws

    def remove(self, name: str, *, force: bool = False) -> None:
        """Unmount (if needed) and delete. A workspace still mounted is never removed."""
        ws = self.get(name)
        if self.is_mounted(ws):
            try:
                self.unmount(name)
            except TophanError:
                if not force or self.is_mounted(ws):
                    raise
        if self.is_mounted(ws):
            raise InUse(f"workspace {name} is still mounted at {ws.mountpoint}")
        # A custom mountpoint stays (overlayd leaves it too): it may be a caller's directory.
        self.store.trash(ws.dir)
