"""Layers and workspaces: content-addressed overlayfs layer trees, the names that point at them,
and workspaces (a stack of layers plus a writable upper dir, mounted with overlayfs).

Modules: ``layers`` (the layer store), ``workspace``, ``mount`` (overlay mounts), ``commit``
(upper dir -> layer tree), ``tarimport``/``tarexport`` (exact tar in and out, the digest).
Everything here takes a ``tophan._internal.root.StoreRoot``; API users reach it through
``tophan.Store`` (``store.layers``, ``store.workspaces``).

Names are imported lazily: importing one module of the package loads no other.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False

__all__ = [
    "Layer",
    "Layers",
    "VerifyResult",
    "Workspace",
    "Workspaces",
]

_LAZY = {
    "Layer": "tophan.layer.layers",
    "Layers": "tophan.layer.layers",
    "VerifyResult": "tophan.layer.layers",
    "Workspace": "tophan.layer.workspace",
    "Workspaces": "tophan.layer.workspace",
}

if TYPE_CHECKING:
    from tophan.layer.layers import Layer, Layers, VerifyResult
    from tophan.layer.workspace import Workspace, Workspaces


__getattr__ = exports(__name__, _LAZY)
