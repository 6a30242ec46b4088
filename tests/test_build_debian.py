"""`tophan build` on a real Debian base: apt-get in a RUN (several uids inside), a user made
with useradd, the apt lists removed in the same step. Slow: mmdebstrap makes the base from
deb.debian.org (~20 s), which this machine may reach (Debian's mirrors are allowed); without
it the test is skipped, saying so."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from rootless import RootlessUser, _user_mkdir, kill_user_processes, run_as_user

pytestmark = pytest.mark.slow
MIRROR = "deb.debian.org"
# apt drops to _apt to download, useradd and su switch users: several uids in RUN steps
CONTAINERFILE = (
    "FROM debian:12\n"
    "RUN apt-get update && apt-get install -y --no-install-recommends hello \\\n"
    "    && rm -rf /var/lib/apt/lists/*\n"
    "RUN useradd -m -u 1234 app && su app -c 'echo mine > ~/f'\n"
    'CMD ["hello"]\n'
)


def _mirror_reachable() -> bool:
    try:
        socket.create_connection((MIRROR, 80), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def debian_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (make deps installs it)")
    if not _mirror_reachable():
        pytest.skip(f"{MIRROR} is not reachable from here")
    out = tmp_path_factory.mktemp("debian") / "bookworm.tar"
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", "--quiet", "bookworm", str(out),
         f"http://{MIRROR}/debian"],
        check=True, timeout=600,
    )  # fmt: skip
    return out


def test_apt_get_install_in_a_debian_base(debian_tar: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    assert run_cli("init", str(root)).rc == 0

    def ok(*args: str) -> str:
        r = run_cli(*args, root=root)
        assert r.rc == 0, (args, r.out[-2000:], r.err)
        return r.out

    ok("layer", "import", str(debian_tar), "debian")
    ok("image", "create", "debian:12", "-l", "debian", "--cmd", '["bash"]')
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    out = ok("build", "-t", "hello", str(ctx))
    assert "Setting up hello" in out  # apt's output streamed
    assert ok("run", "hello") == "Hello, world!\n"
    assert ok("run", "hello", "--", "stat", "-c", "%u:%g %n", "/home/app/f") == (
        "1234:1234 /home/app/f\n"
    )
    # the apt lists went in the step that fetched them: the layer holds no cache
    info = json.loads(ok("image", "inspect", "hello"))
    apt_layer = Path(info["layers"][-2]["path"])
    lists = apt_layer / "var/lib/apt/lists"
    assert not lists.exists() or not any(p.is_file() for p in lists.rglob("*"))


def test_rootless_apt_get_install(debian_tar: Path, subid_user: RootlessUser) -> None:
    """The same as an unprivileged user with subordinate ids: apt drops to _apt to fetch,
    useradd and su switch users, and the image records their owners."""
    import os
    import tarfile
    import uuid

    work = _user_mkdir(subid_user.base / "work" / uuid.uuid4().hex[:12], subid_user)
    try:
        # Without its device nodes (mmdebstrap puts /dev/null & co. in the tar; registries'
        # Debian images have none): a rootless import refuses them, saying so.
        tar = work / "bookworm.tar"
        with tarfile.open(debian_tar) as src, tarfile.open(tar, "w") as dst:
            for m in src:
                if not (m.ischr() or m.isblk()):
                    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        os.chown(tar, subid_user.uid, subid_user.gid)
        ctx = _user_mkdir(work / "ctx", subid_user)
        (ctx / "Containerfile").write_text(CONTAINERFILE)
        os.chown(ctx / "Containerfile", subid_user.uid, subid_user.gid)

        def ok(*args: str) -> str:
            r = run_as_user(
                subid_user, ["tophan", "--root", str(work / "store"), *args], unshare=False,
                cwd=work, timeout=900,
            )  # fmt: skip
            assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr)
            return r.stdout

        ok("init")
        ok("layer", "import", str(tar), "debian")
        ok("image", "create", "debian:12", "-l", "debian", "--cmd", '["bash"]')
        out = ok("build", "-t", "hello", str(ctx))
        assert "Setting up hello" in out
        assert ok("run", "hello") == "Hello, world!\n"
        info = json.loads(ok("image", "inspect", "hello"))
        ok("layer", "export", info["layers"][-1]["digest"], str(work / "top.tar"))
        with tarfile.open(work / "top.tar") as tf:
            owners = {m.name.rstrip("/"): (m.uid, m.gid) for m in tf.getmembers()}
        assert owners["home/app"] == (1234, 1234) and owners["home/app/f"] == (1234, 1234)
        assert list((work / "store/tmp").iterdir()) == []
    finally:
        kill_user_processes(subid_user.uid)
