"""Package inventories: one per layer, computed once and cached by the layer's digest, merged per
image in stack order with overlayfs's rules.

A layer's inventory lists what each package-describing file *in that layer* says (dpkg's status,
a dist-info's METADATA, a package.json…), keyed by the file's path. An image's inventory is the
union over its layers of the entries whose file is the one the merged tree shows: a file
replaced in an upper layer is read there (an upgrade, a package removed by dpkg), a whiteout or
an opaque directory above hides it (``pip uninstall``, ``rm -rf node_modules``). Which layer
shows a path is ``tophan.build.tree.Tree``'s answer, the same lookup the builder makes.

The walk of a layer never follows a symlink on the host (a layer's ``/usr`` may point anywhere);
files are opened through ``Tree.open_file`` (a chain of O_NOFOLLOW directory fds, then checked
to be the inode looked up), and each read is bounded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat

from tophan._internal.fs import atomic_write, read_bounded
from tophan.build.tree import Tree
from tophan.errors import TophanError
from tophan.scan import apk, dpkg, npm, osrelease, pythonpkg
from tophan.scan.model import APK, DEB, NPM, PYPI, Package

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any

    from tophan._internal.root import StoreRoot

# Bumped whenever a reader changes what it finds: older cached inventories are then recomputed.
FORMAT = 1

# What a file may weigh before it is skipped (a warning, never a failure): bounds on memory.
_LIMITS = {DEB: 256 << 20, APK: 256 << 20, PYPI: 1 << 20, NPM: 8 << 20, "distro": 64 << 10}
_READERS: dict[str, Callable[[str, str], list[Package]]] = {
    DEB: dpkg.read,
    APK: apk.read,
    PYPI: pythonpkg.read,
    NPM: npm.read,
}
_DPKG_STATUS = ("var", "lib", "dpkg", "status")
_DPKG_STATUS_D = ("var", "lib", "dpkg", "status.d")
_APK_INSTALLED = ("lib", "apk", "db", "installed")
_DISTRO_FILES = {tuple(p.strip("/").split("/")) for p in osrelease.PATHS}


class LayerInventory:
    """What one layer's own files say: packages by the file they came from, the distribution
    files it holds, and what was skipped (``warnings``)."""

    def __init__(
        self,
        digest: str,
        packages: list[Package],
        files: dict[str, str],
        warnings: list[str],
    ) -> None:
        self.digest = digest
        self.packages = packages
        self.files = files
        self.warnings = warnings
        self.by_path: dict[str, list[Package]] = {}
        for p in packages:
            self.by_path.setdefault(p.path, []).append(p)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "digest": self.digest,
            "packages": [p.as_dict() for p in self.packages],
            "files": self.files,
            "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerInventory:
        return cls(
            str(d["digest"]),
            [Package.from_dict(p) for p in d["packages"]],
            {str(k): str(v) for k, v in d["files"].items()},
            [str(w) for w in d.get("warnings", [])],
        )


def _kind(comps: tuple[str, ...]) -> str | None:
    """Which reader the regular file at ``comps`` is for, if any."""
    if comps == _DPKG_STATUS:
        return DEB
    if comps[:-1] == _DPKG_STATUS_D and not comps[-1].endswith(".md5sums"):
        return DEB
    if comps == _APK_INSTALLED:
        return APK
    if comps in _DISTRO_FILES:
        return "distro"
    name = comps[-1]
    if len(comps) >= 2 and pythonpkg.is_metadata(comps[-2], name):
        return PYPI
    if name.endswith(".egg-info"):
        return PYPI  # an egg-info *file*: PKG-INFO's content under the distribution's name
    if npm.is_manifest(comps):
        return NPM
    return None


def _walk(root: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """(components, kind) of every file of interest under the layer tree ``root``. Directories
    are descended only when they are real directories (d_type, no stat, no symlink)."""
    todo: list[tuple[str, ...]] = [()]
    while todo:
        comps = todo.pop()
        host = root + "".join("/" + c for c in comps)
        try:
            with os.scandir(host) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # unreadable, or swapped for a non-directory: nothing to read there
        for e in entries:
            child = (*comps, e.name)
            if e.is_dir(follow_symlinks=False):
                todo.append(child)
            elif e.is_file(follow_symlinks=False):
                kind = _kind(child)
                if kind is not None:
                    yield child, kind


def _read(tree: Tree, path: str, limit: int, *, truncate: bool) -> bytes | None:
    """Up to ``limit`` bytes of the regular file at ``path`` (never through a symlink); None
    if it is larger and ``truncate`` is false."""
    fd = tree.open_file(path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = read_bounded(fd, limit)
    finally:
        os.close(fd)
    if len(data) > limit:
        return data[:limit] if truncate else None
    return data


def read_layer(digest: str, root: str, xattr_ns: str | None) -> LayerInventory:
    """Read one layer's tree (``root``) for packages. Files it cannot read, or too large, are
    named in ``warnings``; the read goes on."""
    tree = Tree([root], xattr_ns=xattr_ns)
    packages: list[Package] = []
    files: dict[str, str] = {}
    warnings: list[str] = []
    for comps, kind in _walk(tree.lowers[0]):
        path = "/" + "/".join(comps)
        try:
            data = _read(tree, path, _LIMITS[kind], truncate=kind == PYPI)
        except (TophanError, OSError) as e:
            warnings.append(f"{path}: {e}")
            continue
        if data is None:
            warnings.append(f"{path}: larger than {_LIMITS[kind]} bytes, skipped")
            continue
        text = data.decode("utf-8", "replace")
        if kind == "distro":
            files[path] = text
        else:
            packages += _READERS[kind](text, path)
    return LayerInventory(digest, packages, files, warnings)


class Inventories:
    """Layer inventories of a store, cached on disk by layer digest
    (``<root>/scan/layers/<hex>.json``) and in memory for the life of this object."""

    def __init__(self, store: StoreRoot) -> None:
        self.store = store
        self._memo: dict[str, LayerInventory] = {}

    def _cache_path(self, digest: str) -> str:
        return self.store.path("scan", "layers", digest.split(":", 1)[1] + ".json")

    def cached(self, digest: str) -> LayerInventory | None:
        """The stored inventory of layer ``digest``, if there is a current one."""
        try:
            with open(self._cache_path(digest), "rb") as f:
                doc = json.loads(f.read())
            if doc.get("format") != FORMAT or doc.get("digest") != digest:
                return None
            return LayerInventory.from_dict(doc)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None  # absent, or not ours: computed again

    def layer(self, digest: str, tree_path: str) -> LayerInventory:
        """Layer ``digest``'s inventory: from memory, else the cache, else read (and cached)."""
        inv = self._memo.get(digest)
        if inv is None:
            inv = self.cached(digest)
            if inv is None:
                inv = read_layer(digest, tree_path, self.store.xattr_ns)
                self._store(inv)
            self._memo[digest] = inv
        return inv

    def _store(self, inv: LayerInventory) -> None:
        path = self._cache_path(inv.digest)
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            atomic_write(path, json.dumps(inv.as_dict(), sort_keys=True).encode())
        except OSError:
            pass  # a read-only store still scans; it only reads the layer again next time

    def prune(self, keep: set[str]) -> list[str]:
        """Remove cached inventories of layers not in ``keep`` (digests); returns those gone."""
        gone = []
        top = self.store.path("scan", "layers")
        try:
            names = os.listdir(top)
        except OSError:
            return []
        for name in names:
            digest = "sha256:" + name.removesuffix(".json")
            if name.endswith(".json") and digest not in keep:
                try:
                    os.unlink(os.path.join(top, name))
                    gone.append(digest)
                except OSError:
                    continue
        return gone

    def image(self, stack: Sequence[tuple[str, str]]) -> ImageInventory:
        """The merged inventory of a layer stack, ``(digest, tree path)`` bottom to top."""
        layers = [self.layer(d, p) for d, p in stack]
        return merge(layers, [p for _, p in stack], self.store.xattr_ns)


class ImageInventory:
    """The packages an image (a layer stack) holds, each with the layer it comes from, and the
    distribution (``distro`` id, ``release``, OSV ``ecosystem``) they belong to."""

    def __init__(
        self,
        packages: list[Package],
        distro: str,
        release: str,
        ecosystem: str,
        warnings: list[str],
    ) -> None:
        self.packages = packages
        self.distro = distro
        self.release = release
        self.ecosystem = ecosystem
        self.warnings = warnings


def _shown_by(tree: Tree, path: str) -> int | None:
    """The index (top first) of the layer whose copy of ``path`` the merged tree shows."""
    try:
        host = tree.locate(path)
    except TophanError:
        return None
    if host is None:
        return None
    for i, root in enumerate(tree.lowers):
        if host == root + path:
            return i
    return None


def merge(
    layers: Sequence[LayerInventory], paths: Sequence[str], xattr_ns: str | None
) -> ImageInventory:
    """``layers`` (bottom to top, their trees at ``paths``) as one image's inventory."""
    top_first = list(reversed(layers))
    tree = Tree(list(reversed(paths)), xattr_ns=xattr_ns)
    files: dict[str, str] = {}
    for name in osrelease.PATHS:
        try:
            resolved = tree.resolve(name)
        except TophanError:
            continue  # a symlink loop: no distribution file there
        i = _shown_by(tree, resolved)
        if i is not None and resolved in top_first[i].files:
            files[name] = top_first[i].files[resolved]
    distro, release, ecosystem = osrelease.distribution(files)
    purl_distro = f"{distro}-{release}" if distro and release else distro
    out: list[Package] = []
    warnings: list[str] = []
    for i, inv in enumerate(top_first):
        warnings += inv.warnings
        for path, pkgs in inv.by_path.items():
            if _shown_by(tree, path) != i:
                continue  # replaced or removed by a layer above
            for p in pkgs:
                q = dataclasses.replace(p, layer=inv.digest, extra=dict(p.extra))
                if q.type in (DEB, APK):
                    q.distro = purl_distro
                    # dpkg's packages belong to Debian's or Ubuntu's advisories, apk's to Alpine's
                    fits = ecosystem.startswith(("Debian", "Ubuntu") if q.type == DEB else "Alpine")
                    q.ecosystem = ecosystem if fits else ""
                else:
                    q.ecosystem = "PyPI" if q.type == PYPI else "npm"
                out.append(q)
    out.sort(key=lambda p: (p.type, p.name.lower(), p.version, p.arch, p.path))
    return ImageInventory(out, distro, release, ecosystem, warnings)
