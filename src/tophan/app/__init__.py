"""Apps: a named, stored run spec plus one supervisor process (``tophand``) per running app that
keeps it running, checks its health and rotates its logs.

Modules: ``apps`` (the app store, start/stop), ``supervisor`` (tophand), ``health`` (Docker's
health-check semantics).

Names are imported lazily: importing one module of the package loads no other.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False

__all__ = [
    "App",
    "AppSpec",
    "Apps",
    "Check",
    "Health",
]

_LAZY = {
    "App": "tophan.app.apps",
    "Apps": "tophan.app.apps",
    "AppSpec": "tophan.app.apps",
    "Check": "tophan.app.health",
    "Health": "tophan.app.health",
}

if TYPE_CHECKING:
    from tophan.app.apps import App, Apps, AppSpec
    from tophan.app.health import Check, Health


__getattr__ = exports(__name__, _LAZY)
