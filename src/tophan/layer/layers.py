"""Layers: immutable, content-addressed trees, and the names that point at them.

A sealed layer's identity is its digest (the OCI DiffID: sha256 of its canonical tar). Its tree
lives at ``layers/<hex>/tree`` once, however many names point at it; a name is a small key=value
file in ``refs/layers``. Everything is built in a staging dir and published by rename under the
store lock.

An *open* layer (``layer create`` without --from) has no digest yet: it is a writable directory
of its own, ``open/layers/<name>/content``, that a script fills through ``layer path``. Its first
use (a workspace, an image, a run, an export) or ``layer seal`` hashes it, moves it into the
content-addressed store (or drops it for the identical tree already there) and from then on it
is immutable like any other. See docs/store.md, "Layer lifecycle".
"""

from __future__ import annotations

import os
import time

from tophan._internal import meta, names
from tophan._internal.fs import rmtree, write_meta
from tophan.errors import Exists, InUse, NotFound, TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, Any

    from tophan._internal.root import StoreRoot
    from tophan.layer.workspace import Workspaces

TREE = "tree"
CONTENT = "content"  # an open layer's writable directory (overlayd's name for it)
SEALING = "sealing"  # the same directory while it is hashed; renamed back if sealing fails
_LISTS = ("parents", "parent_digests")
_REF_KEYS = ("digest", "created_at", "size", "name", "state", "sealed_at")
# A digest prefix must be this long to name a layer (as docker takes image ids).
MIN_PREFIX = 12
_HEX = frozenset("0123456789abcdef")
DIGEST_RULE = "or a layer digest: sha256:<64 hex digits>, or a unique prefix of at least 12"


def is_digest_ref(ref: str) -> bool:
    """``sha256:<hex>`` or bare lowercase hex, 12 to 64 digits: what may name a layer by digest."""
    hexpart = ref[7:] if ref.startswith("sha256:") else ref
    return MIN_PREFIX <= len(hexpart) <= 64 and _HEX.issuperset(hexpart)


def check_ref(ref: str) -> str:
    """``ref`` if it can name a layer (a name or a digest), else a usage error."""
    if names.is_valid(ref) or is_digest_ref(ref):
        return ref
    raise UsageError(f"invalid layer name: {ref!r}", f"names are {names.NAME_RULE}; {DIGEST_RULE}")


class Layer:
    """A layer name and what it points at. ``source`` holds provenance (imported_from, from_ws,
    parents, parent_digests)."""

    __slots__ = ("created_at", "digest", "name", "path", "size", "source")
    state = "sealed"

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
            "state": self.state,
            "digest": self.digest,
            "created_at": self.created_at,
            "size": self.size,
            "path": self.path,
        }
        d.update(self.source)
        return d

    def info_lines(self) -> list[tuple[str, str]]:
        """``layer info`` as ordered key/value pairs (overlayd keys first)."""
        out = [("name", self.name), ("created_at", str(self.created_at)), ("state", self.state)]
        for key in ("imported_from", "from_ws"):
            if key in self.source:
                out.append((key, str(self.source[key])))
        if "parents" in self.source:
            out.append(("parents", ",".join(self.source["parents"])))
            out.append(("parent_digests", ",".join(self.source["parent_digests"])))
        out += [("digest", self.digest), ("size", str(self.size)), ("path", self.path)]
        return out


class OpenLayer:
    """A layer still being filled: a writable directory private to its name, no digest yet."""

    __slots__ = ("created_at", "name", "path", "source")
    state = "open"
    digest = None
    size = None

    def __init__(self, name: str, created_at: int, path: str, source: dict[str, Any]) -> None:
        self.name = name
        self.created_at = created_at
        self.path = path
        self.source = source

    def __repr__(self) -> str:
        return f"OpenLayer({self.name!r})"

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "digest": None,
            "created_at": self.created_at,
            "size": None,
            "path": self.path,
        }
        d.update(self.source)
        return d

    def info_lines(self) -> list[tuple[str, str]]:
        return [
            ("name", self.name),
            ("created_at", str(self.created_at)),
            ("state", self.state),
            ("path", self.path),
        ]


class VerifyResult:
    """One layer's verification: ``ok`` when its tree still hashes to ``digest``. An open
    layer (``digest`` None) has nothing to verify yet: it is ok."""

    __slots__ = ("actual", "digest", "error", "names", "ok")

    def __init__(
        self,
        digest: str | None,
        names: list[str],
        ok: bool,
        actual: str | None,
        error: str | None = None,
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

    def _open_dir(self, name: str) -> str:
        return self.store.path("open", "layers", name)

    def tree_path(self, digest: str) -> str:
        return self.store.path("layers", digest.split(":", 1)[1], TREE)

    def find(self, ref: str) -> Layer | OpenLayer:
        """The layer ``ref`` names, as it is (an open layer stays open): a layer name, else a
        digest (``sha256:<hex>``, or a unique prefix of at least 12 hex digits, with or without
        ``sha256:``) of any stored layer, named or not. A layer found by digest is named by its
        full digest."""
        if names.is_valid(ref):
            ref_meta = self._read_ref(ref)
            if ref_meta is not None:
                return self._from_ref(ref, ref_meta)
            if not is_digest_ref(ref):
                raise NotFound(f"no such layer: {ref}", "see `layer list`")
        check_ref(ref)
        digest = self._digest_of(ref)
        return self._unnamed(digest)

    def get(self, ref: str) -> Layer:
        """The layer ``ref`` names (see ``find``), to be used: an open layer is sealed first
        (its first use makes it immutable)."""
        layer = self.find(ref)
        if isinstance(layer, OpenLayer):
            return self.seal(layer.name)
        return layer

    def _named(self, name: str) -> Layer | OpenLayer:
        names.check(name, "layer")
        ref = self._read_ref(name)
        if ref is None:
            raise NotFound(f"no such layer: {name}", "see `layer list`")
        return self._from_ref(name, ref)

    def _read_ref(self, name: str) -> dict[str, str] | None:
        try:
            return meta.read(self._ref_path(name))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TophanError(f"layer {name}: unreadable ref: {e}", "run `fsck`") from e

    def _digest_of(self, ref: str) -> str:
        hexpart = ref[7:] if ref.startswith("sha256:") else ref
        if len(hexpart) == 64:
            if os.path.isdir(self.store.path("layers", hexpart)):
                return "sha256:" + hexpart
            raise NotFound(f"no such layer: {ref}", "see `layer list --all`")
        found = [d for d in self.stored_digests() if d[7:].startswith(hexpart)]
        if not found:
            raise NotFound(f"no such layer: {ref}", "see `layer list --all`")
        if len(found) > 1:
            raise UsageError(
                f"layer digest prefix {hexpart} is ambiguous: {len(found)} layers start with it",
                "give more digits",
            )
        return found[0]

    def _unnamed(self, digest: str) -> Layer:
        hexd = digest.split(":", 1)[1]
        try:
            size = int(meta.read(self.store.path("layers", hexd, "meta")).get("size", "0"))
            created = int(os.stat(self.store.path("layers", hexd)).st_mtime)
        except (OSError, ValueError):
            size, created = 0, 0
        return Layer(digest, digest, created, size, self.tree_path(digest), {})

    def _from_ref(self, name: str, ref: dict[str, str]) -> Layer | OpenLayer:
        source: dict[str, Any] = {}
        for k, v in ref.items():
            if k not in _REF_KEYS:
                source[k] = meta.split_list(v) if k in _LISTS else v
        try:
            created = int(ref["created_at"])
            if ref.get("state") == "open":
                return OpenLayer(name, created, os.path.join(self._open_dir(name), CONTENT), source)
            digest, size = ref["digest"], int(ref["size"])
        except (KeyError, ValueError) as e:
            raise TophanError(f"layer {name}: corrupt ref ({e})", "run `fsck`") from e
        return Layer(name, digest, created, size, self.tree_path(digest), source)

    def exists(self, name: str) -> bool:
        return os.path.exists(self._ref_path(name))

    def all(self) -> list[Layer | OpenLayer]:
        """Every named layer, open or sealed, by name."""
        out = []
        for name in sorted(os.listdir(self.store.path("refs", "layers"))):
            if not names.is_valid(name):
                continue  # atomic_write temporaries
            try:
                ref = self._read_ref(name)
                if ref is not None:
                    out.append(self._from_ref(name, ref))
            except TophanError:
                continue  # fsck reports it
        return out

    def unnamed(self) -> list[Layer]:
        """Stored layers no name points at (an image's, a pull's), named by their digest."""
        named = self.names_by_digest()
        return [self._unnamed(d) for d in sorted(self.stored_digests()) if d not in named]

    def names_by_digest(self) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {}
        for layer in self.all():
            if layer.digest is not None:
                by.setdefault(layer.digest, []).append(layer.name)
        return by

    # -- creating ------------------------------------------------------------------------------

    def create(self, name: str) -> OpenLayer:
        """An empty, open layer (the overlayd ``layer create``): fill its ``path``, then use it
        or ``seal`` it."""
        names.check(name, "layer")
        if self.exists(name):
            raise Exists(f"layer exists: {name}", "pick another name or `layer rm` it first")
        os.makedirs(self.store.path("open", "layers"), 0o755, exist_ok=True)
        staging = self.store.staging("open")
        stale = None
        try:
            content = os.path.join(staging.path, CONTENT)
            os.mkdir(content)
            # Fixed modes, not the umask's: the directory is part of what sealing hashes.
            os.chmod(content, 0o755)
            os.chmod(staging.path, 0o755)
            ref: dict[str, str | int | list[str]] = {
                "name": name,
                "state": "open",
                "created_at": int(time.time()),
            }
            with self.store.lock():
                if self.exists(name):
                    raise Exists(
                        f"layer exists: {name}", "pick another name or `layer rm` it first"
                    )
                # A directory without a ref is what a crash between these two steps leaves.
                stale = self.store.hide(self._open_dir(name))
                os.rename(staging.path, self._open_dir(name))
                write_meta(self._ref_path(name), ref)
        finally:
            staging.discard()
        if stale is not None:
            rmtree(stale)
        layer = self._named(name)
        assert isinstance(layer, OpenLayer)
        return layer

    def seal(self, name: str) -> Layer:
        """Seal open layer ``name``: hash its directory, move it into the content-addressed
        store (or drop it for the identical tree already there) and point the name at the
        digest. From then on it is immutable. A sealed layer is returned as it is."""
        from tophan.layer import tarexport

        layer = self._named(name)
        if not isinstance(layer, OpenLayer):
            return layer
        hidden = None
        with _OpenDirLock(self._open_dir(name)) as held:
            layer = self._named(name)  # what it is now that we hold it
            if not held or not isinstance(layer, OpenLayer):
                if isinstance(layer, OpenLayer):
                    raise TophanError(f"layer {name}: its directory is missing", "run `fsck`")
                return layer
            d = self._open_dir(name)
            content, sealing = os.path.join(d, CONTENT), os.path.join(d, SEALING)
            if not os.path.isdir(content) and os.path.isdir(sealing):
                os.rename(sealing, content)  # a sealing that crashed half-way
            # Moved aside first: whoever still writes by path now fails, instead of changing
            # the tree after it was hashed.
            os.rename(content, sealing)
            try:
                digest, size = tarexport.write_tar(sealing, None, xattr_ns=self.store.xattr_ns)
            except BaseException:
                os.rename(sealing, content)
                raise
            staging = self.store.staging("seal")
            try:
                ref: dict[str, str | int | list[str]] = {
                    "name": name,
                    "digest": digest,
                    "created_at": layer.created_at,
                    "size": size,
                    "sealed_at": int(time.time()),
                    **layer.source,
                }
                hexd = digest.split(":", 1)[1]
                with self.store.lock():
                    final = self.store.path("layers", hexd)
                    if not os.path.isdir(final):
                        os.rename(sealing, os.path.join(staging.path, TREE))
                        write_meta(
                            os.path.join(staging.path, "meta"), {"digest": digest, "size": size}
                        )
                        os.rename(staging.path, final)
                    else:
                        hidden = self.store.hide(sealing)  # the same tree is already stored
                    write_meta(self._ref_path(name), ref)
                    # A script that kept the open layer's path can still read it: it now leads
                    # to the sealed tree (read-only by contract; `layer verify` sees writes).
                    os.symlink(os.path.join("..", "..", "..", "layers", hexd, TREE), content)
            finally:
                staging.discard()
        if hidden is not None:
            rmtree(hidden)
        sealed = self._named(name)
        assert isinstance(sealed, Layer)
        return sealed

    def import_tar(
        self,
        src: IO[bytes],
        name: str,
        *,
        label: str | None = None,
        strict: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> Layer:
        """Import a plain/gzip/zstd tar stream as layer ``name``.

        Absolute member names are imported without their leading / (``warn`` is told once, as
        GNU tar says it); ``strict`` (overlayd's contract) refuses such an archive instead, and
        one with a file over an earlier symlink of the same name (see tarimport.extract)."""
        from tophan.layer import tarimport

        absolute = 0

        def fill(tree: str) -> tuple[str, int]:
            nonlocal absolute
            stats = tarimport.extract(
                src,
                tree,
                xattr_ns=self.store.xattr_ns,
                privileged=self.store.privileged,
                strict=strict,
            )
            absolute = stats.absolute_names
            return stats.digest, stats.size

        layer = self.create_from(name, fill, {"imported_from": label} if label else {})
        if absolute and warn is not None:  # once, and only for an import that succeeded
            warn("removed leading '/' from member names")
        return layer

    def import_dir(self, path: str, name: str) -> Layer:
        """Import an existing directory tree (copied through the canonical tar, so exact)."""
        from tophan._internal.fs import through_pipe
        from tophan.layer import tarexport

        if not os.path.isdir(path):
            raise NotFound(f"no such directory: {path}")

        def produce(out: IO[bytes]) -> None:
            tarexport.write_tar(path, out, xattr_ns=self.store.xattr_ns)

        return through_pipe(
            produce, lambda src: self.import_tar(src, name, label=os.path.abspath(path))
        )

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
            digests = self._workspaces.lower_digests(ws)
            lowers = [self.tree_path(d) for d in digests]

            def fill(tree: str) -> tuple[str, int]:
                return commit.diff_upper(
                    ws.upper,
                    lowers,
                    tree,
                    xattr_ns=self.store.xattr_ns,
                    privileged=self.store.privileged,
                )

            source = {
                "from_ws": ws_name,
                "parents": list(ws.lowers),
                "parent_digests": digests,
            }
            return self.create_from(name, fill, source)

    def create_from(
        self, name: str, fill: Callable[[str], tuple[str, int] | None], source: dict[str, Any]
    ) -> Layer:
        """A new layer ``name`` that ``fill(tree)`` writes into an empty staging dir (returning
        its digest and tar size, or None to have them computed); ``source`` goes in its ref."""
        names.check(name, "layer")
        if self.exists(name):  # (checked again under the lock, when it is published)
            raise Exists(f"layer exists: {name}", "pick another name or `layer rm` it first")
        self.build_tree(fill, name=name, source=source, fresh=True)
        layer = self._named(name)
        assert isinstance(layer, Layer)
        return layer

    def build_tree(
        self,
        fill: Callable[[str], tuple[str, int] | None],
        keep: Callable[[str], None] | None = None,
        *,
        name: str | None = None,
        source: dict[str, Any] | None = None,
        fresh: bool = False,
    ) -> str:
        """A new layer: ``fill(tree)`` writes it (returning its digest and tar size, or None to
        have them computed). Published under the store lock, where ``keep(digest)`` records
        what holds an unnamed one (a build's cache: gc, which decides under the same lock,
        never sees it unreferenced) and ``name`` is given to it — or kept, if it already names
        this very content (a rebuild), unless ``fresh``. Returns its digest (an identical tree
        is reused)."""
        from tophan.layer import tarexport

        if name is not None:
            names.check(name, "layer")
        staging = self.store.staging("layer")
        try:
            tree = os.path.join(staging.path, TREE)
            os.mkdir(tree, 0o755)
            known = fill(tree)
            digest, size = known or tarexport.write_tar(tree, None, xattr_ns=self.store.xattr_ns)
            final = self.store.path("layers", digest.split(":", 1)[1])
            with self.store.lock():
                named = self._read_ref(name) if name is not None else None
                if named is not None and fresh:
                    raise Exists(
                        f"layer exists: {name}", "pick another name or `layer rm` it first"
                    )
                if named is not None and named.get("digest") != digest:
                    raise Exists(
                        f"layer exists: {name}, with other content",
                        f"`layer rm {name}` first, or keep the stage as another layer name",
                    )
                if not os.path.isdir(final):
                    write_meta(os.path.join(staging.path, "meta"), {"digest": digest, "size": size})
                    os.rename(staging.path, final)
                if name is not None and named is None:
                    ref: dict[str, str | int | list[str]] = {
                        "name": name,
                        "digest": digest,
                        "created_at": int(time.time()),
                        "size": size,
                        **(source or {}),
                    }
                    write_meta(self._ref_path(name), ref)
                if keep is not None:
                    keep(digest)
            return digest
        finally:
            staging.discard()

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
        """Remove a name; its tree goes too once nothing else references the digest (an open
        layer's directory goes at once: it is its name's alone).

        Workspaces and apps hold layers by the names they were given, images by digest: a name
        nothing holds can always go, and its tree stays while another name, a workspace, an
        image or a live run still uses the digest. When a workspace's metadata cannot be read,
        what it uses is unknown, and nothing is removed (fail closed)."""
        layer = self._named(name)
        hidden = []
        # An open layer's lock first (as `seal` takes it): it cannot be sealed under our feet.
        with _OpenDirLock(self._open_dir(name)), self.store.lock():
            layer = self._named(name)
            for ws in self._workspaces.require_readable():
                if name in ws.lowers:
                    raise InUse(
                        f"layer {name} in use by workspace {ws.name}",
                        f"remove the workspace first (`ws rm {ws.name}`)",
                    )
            refs = self._require_references()
            for holder, hint in refs.users(name):
                raise InUse(f"layer {name} is part of {holder}", hint)
            os.unlink(self._ref_path(name))
            hidden.append(self.store.hide(self._open_dir(name)))
            # Another name, a live run or an image may still use the tree: then gc takes it
            # once nothing does.
            if layer.digest is not None and layer.digest not in refs.digests():
                hidden.append(self.store.hide(self.store.path("layers", layer.hex)))
        for path in hidden:
            if path is not None:
                rmtree(path)

    def _require_references(self) -> References:
        if self._references is None:
            raise TypeError("Layers.remove needs the store's references: use Store(...).layers")
        return self._references

    def referenced_digests(self) -> set[str]:
        """Digests that names and workspaces hold; raises if a workspace's metadata cannot be
        read (what it holds is then unknown)."""
        refs = {layer.digest for layer in self.all() if layer.digest is not None}
        for ws in self._workspaces.require_readable():
            refs.update(ws.lower_digests)
        return refs

    def orphan_open_dirs(self) -> list[str]:
        """Open-layer directories no ref points at: what a crash between publishing one and
        writing its ref leaves (call with the store lock held; never an open layer's own)."""
        top = self.store.path("open", "layers")
        try:
            entries = sorted(os.listdir(top))
        except FileNotFoundError:
            return []
        return [os.path.join(top, n) for n in entries if not self.exists(n)]

    def stored_digests(self) -> Iterator[str]:
        for entry in os.listdir(self.store.path("layers")):
            if len(entry) == 64:
                yield "sha256:" + entry

    # -- checking ------------------------------------------------------------------------------

    def verify(self, layer_names: list[str] | None = None) -> list[VerifyResult]:
        """Recompute digests of the named layers (all stored layers when None)."""
        from tophan.layer import tarexport

        by_digest = self.names_by_digest()
        results = []
        if layer_names:
            digests = []
            for ref in layer_names:
                layer = self.find(ref)
                if layer.digest is None:
                    results.append(VerifyResult(None, [layer.name], True, None))
                else:
                    digests.append(layer.digest)
            digests = list(dict.fromkeys(digests))
        else:
            digests = sorted(self.stored_digests())
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


class _OpenDirLock:
    """``with _OpenDirLock(dir) as held:`` flock on an open layer's directory, which serialises
    sealing and removing it. ``held`` is False when there is no such directory (a sealed
    layer's, or one sealed or removed meanwhile): there is nothing to serialise then."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> bool:
        import fcntl

        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return True

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
