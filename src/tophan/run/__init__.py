"""Running containers: ``RunOptions`` (what to run, typed) -> ``container.Spec`` -> the runtime.

``container`` is the runtime (namespaces, mounts, pivot, exec), ``security`` the capability and
seccomp steps, ``cgroup`` the limits on v1 and v2, ``idmap`` rootless id maps, ``volumes`` the
store's named volumes. Only ``options`` is imported here: it is light, the rest is not.
"""

from tophan.run.options import Mount, RunOptions

__all__ = ["Mount", "RunOptions"]
