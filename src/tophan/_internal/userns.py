"""User namespaces for an unprivileged user: the id maps rootless containers get, and running a
function as root of such a namespace.

With subordinate ids for the user (``/etc/subuid``, ``/etc/subgid``) and the setuid helpers
``newuidmap``/``newgidmap`` (Debian's uidmap package), a namespace maps root to the user plus the
whole subordinate range as ids 1..N, so images with several users work. Without them, the kernel
lets a process map exactly one id, its own: root in the namespace is the user, and no other uid
exists (``setgroups`` is denied, as the kernel requires for that).

A container's processes leave files owned by the subordinate ids in its upper dir: the user
cannot read (mode 0600) or remove (a 0755 directory of another owner) them from outside. As root
of a namespace with the same map (:func:`call_mapped`) it can, and sees their owners as the
container saw them.
"""

from __future__ import annotations

import os
import pwd

from tophan.errors import TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")


def subordinate(path: str, uid: int) -> tuple[int, int] | None:
    """The first range ``start, count`` for ``uid`` (by name or number) in subuid/subgid."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (str(uid), name):
            continue
        if fields[1].isdigit() and fields[2].isdigit() and int(fields[2]) > 0:
            return int(fields[1]), int(fields[2])
    return None


def _subids() -> tuple[tuple[int, int], tuple[int, int]] | None:
    import shutil

    uid = os.geteuid()
    subuid = subordinate("/etc/subuid", uid)
    subgid = subordinate("/etc/subgid", uid)
    if subuid and subgid and shutil.which("newuidmap") and shutil.which("newgidmap"):
        return subuid, subgid
    return None


def has_subordinate_ids() -> bool:
    """Whether namespaces made by this (unprivileged) user map more than its own id."""
    return _subids() is not None


def write_maps(pid: int) -> None:
    """Map ids for ``pid``, a process that just made a user namespace."""
    uid, gid = os.geteuid(), os.getegid()
    sub = _subids()
    if sub is not None:
        _helper("newuidmap", pid, uid, sub[0])
        _helper("newgidmap", pid, gid, sub[1])
        return
    with open(f"/proc/{pid}/setgroups", "w") as f:
        f.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"0 {uid} 1\n")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"0 {gid} 1\n")


def _helper(tool: str, pid: int, own: int, sub: tuple[int, int]) -> None:
    import subprocess

    argv = [tool, str(pid), "0", str(own), "1", "1", str(sub[0]), str(sub[1])]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise TophanError(
            f"{tool} could not map ids for the container: {why}",
            "check /etc/subuid and /etc/subgid for your user",
        )


def call_mapped(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a child process that is root of a new user namespace with the map a
    rootless container gets (:func:`write_maps`); its result or exception comes back pickled.

    For the unprivileged user's work on what its containers left: reading and committing an
    upper dir, removing a run dir. Files the child creates belong to the user (root there)."""
    import pickle

    from tophan._internal import libc

    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            libc.unshare(libc.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            if os.read(go_r, 1) == b"g":
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                try:
                    out: tuple[bool, object] = (True, fn(*args))
                except BaseException as e:  # handed to the caller, who raises it
                    out = (False, e)
                _write_all(ready_w, pickle.dumps(out))
                status = 0
        finally:
            os._exit(status)
    os.close(ready_w)
    os.close(go_r)
    try:
        with open(ready_r, "rb") as r:
            if r.read(1) != b"u":
                raise TophanError("cannot make a user namespace: the child process failed")
            try:
                write_maps(pid)
            finally:
                os.write(go_w, b"g")
                os.close(go_w)
                go_w = -1
            data = r.read()
    finally:
        if go_w >= 0:
            os.close(go_w)
        _, status = os.waitpid(pid, 0)
    if not data or os.waitstatus_to_exitcode(status) != 0:
        raise TophanError("cannot work in a user namespace: the child process failed")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
