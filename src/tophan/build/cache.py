"""The build cache: which layer a build step made, by the step's cache key.

A key is a sha256 over the parent step's key, the instruction after substitution, the build
args the step sees and (COPY/ADD) the digest of what it copies — so equal keys mean an equal
result. An entry is one small ``key=value`` file under ``build/cache/``; its layer is an
ordinary unnamed store layer that the entry keeps alive (``references`` asks
:func:`referenced_layers`). ``tophan build prune`` drops entries; ``gc`` then removes their
layers.

A build in progress also holds the layers it builds on (cache hits, its base image's layers)
in ``holds`` in its locked staging dir, so a prune + gc running meanwhile cannot take them.
"""

from __future__ import annotations

import hashlib
import os

from tophan._internal import meta
from tophan._internal.fs import atomic_write, flock_held

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan._internal.fs import Staging
    from tophan._internal.root import StoreRoot

HOLDS = "holds"  # in a build's staging dir: one layer digest per line


class Entry:
    """A cached step: its layer (None: the step changed no file) and its creation time."""

    def __init__(self, layer: str | None, created: str) -> None:
        self.layer = layer
        self.created = created


def key(*parts: str) -> str:
    """A cache key from its parts (NUL-separated: no two part lists give the same bytes)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


class Cache:
    def __init__(self, store: StoreRoot, staging: Staging | None = None) -> None:
        self.store = store
        self.dir = store.path("build", "cache")
        self.staging = staging  # the running build's: where its holds go

    def _path(self, k: str) -> str:
        return os.path.join(self.dir, k)

    def get(self, k: str) -> Entry | None:
        """The entry for ``k`` whose layer is still stored, held for this build (checked and
        recorded under the store lock, so gc cannot remove it between the two)."""
        with self.store.lock():
            try:
                fields = meta.read(self._path(k))
            except OSError:
                return None
            layer = fields.get("layer") or None
            if layer is not None:
                if not os.path.isdir(self.store.path("layers", layer.partition(":")[2])):
                    return None
                self.hold(layer)
            return Entry(layer, fields.get("created", ""))

    def put(self, k: str, layer: str | None, created: str) -> None:
        """Record a step (call under the store lock when ``layer`` was just published)."""
        os.makedirs(self.dir, 0o700, exist_ok=True)
        atomic_write(self._path(k), meta.dumps({"layer": layer or "", "created": created}))
        if layer is not None:
            self.hold(layer)

    def hold(self, layer: str) -> None:
        """Keep ``layer`` until this build ends (call under the store lock)."""
        if self.staging is None:
            return
        with open(os.path.join(self.staging.path, HOLDS), "a") as f:
            f.write(layer + "\n")

    def entries(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.dir) if len(n) == 64)
        except FileNotFoundError:
            return []

    def prune(self) -> int:
        """Drop every entry (their layers become unreferenced: ``gc`` removes them)."""
        removed = 0
        with self.store.lock():
            for name in self.entries():
                try:
                    os.unlink(self._path(name))
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed


def referenced_layers(store: StoreRoot) -> set[str]:
    """Layers the cache and the builds in progress keep (ask under the store lock)."""
    out: set[str] = set()
    cache = Cache(store)
    for name in cache.entries():
        try:
            layer = meta.read(cache._path(name)).get("layer")
        except OSError:
            continue
        if layer:
            out.add(layer)
    tmp = store.path("tmp")
    for entry in os.scandir(tmp):
        if not entry.name.startswith("build-") or not flock_held(entry.path):
            continue
        try:
            with open(os.path.join(entry.path, HOLDS)) as f:
                out.update(line for line in f.read().splitlines() if line)
        except OSError:
            continue
    return out
