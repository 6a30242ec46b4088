"""What gets scanned: an image (its layer stack) or layers named on the command line, resolved
against a store to ``(digest, tree path)`` pairs, bottom to top."""

from __future__ import annotations

from dataclasses import dataclass

from tophan.errors import TophanError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from tophan._internal.root import StoreRoot
    from tophan.image.images import Image


@dataclass(slots=True)
class Target:
    """``name``: the image's name, or the layers' (``-l a -l b``); ``digest``: the image's
    manifest digest (None for bare layers); ``stack``: (layer digest, tree path) bottom→top."""

    name: str
    digest: str | None
    stack: list[tuple[str, str]]

    @property
    def key(self) -> str:
        """What a stored scan result is filed under: the manifest, else the layer stack."""
        if self.digest:
            return self.digest
        import hashlib

        joined = "\n".join(d for d, _ in self.stack)
        return "sha256:" + hashlib.sha256(f"layers\n{joined}".encode()).hexdigest()


def image(store: StoreRoot, name: str) -> Target:
    from tophan.image.images import Images

    return of_image(store, Images(store).get(name))


def of_image(store: StoreRoot, img: Image) -> Target:
    from tophan.layer.layers import Layers

    layers = Layers(store)
    return Target(img.name, img.digest, [(d, layers.tree_path(d)) for d in img.layers])


def layers(store: StoreRoot, refs: Sequence[str]) -> Target:
    """Layers given top first (as ``-l`` is everywhere: ``ws create -l TOP -l BELOW``)."""
    from tophan.layer.layers import Layers, check_ref

    if not refs:
        raise UsageError("no layer given")
    store_layers = Layers(store)
    found = [store_layers.get(check_ref(r)) for r in refs]
    stack = [(layer.digest, store_layers.tree_path(layer.digest)) for layer in reversed(found)]
    return Target(" ".join(f"-l {r}" for r in refs), None, stack)


def all_images(store: StoreRoot) -> list[Target]:
    """Every image in the store (the apps' images among them), by name."""
    from tophan.image.images import Images

    out = []
    for name in Images(store).names():
        try:
            out.append(image(store, name))
        except TophanError:  # a broken image is fsck's to report; the rest scan
            continue
    return out
