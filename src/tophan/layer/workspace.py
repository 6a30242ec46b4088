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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from tophan._internal.root import StoreRoot
    from tophan.layer.layers import Layers

META = "meta"


class Workspace:
    """A workspace as recorded in the store (its mount state is asked of the kernel)."""

    __slots__ = ("created_at", "dir", "lower_digests", "lowers", "mountpoint", "name", "suid_dev")

    def __init__(
        self,
        name: str,
        created_at: int,
        lowers: tuple[str, ...],
        lower_digests: tuple[str, ...],
        mountpoint: str,
        dir: str,
        suid_dev: bool = False,
    ) -> None:
        self.name = name
        self.created_at = created_at
        self.lowers = lowers  # layer names as given, top first
        self.lower_digests = lower_digests  # () when the meta does not record them
        self.mountpoint = mountpoint
        self.dir = dir
        # nosuid,nodev unless asked: a setuid file or device node of an image (or one a writer
        # made in the upper dir) must not work for whoever can reach the mountpoint.
        self.suid_dev = suid_dev

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


class BrokenWorkspace:
    """A workspace directory whose metadata cannot be read (missing, not a file, keys missing).

    It is listed (flagged), reported by ``fsck``, and removed only by ``ws rm --force``; while
    one exists no layer can be proven unused, so ``layer rm`` and ``gc`` refuse to remove any."""

    __slots__ = ("dir", "name", "problem")

    def __init__(self, name: str, dir: str, problem: str) -> None:
        self.name = name
        self.dir = dir
        self.problem = problem

    @property
    def upper(self) -> str:
        return os.path.join(self.dir, "upper")

    def error(self) -> TophanError:
        return TophanError(
            f"workspace {self.name}: {self.problem}",
            f"repair its meta file, or remove it with `ws rm --force {self.name}`",
        )

    def as_dict(self, mounted: bool) -> dict[str, Any]:
        return {"name": self.name, "problem": self.problem, "mounted": mounted, "upper": self.upper}


class Workspaces:
    """``store.workspaces``: create, mount, unmount, list and remove workspaces."""

    def __init__(self, store: StoreRoot) -> None:
        self.store = store

    def _dir(self, name: str) -> str:
        return self.store.path("workspaces", name)

    def _layers(self) -> Layers:
        # Imported when used: a path command (`ws path`) reads no layer, and this import is
        # ~0.4 ms of its start-up (medians of 101 alternating runs).
        from tophan.layer.layers import Layers

        return Layers(self.store)

    # -- reading -------------------------------------------------------------------------------

    def get(self, name: str) -> Workspace:
        names.check(name, "workspace")
        ws = self._load(name)
        if isinstance(ws, BrokenWorkspace):
            raise ws.error()
        return ws

    def _load(self, name: str) -> Workspace | BrokenWorkspace:
        d = self._dir(name)
        try:
            info = meta.read(os.path.join(d, META))
        except FileNotFoundError:
            if not os.path.isdir(d):
                raise NotFound(f"no such workspace: {name}", "see `ws list`") from None
            return BrokenWorkspace(name, d, "its meta file is missing")
        except OSError as e:
            return BrokenWorkspace(name, d, f"unreadable meta file ({e.strerror})")
        # `lowers` (the names it holds) is what proves which layers it uses; the rest has a
        # fallback, so a meta written in overlayd's format (name, mounted, lowers) still reads.
        lowers = tuple(meta.split_list(info.get("lowers", "")))
        if not lowers:
            return BrokenWorkspace(name, d, "corrupt meta file (no lowers=)")
        digests = tuple(meta.split_list(info.get("lower_digests", "")))
        if digests and len(digests) != len(lowers):
            return BrokenWorkspace(name, d, "corrupt meta file (lowers and lower_digests differ)")
        try:
            created = int(info.get("created_at", "0"))
        except ValueError:
            return BrokenWorkspace(name, d, "corrupt meta file (created_at is not a number)")
        mp = info.get("mountpoint") or os.path.join(
            os.path.realpath(self.store.path("workspaces")), name, "merged"
        )
        return Workspace(name, created, lowers, digests, mp, d, info.get("suid_dev") == "1")

    def lower_digests(self, ws: Workspace) -> list[str]:
        """The digests of ``ws``'s layers (top first): as recorded at creation, or, for a meta
        that lacks them (overlayd's format), looked up through its layer names now."""
        if ws.lower_digests:
            return list(ws.lower_digests)
        return [self._layers().get(layer).digest for layer in ws.lowers]

    def scan(self) -> tuple[list[Workspace], list[BrokenWorkspace]]:
        """Every workspace, and those whose metadata cannot be read."""
        good: list[Workspace] = []
        broken: list[BrokenWorkspace] = []
        for name in sorted(os.listdir(self.store.path("workspaces"))):
            if not names.is_valid(name):
                continue
            try:
                ws = self._load(name)
            except NotFound:
                continue  # removed while we listed
            if isinstance(ws, BrokenWorkspace):
                broken.append(ws)
            else:
                good.append(ws)
        return good, broken

    def all(self) -> list[Workspace]:
        """The workspaces whose metadata reads; see ``scan`` for the others."""
        return self.scan()[0]

    def require_readable(self) -> list[Workspace]:
        """Every workspace; raises if one's metadata cannot be read, since then what it uses
        cannot be known (whoever would remove a layer must refuse: fail closed)."""
        good, broken = self.scan()
        if broken:
            b = broken[0]
            raise TophanError(
                f"cannot tell which layers are in use: workspace {b.name}: {b.problem}",
                f"repair its meta file, or remove it with `ws rm --force {b.name}`",
            )
        return good

    def is_mounted(self, ws: Workspace | BrokenWorkspace) -> bool:
        from tophan.layer import mount

        if isinstance(ws, BrokenWorkspace):
            return bool(mount.overlays_with_upper(ws.upper))
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
        suid_dev: bool = False,
    ) -> Workspace:
        """Create a workspace over ``layers`` (top-first) and, by default, mount it
        (nosuid,nodev unless ``suid_dev``)."""
        names.check(name, "workspace")
        if not layers:
            raise UsageError("at least one -l layer required")
        from tophan.layer.layers import check_ref

        for layer in layers:
            check_ref(layer)
        if os.path.exists(self._dir(name)):
            raise Exists(f"workspace exists: {name}", "pick another name or `ws rm` it first")
        # Using a layer seals it if it is open. A layer given by digest is held by its full
        # digest, a named one by its name.
        resolved = [self._layers().get(layer) for layer in layers]
        layers = [layer.name for layer in resolved]
        digests = [layer.digest for layer in resolved]
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
            if suid_dev:
                info["suid_dev"] = 1
            write_meta(os.path.join(staging.path, META), info)
            os.chmod(staging.path, 0o755)
            with self.store.lock():
                if os.path.exists(self._dir(name)):
                    raise Exists(f"workspace exists: {name}")
                for digest, layer in zip(digests, layers, strict=True):
                    if self._layers().find(layer).digest != digest:
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
            lowers = [self._layers().tree_path(d) for d in self.lower_digests(ws)]
            for layer, tree in zip(ws.lowers, lowers, strict=True):
                if not os.path.isdir(tree):
                    raise NotFound(f"layer {layer} of workspace {name} is missing", "run `fsck`")
            os.makedirs(ws.mountpoint, 0o755, exist_ok=True)
            mount.mount_overlay(
                ws.mountpoint,
                lowers,
                ws.upper,
                ws.work,
                userxattr=self.store.xattr_ns == "user",
                nodev=not ws.suid_dev,
                nosuid=not ws.suid_dev,
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
        """Unmount (if needed) and delete. A workspace still mounted is never removed.

        One whose metadata cannot be read is removed only with ``force``, after unmounting
        every overlay that writes into its upper dir (wherever it was mounted)."""
        names.check(name, "workspace")
        ws = self._load(name)
        if isinstance(ws, BrokenWorkspace):
            if not force:
                raise ws.error()
            self._remove_broken(ws)
            return
        if self.is_mounted(ws):
            try:
                self.unmount(name)
            except TophanError:
                if not force or self.is_mounted(ws):
                    raise
        if self.is_mounted(ws):
            raise InUse(f"workspace {name} is still mounted at {ws.mountpoint}")
        from tophan.layer import mount

        # Mounted elsewhere than its meta says (a meta edited, or written without a mountpoint).
        for entry in mount.overlays_with_upper(ws.upper):
            raise InUse(
                f"workspace {name} is still mounted at {entry.mountpoint}",
                f"unmount {entry.mountpoint} first",
            )
        # A custom mountpoint stays (overlayd leaves it too): it may be a caller's directory.
        self.store.trash(ws.dir)

    def _remove_broken(self, ws: BrokenWorkspace) -> None:
        from tophan.layer import mount

        with self.locked(ws.name):
            for entry in mount.overlays_with_upper(ws.upper):
                mount.unmount(entry.mountpoint)
            if mount.overlays_with_upper(ws.upper):
                raise InUse(f"workspace {ws.name} is still mounted", "unmount it, then retry")
        self.store.trash(ws.dir)
