"""tophan: daemonless application packaging and deployment on Linux overlayfs.

The Python API is the product; the CLI is one client of it::

    from tophan import Store

    store = Store.init("/var/lib/tophan")
    with open("base.tar", "rb") as f:
        store.layers.import_tar(f, "base")
    ws = store.workspaces.create("job", ["base"])   # mounted at ws.mountpoint
    ...
    store.workspaces.unmount("job")
    store.layers.commit("job", "result")

Heavy modules are imported lazily so that ``import tophan`` stays cheap.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False
__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "Exists",
    "Image",
    "ImageConfig",
    "InUse",
    "IntegrityError",
    "Layer",
    "MountError",
    "NotFound",
    "RunOptions",
    "Store",
    "TophanError",
    "UsageError",
    "Workspace",
    "__version__",
]

_LAZY = {
    "Store": "tophan.store",
    "Layer": "tophan.layer.layers",
    "Image": "tophan.image.images",
    "ImageConfig": "tophan.image.images",
    "Workspace": "tophan.layer.workspace",
    "RunOptions": "tophan.run.options",
    "TophanError": "tophan.errors",
    "UsageError": "tophan.errors",
    "NotFound": "tophan.errors",
    "Exists": "tophan.errors",
    "InUse": "tophan.errors",
    "MountError": "tophan.errors",
    "ArchiveError": "tophan.errors",
    "IntegrityError": "tophan.errors",
}

if TYPE_CHECKING:
    from tophan.errors import (
        ArchiveError,
        Exists,
        IntegrityError,
        InUse,
        MountError,
        NotFound,
        TophanError,
        UsageError,
    )
    from tophan.image.images import Image, ImageConfig
    from tophan.layer.layers import Layer
    from tophan.layer.workspace import Workspace
    from tophan.run.options import RunOptions
    from tophan.store import Store


__getattr__ = exports(__name__, _LAZY)
