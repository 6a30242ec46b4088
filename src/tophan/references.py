"""What still uses a layer: the one rule that spans every package.

A layer tree is needed while a layer name, a workspace, an image, an app, a live run, the build
cache or a build in progress uses it.
Each package knows its own holders; this module asks them all, and the store façade passes the
answer down to ``Layers`` and ``Images`` (which cannot import the packages above them).
"""

from __future__ import annotations

import os

from tophan.app.apps import Apps
from tophan.build.cache import referenced_layers as build_layers
from tophan.image.images import Images
from tophan.layer.layers import Layers, is_digest_ref
from tophan.run.container import live_run_digests

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan._internal.root import StoreRoot


def layers(store: StoreRoot) -> set[str]:
    """Layer digests something still needs: names, workspaces, live runs, images, apps that
    name a layer by digest, the build cache and builds in progress."""
    images = Images(store).referenced()[1]
    named = Layers(store).referenced_digests()
    return named | live_run_digests(store) | images | _app_digests(store) | build_layers(store)


def _app_digests(store: StoreRoot) -> set[str]:
    """What apps hold by digest (``-l sha256:…`` or a prefix): every stored layer it may mean."""
    if not os.path.isdir(store.path("apps")):
        return set()
    layer_store = Layers(store)
    stored = set(layer_store.stored_digests())
    out: set[str] = set()
    for app in Apps(store).all():
        for ref in app.spec.run.layers:
            if is_digest_ref(ref) and not layer_store.exists(ref):
                hexpart = ref.removeprefix("sha256:")
                out.update(d for d in stored if d[7:].startswith(hexpart))
    return out


def users(store: StoreRoot, name: str) -> list[tuple[str, str]]:
    """What holds layer ``name`` by its name (apps), with how to free it."""
    if not os.path.isdir(store.path("apps")):
        return []
    return [
        (f"app {a.name}", f"remove the app first (`tophan app rm {a.name}`)")
        for a in Apps(store).all()
        if name in a.spec.run.layers
    ]


def images_by_layer(store: StoreRoot) -> dict[str, list[str]]:
    """Layer digest -> the names of the images whose stack includes it."""
    images = Images(store)
    by: dict[str, list[str]] = {}
    for image in images.all():
        for digest in dict.fromkeys(image.layers):
            by.setdefault(digest, []).append(image.name)
    return by
