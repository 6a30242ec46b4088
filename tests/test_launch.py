"""What launching a container does to the calling process, through the API, as root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import busybox_rootfs, run_cli

# Runs in a fresh interpreter: the caller under test is that process, nothing pytest did before.
CALLER = r"""
import os, sys
from tophan._internal import libc
from tophan.run import container as runtime
from tophan.store import Store

store = Store(sys.argv[1])
base = store.layers.get("base")
spec = runtime.Spec([store.layers.tree_path(base.digest)], ["true"])
spec.digests = [base.digest]
ctr = runtime.start(store, spec)
try:
    assert ctr.wait() == 0
finally:
    ctr.close()

# The caller's own orphan: a child forks a grandchild and exits at once; the grandchild
# reports its parent once it has been reparented (the child is gone).
r, w = os.pipe()
child = os.fork()
if child == 0:
    if os.fork() == 0:
        while os.getppid() == child:
            os.sched_yield()
        os.write(w, str(os.getppid()).encode())
        os._exit(0)
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
with os.fdopen(r) as f:
    adopted_by = int(f.read())
print(libc.child_subreaper(), adopted_by == os.getpid())
"""


def test_launch_leaves_the_caller_no_subreaper(root: Path, tmp_path: Path) -> None:
    """runtime.start makes the caller a child subreaper only while it launches: afterwards
    the caller's orphaned grandchildren go to init, as before it used the API."""
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    assert run_cli("--root", str(root), "layer", "create", "base", "--from", str(rootfs)).rc == 0
    p = subprocess.run(
        [sys.executable, "-c", CALLER, str(root)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == "False False\n"
