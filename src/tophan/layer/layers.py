"""Layers: immutable, content-addressed trees, and the names that point at them.

A layer's identity is its digest (the OCI DiffID: sha256 of its canonical tar). Its tree lives at
``layers/<hex>/tree`` once, however many names point at it; a name is a small key=value file in
``refs/layers``. Everything is built in a staging dir and published by rename under the store lock.
"""

from __future__ import annotations

import os
import time

from tophan._internal import meta, names
from tophan._internal.fs import rmtree, write_meta
from tophan.errors import Exists, InUse, NotFound, TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, Any

    from tophan._internal.fs import Staging
    from tophan._internal.root import StoreRoot
    from tophan.layer.workspace import Workspaces

TREE = "tree"
_LISTS = ("parents", "parent_digests")


class Layer:
    """A layer name and what it points at. ``source`` holds provenance (imported_from, from_ws,
    parents, parent_digests)."""

    __slots__ = ("created_at", "digest", "name", "path", "size", "source")

    def __init__(
        self, name: str, digest: str, created_at: int, size: int, path: str, source: dict[str, Any]
    ) -> None:
        self.name = name
        self.digest = digest
        self.created_at = created_at
        self.size = size
        self.path = path
        self.source = source

    def __repr__(self) -> str:
        return f"Layer({self.name!r}, {self.digest!r})"

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "digest": self.digest,
            "created_at": self.created_at,
            "size": self.size,
            "path": self.path,
        }
        d.update(self.source)
        return d

    def info_lines(self) -> list[tuple[str, str]]:
        """``layer info`` as ordered key/value pairs (overlayd keys first)."""
        out = [("name", self.name), ("created_at", str(self.created_at))]
        for key in ("imported_from", "from_ws"):
            if key in self.source:
                out.append((key, str(self.source[key])))
        if "parents" in self.source:
            out.append(("parents", ",".join(self.source["parents"])))
            out.append(("parent_digests", ",".join(self.source["parent_digests"])))
        out += [("digest", self.digest), ("size", str(self.size)), ("path", self.path)]
        return out


class VerifyResult:
    """One layer's verification: ``ok`` when its tree still hashes to ``digest``."""

    __slots__ = ("actual", "digest", "error", "names", "ok")

    def __init__(
        self, digest: str, names: list[str], ok: bool, actual: str | None, error: str | None = None
    ) -> None:
        self.digest = digest
        self.names = names
        self.ok = ok
        self.actual = actual
        self.error = error


class References:
    """What packages above this one hold, supplied by ``tophan.references``: ``digests()``,
    every layer digest still needed (names, workspaces, images, live runs); ``users(name)``,
    what holds layer ``name`` by its name, with how to free it (("app web", "remove ...))."""

    def __init__(
        self, digests: Callable[[], set[str]], users: Callable[[str], list[tuple[str, str]]]
    ) -> None:
        self.digests = digests
        self.users = users


class Layers:
    """``store.layers``: create, import, export, commit, list, remove and verify layers."""

    def __init__(self, store: StoreRoot, *, references: References | None = None) -> None:
        self.store = store
        # What else uses layers (images, apps, live runs) is known above this package: the
        # store façade passes it in (tophan.references). Without it a layer cannot be removed.
        self._references = references

    @property
    def _workspaces(self) -> Workspaces:
        from tophan.layer.workspace import Workspaces

        return Workspaces(self.store)

    # -- reading -------------------------------------------------------------------------------

    def _ref_path(self, name: str) -> str:
        return self.store.path("refs", "layers", name)

    def tree_path(self, digest: str) -> str:
        return self.store.path("layers", digest.split(":", 1)[1], TREE)

    def get(self, name: str) -> Layer:
        names.check(name, "layer")
        try:
            ref = meta.read(self._ref_path(name))
        except FileNotFoundError:
            raise NotFound(f"no such layer: {name}", "see `layer list`") from None
        except OSError as e:
            raise TophanError(f"layer {name}: unreadable ref: {e}", "run `fsck`") from e
        return self._from_ref(name, ref)

    def _from_ref(self, name: str, ref: dict[str, str]) -> Layer:
        try:
            digest = ref["digest"]
            created, size = int(ref["created_at"]), int(ref["size"])
        except (KeyError, ValueError) as e:
            raise TophanError(f"layer {name}: corrupt ref ({e})", "run `fsck`") from e
        source: dict[str, Any] = {}
        for k, v in ref.items():
            if k not in ("digest", "created_at", "size", "name"):
                source[k] = meta.split_list(v) if k in _LISTS else v
        return Layer(name, digest, created, size, self.tree_path(digest), source)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._ref_path(name))

    def all(self) -> list[Layer]:
        out = []
        for name in sorted(os.listdir(self.store.path("refs", "layers"))):
            if not names.is_valid(name):
                continue  # atomic_write temporaries
            try:
                out.append(self._from_ref(name, meta.read(self._ref_path(name))))
            except (OSError, TophanError):
                continue  # removed while we listed
        return out

    def names_by_digest(self) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {}
        for layer in self.all():
            by.setdefault(layer.digest, []).append(layer.name)
        return by

    # -- creating ------------------------------------------------------------------------------

    def create(self, name: str) -> Layer:
        """An empty layer (the overlayd ``layer create``)."""
        return self._build(name, lambda tree: None, {})

    def import_tar(self, src: IO[bytes], name: str, *, label: str | None = None) -> Layer:
        """Import a plain/gzip/zstd tar stream as layer ``name``."""
        from tophan.layer import tarimport

        def fill(tree: str) -> tuple[str, int]:
            stats = tarimport.extract(
                src, tree, xattr_ns=self.store.xattr_ns, privileged=self.store.privileged
            )
            return stats.digest, stats.size

        return self._build(name, fill, {"imported_from": label} if label else {})

    def import_dir(self, path: str, name: str) -> Layer:
        """Import an existing directory tree (copied through the canonical tar, so exact)."""
        import threading

        from tophan.layer import tarexport

        if not os.path.isdir(path):
            raise NotFound(f"no such directory: {path}")
        r, w = os.pipe()
        errors: list[BaseException] = []

        def produce() -> None:
            with open(w, "wb", buffering=1 << 20) as out:
                try:
                    tarexport.write_tar(path, out, xattr_ns=self.store.xattr_ns)
                except BaseException as e:  # reported by the consumer below
                    errors.append(e)

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        try:
            with open(r, "rb", buffering=1 << 20) as src:
                return self.import_tar(src, name, label=os.path.abspath(path))
        finally:
            t.join()
            if errors:
                raise errors[0]

    def commit(self, ws_name: str, name: str) -> Layer:
        """Turn a workspace's upper dir into a new layer (refuses while it is mounted)."""
        from tophan.layer import commit

        ws = self._workspaces.get(ws_name)
        with self._workspaces.locked(ws_name):
            if self._workspaces.is_mounted(ws):
                raise InUse(
                    f"workspace {ws_name} is mounted at {ws.mountpoint}",
                    f"run `ws unmount {ws_name}` before commit",
                )
            lowers = [self.tree_path(d) for d in ws.lower_digests]

            def fill(tree: str) -> tuple[str, int]:
                return commit.diff_upper(ws.upper, lowers, tree, xattr_ns=self.store.xattr_ns)

            source = {
                "from_ws": ws_name,
                "parents": list(ws.lowers),
                "parent_digests": list(ws.lower_digests),
            }
            return self._build(name, fill, source)

    def _build(
        self, name: str, fill: Callable[[str], tuple[str, int] | None], source: dict[str, Any]
    ) -> Layer:
        from tophan.layer import tarexport

        names.check(name, "layer")
        if self.exists(name):
            raise Exists(f"layer exists: {name}", "pick another name or `layer rm` it first")
        staging = self.store.staging("layer")
        try:
            tree = os.path.join(staging.path, TREE)
            os.mkdir(tree, 0o755)
            known = fill(tree)
            digest, size = known or tarexport.write_tar(tree, None, xattr_ns=self.store.xattr_ns)
            return self._publish(staging, name, digest, size, source)
        finally:
            staging.discard()

    def _publish(
        self, staging: Staging, name: str, digest: str, size: int, source: dict[str, Any]
    ) -> Layer:
        hexd = digest.split(":", 1)[1]
        final = self.store.path("layers", hexd)
        ref: dict[str, str | int | list[str]] = {
            "name": name,
            "digest": digest,
            "created_at": int(time.time()),
            "size": size,
            **source,
        }
        with self.store.lock():
            if self.exists(name):
                raise Exists(f"layer exists: {name}", "pick another name or `layer rm` it first")
            if not os.path.isdir(final):
                write_meta(os.path.join(staging.path, "meta"), {"digest": digest, "size": size})
                os.rename(staging.path, final)
            write_meta(self._ref_path(name), ref)
        return self._from_ref(name, meta.loads(meta.dumps(ref)))

    # -- exporting -----------------------------------------------------------------------------

    def export(self, name: str, out: IO[bytes], *, compress: str | None = None) -> str:
        from tophan.layer import tarexport

        layer = self.get(name)
        digest: str = tarexport.export(
            layer.path, out, xattr_ns=self.store.xattr_ns, compress=compress
        )
        return digest

    # -- removing ------------------------------------------------------------------------------

    def remove(self, name: str) -> None:
        """Remove a name; its tree goes too once nothing else references the digest."""
        layer = self.get(name)
        hidden = None
        with self.store.lock():
            for ws in self._workspaces.all():
                if layer.digest in ws.lower_digests:
                    raise InUse(
                        f"layer {name} in use by workspace {ws.name}",
                        f"remove the workspace first (`ws rm {ws.name}`)",
                    )
            refs = self._require_references()
            for holder, hint in refs.users(name):
                raise InUse(f"layer {name} is part of {holder}", hint)
            os.unlink(self._ref_path(name))
            # Another name, a live run or an image may still use the tree: then gc takes it
            # once nothing does.
            if layer.digest not in refs.digests():
                hidden = self.store.hide(self.store.path("layers", layer.hex))
        if hidden is not None:
            rmtree(hidden)

    def _require_references(self) -> References:
        if self._references is None:
            raise TypeError("Layers.remove needs the store's references: use Store(...).layers")
        return self._references

    def referenced_digests(self) -> set[str]:
        refs = {layer.digest for layer in self.all()}
        for ws in self._workspaces.all():
            refs.update(ws.lower_digests)
        return refs

    def stored_digests(self) -> Iterator[str]:
        for entry in os.listdir(self.store.path("layers")):
            if len(entry) == 64:
                yield "sha256:" + entry

    # -- checking ------------------------------------------------------------------------------

    def verify(self, layer_names: list[str] | None = None) -> list[VerifyResult]:
        """Recompute digests of the named layers (all stored layers when None)."""
        from tophan.layer import tarexport

        by_digest = self.names_by_digest()
        if layer_names:
            digests = list(dict.fromkeys(self.get(n).digest for n in layer_names))
        else:
            digests = sorted(self.stored_digests())
        results = []
        for digest in digests:
            tree = self.tree_path(digest)
            try:
                actual, _ = tarexport.write_tar(tree, None, xattr_ns=self.store.xattr_ns)
            except (OSError, TophanError) as e:
                results.append(VerifyResult(digest, by_digest.get(digest, []), False, None, str(e)))
                continue
            ok = actual == digest
            results.append(VerifyResult(digest, by_digest.get(digest, []), ok, actual))
        return results
