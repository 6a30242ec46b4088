"""Running: a process in a composed, isolated root (the container runtime), its hardening, cgroup
limits, and named volumes.

Modules: ``options`` (``RunOptions``: what to run, typed; what ``tophan run`` and apps build),
``container`` (``Spec``, ``start``, ``run``), ``security`` (capabilities, seccomp, no_new_privs,
masked paths), ``devices`` (the device cgroup), ``stdio`` (terminals), ``cgroup`` (v2 and v1
limits), ``volumes``.

Names are imported lazily: importing one module of the package loads no other.
"""

from __future__ import annotations

from tophan._internal import exports

TYPE_CHECKING = False

__all__ = [
    "Bind",
    "Container",
    "Limits",
    "Mount",
    "RunError",
    "RunOptions",
    "Spec",
    "Volume",
    "Volumes",
    "run",
    "start",
]

_LAZY = {
    "Bind": "tophan.run.container",
    "Mount": "tophan.run.options",
    "RunOptions": "tophan.run.options",
    "Container": "tophan.run.container",
    "Limits": "tophan.run.cgroup",
    "run": "tophan.run.container",
    "RunError": "tophan.run.container",
    "Spec": "tophan.run.container",
    "start": "tophan.run.container",
    "Volume": "tophan.run.volumes",
    "Volumes": "tophan.run.volumes",
}

if TYPE_CHECKING:
    from tophan.run.cgroup import Limits
    from tophan.run.container import Bind, Container, RunError, Spec, run, start
    from tophan.run.options import Mount, RunOptions
    from tophan.run.volumes import Volume, Volumes


__getattr__ = exports(__name__, _LAZY)
