"""``Store``: an opened store with its parts — layers, workspaces, volumes, images.

The parts live in their packages and work on the store's disk (``StoreRoot``); this façade
gives API users one object and wires the cross-package rule the parts cannot know themselves:
what still references a layer (names, workspaces, images, apps, live runs: ``references``).
"""

from __future__ import annotations

from tophan._internal.root import StoreRoot, default_root, is_privileged, overlayd_default_root

# The parts are imported when first used: `tophan ws path` must not pay for images' imports.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from tophan.image.images import Images
    from tophan.layer.layers import Layers
    from tophan.layer.workspace import Workspaces
    from tophan.run.volumes import Volumes

__all__ = ["Store", "default_root", "is_privileged", "overlayd_default_root"]


class Store(StoreRoot):
    """An opened tophan store. ``Store.init(path)`` creates one; ``Store(path)`` opens one."""

    _layers: Layers | None = None
    _workspaces: Workspaces | None = None
    _images: Images | None = None

    @property
    def layers(self) -> Layers:
        if self._layers is None:
            from tophan import references
            from tophan.layer.layers import Layers, References

            refs = References(lambda: references.layers(self), lambda n: references.users(self, n))
            self._layers = Layers(self, references=refs)
        return self._layers

    @property
    def workspaces(self) -> Workspaces:
        if self._workspaces is None:
            from tophan.layer.workspace import Workspaces

            self._workspaces = Workspaces(self)
        return self._workspaces

    @property
    def volumes(self) -> Volumes:
        from tophan.run.volumes import Volumes

        return Volumes(self)

    @property
    def images(self) -> Images:
        if self._images is None:
            from tophan import references
            from tophan.image.images import Images

            self._images = Images(self, references=lambda: references.layers(self))
        return self._images
