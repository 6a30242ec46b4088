"""Issue 8 #2: a local user next to root's store (the CVE-2021-41091 pattern). The store holds
image and container content — setuid-root files, device nodes, secrets — so only its owner
may reach it: 0700 at its top whatever the umask, and root never works in a store another
user can write or owns. Attacks made for real by an unprivileged user the fixture creates."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import run_cli
from rootless import RootlessUser, run_as_user

pytest_plugins = ["rootless"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def open_store(tmp_path: Path) -> Path:
    """A store a local user can reach: in a world-traversable dir (as /var/lib is)."""
    top = tmp_path / "pub"
    top.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(top, 0o755)
    old = os.umask(0)  # the most permissive umask: init must not depend on it
    try:
        assert run_cli("init", str(top / "store")).rc == 0
    finally:
        os.umask(old)
    return top / "store"


def _setuid_layer(store: Path, tmp_path: Path) -> Path:
    """A layer holding a setuid-root copy of a shell, as a hostile image would ship."""
    src = tmp_path / "evil"
    (src / "bin").mkdir(parents=True)
    sh = src / "bin/rootsh"
    sh.write_bytes(Path("/bin/busybox").read_bytes())
    os.chmod(sh, 0o4755)
    assert run_cli("--root", str(store), "layer", "create", "evil", "--from", str(src)).rc == 0
    out = run_cli("--root", str(store), "layer", "path", "evil").out.strip()
    return Path(out) / "bin/rootsh"


def test_a_local_user_cannot_reach_a_setuid_file_of_an_image(
    open_store: Path, tmp_path: Path, rootless_user: RootlessUser
) -> None:
    assert stat.S_IMODE(open_store.stat().st_mode) == 0o700
    rootsh = _setuid_layer(open_store, tmp_path)
    assert rootsh.stat().st_mode & stat.S_ISUID  # the layer keeps it: it is the image's
    r = run_as_user(rootless_user, [str(rootsh), "sh", "-c", "id -u"], unshare=False)
    assert r.returncode != 0 and r.stdout.strip() != "0", (r.stdout, r.stderr)
    r = run_as_user(rootless_user, ["ls", str(open_store / "layers")], unshare=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r


def test_an_old_open_store_is_closed_on_open(open_store: Path) -> None:
    os.chmod(open_store, 0o755)  # as `init` made it before
    assert run_cli("--root", str(open_store), "layer", "list").rc == 0
    assert stat.S_IMODE(open_store.stat().st_mode) == 0o700


def test_root_refuses_a_store_others_can_write_or_own(open_store: Path) -> None:
    os.chmod(open_store, 0o775)
    r = run_cli("--root", str(open_store), "layer", "list")
    assert r.rc != 0 and "writable by other users" in r.err and r.err.count("\n") == 1, r.err
    os.chmod(open_store, 0o700)
    os.chown(open_store, 65534, 65534)
    r = run_cli("--root", str(open_store), "layer", "list")
    assert r.rc != 0 and "belongs to uid 65534" in r.err, r.err
    os.chown(open_store, 0, 0)


def test_a_user_gets_one_line_for_roots_store(
    open_store: Path, rootless_user: RootlessUser
) -> None:
    tophan = str(rootless_user.bin / "tophan")
    r = run_as_user(rootless_user, [tophan, "--root", str(open_store), "app", "ls"], unshare=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_pulled_and_imported_layers_are_published_alike(tmp_path: Path) -> None:
    from registry_fixture import make_layer, store_at

    store = store_at(tmp_path / "s")
    digest = make_layer(store, "base", {"f": b"x"}, tmp_path)
    store.images.create("app", ["base"])
    archive = tmp_path / "app.tar"
    assert run_cli("--root", str(store.root), "image", "export", "app", str(archive)).rc == 0
    other = store_at(tmp_path / "o")
    assert run_cli("--root", str(other.root), "image", "import", str(archive)).rc == 0
    hexd = digest.split(":", 1)[1]
    imported = stat.S_IMODE(os.stat(store.path("layers", hexd)).st_mode)
    pulled = stat.S_IMODE(os.stat(other.path("layers", hexd)).st_mode)
    assert imported == pulled == 0o700


def _mount_opts(path: str) -> set[str]:
    """The options of the topmost mount at ``path`` (empty: nothing is mounted there)."""
    opts: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                opts = set(fields[5].split(","))
    return opts


def test_workspaces_are_mounted_nosuid_nodev(tmp_path: Path) -> None:
    """A setuid file of an image (or one written into the upper dir) and device nodes do not
    work through a workspace's mount, wherever it is; `suid_dev=True` is the explicit way back."""
    from registry_fixture import make_layer, store_at

    store = store_at(tmp_path / "s")
    make_layer(store, "base", {"f": b"x"}, tmp_path)
    outside = tmp_path / "visible"
    ws = store.workspaces.create("w", ["base"], mountpoint=str(outside))
    try:
        assert {"nosuid", "nodev"} <= _mount_opts(ws.mountpoint)
    finally:
        store.workspaces.unmount("w")
    ws = store.workspaces.create("w2", ["base"], suid_dev=True)
    try:
        assert not {"nosuid", "nodev"} & _mount_opts(ws.mountpoint)
        store.workspaces.unmount("w2")
        store.workspaces.mount("w2")  # the choice is kept in the workspace's meta
        assert not {"nosuid", "nodev"} & _mount_opts(ws.mountpoint)
    finally:
        store.workspaces.unmount("w2")


def test_ws_create_suid_dev_flag(tmp_path: Path) -> None:
    from registry_fixture import make_layer, store_at

    store = store_at(tmp_path / "s")
    make_layer(store, "base", {"f": b"x"}, tmp_path)
    for name, flags, want in (("a", [], True), ("b", ["--suid-dev"], False)):
        r = run_cli("--root", str(store.root), "ws", "create", name, "-l", "base", *flags)
        assert r.rc == 0, r.err
        try:
            assert ({"nosuid", "nodev"} <= _mount_opts(r.out.strip())) is want
        finally:
            assert run_cli("--root", str(store.root), "ws", "unmount", name).rc == 0
