"""Images: ordered layers plus a config, stored as OCI manifests and configs in a blob store;
OCI archives in and out; a registry client (push, pull).

Modules: ``images`` (the image store), ``blobs`` (content-addressed blobs), ``spec`` (media
types, references, platforms), ``archive`` (OCI layout, oci-archive, docker-archive),
``registry`` (OCI distribution v1.1). API users reach the store through ``store.images``.

Names are imported lazily: importing one module of the package loads no other.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False

__all__ = [
    "Blobs",
    "Healthcheck",
    "Image",
    "ImageConfig",
    "Images",
    "Platform",
    "export_images",
    "import_images",
    "pull",
    "push",
]

_LAZY = {
    "Blobs": "tophan.image.blobs",
    "export_images": "tophan.image.archive",
    "Healthcheck": "tophan.image.images",
    "Image": "tophan.image.images",
    "ImageConfig": "tophan.image.images",
    "Images": "tophan.image.images",
    "import_images": "tophan.image.archive",
    "Platform": "tophan.image.spec",
    "pull": "tophan.image.registry",
    "push": "tophan.image.registry",
}

if TYPE_CHECKING:
    from tophan.image.archive import export_images, import_images
    from tophan.image.blobs import Blobs
    from tophan.image.images import Healthcheck, Image, ImageConfig, Images
    from tophan.image.registry import pull, push
    from tophan.image.spec import Platform


__getattr__ = exports(__name__, _LAZY)
