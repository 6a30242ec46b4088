"""Building images from Containerfiles: ``tophan build``.

Modules: ``containerfile`` (the parser and Docker's variable substitution), ``ignore``
(``.containerignore``), ``builder`` (stages, steps, the image), ``instructions`` (config-only
instructions), ``tree`` (a read-only view of a layer stack), ``copy`` (COPY/ADD as a tar),
``squash`` (``--layer``), ``cache`` (the build cache).

Names are imported lazily: importing one module of the package loads no other.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False

__all__ = ["BuildError", "BuildOptions", "BuildResult", "Output", "build"]

_LAZY = {name: "tophan.build.builder" for name in __all__}

if TYPE_CHECKING:
    from tophan.build.builder import BuildError, BuildOptions, BuildResult, Output, build


__getattr__ = exports(__name__, _LAZY)
