"""User namespace id maps for rootless containers.

With subordinate ids for the user (``/etc/subuid``, ``/etc/subgid``) and the setuid helpers
``newuidmap``/``newgidmap`` (Debian's uidmap package), the container gets root = the user plus
the whole subordinate range as uids 1..N, so images with several users work. Without them, the
kernel lets a process map exactly one id, its own: root in the container is the user, and no
other uid exists (``setgroups`` is denied, as the kernel requires for that).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

from tophan.errors import TophanError


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


def write_maps(pid: int) -> None:
    """Map ids for ``pid``, a process that just made a user namespace."""
    uid, gid = os.geteuid(), os.getegid()
    subuid = subordinate("/etc/subuid", uid)
    subgid = subordinate("/etc/subgid", uid)
    helpers = shutil.which("newuidmap") and shutil.which("newgidmap")
    if subuid and subgid and helpers:
        _helper("newuidmap", pid, uid, subuid)
        _helper("newgidmap", pid, gid, subgid)
        return
    with open(f"/proc/{pid}/setgroups", "w") as f:
        f.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"0 {uid} 1\n")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"0 {gid} 1\n")


def _helper(tool: str, pid: int, own: int, sub: tuple[int, int]) -> None:
    argv = [tool, str(pid), "0", str(own), "1", "1", str(sub[0]), str(sub[1])]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise TophanError(
            f"{tool} could not map ids for the container: {why}",
            "check /etc/subuid and /etc/subgid for your user",
        )
