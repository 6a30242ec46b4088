"""Rootless: a real unprivileged user (created here, removed afterwards) inside `unshare -Urm`.

The pyenv interpreter lives under /root (mode 0700), so the user runs Debian's /usr/bin/python3
with a world-readable copy of our sources on PYTHONPATH.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PY = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(PY),
    reason="needs root to create a user, and Debian's python3",
)


class User:
    def __init__(self, name: str, home: Path) -> None:
        self.name = name
        self.home = home
        pw = pwd.getpwnam(name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def run(self, script: str, *, unshare: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [PY, "-c", textwrap.dedent(script)]
        if unshare:
            argv = ["unshare", "-Urm", *argv]
        argv = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *argv]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "PYTHONPATH": str(self.home / "src"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=self.home, timeout=300
        )


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    name = f"tph{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix="tophan-rootless-", dir="/tmp"))
    os.chmod(home, 0o755)
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", name],
        check=True,
    )
    try:
        shutil.copytree(SRC, home / "src", ignore=shutil.ignore_patterns("__pycache__"))
        u = User(name, home)
        subprocess.run(["chown", "-R", f"{u.uid}:{u.gid}", str(home)], check=True)
        yield u
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["rm", "-rf", str(home)], check=False)


@pytest.fixture
def base_tar(user: User) -> Path:
    src = user.home / "rootfs"
    shutil.rmtree(src, ignore_errors=True)
    (src / "etc/conf.d").mkdir(parents=True)
    (src / "etc/conf.d/a").write_text("a\n")
    (src / "etc/motd").write_text("motd\n")
    (src / "home/someone").mkdir(parents=True)
    out = user.home / "base.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(src.rglob("*")):
            info = tf.gettarinfo(str(p), arcname=str(p.relative_to(src)))
            if p.name == "someone":
                info.uid = info.gid = 4242  # an id the single-id user namespace cannot map
            tf.addfile(info, open(p, "rb") if p.is_file() else None)  # noqa: SIM115
    os.chown(out, user.uid, user.gid)
    return out


def test_rootless_full_cycle_in_user_namespace(user: User, base_tar: Path) -> None:
    r = user.run(
        f"""
        import io, os, subprocess, tarfile
        from tophan import Store
        store = Store.init("store-{uuid.uuid4().hex[:6]}")
        assert store.xattr_ns == "user", store.xattr_ns
        with open({str(base_tar)!r}, "rb") as f:
            base = store.layers.import_tar(f, "base")
        # ownership the namespace cannot apply is kept, and exported back
        from tophan.layer import tarexport
        assert tarexport.digest_tree(base.path, xattr_ns="user") == base.digest
        owner = os.getxattr(os.path.join(base.path, "home/someone"), "user.tophan.owner")
        assert owner == b"4242:4242", owner
        ws = store.workspaces.create("w", ["base"])
        mp = ws.mountpoint
        open(os.path.join(mp, "new"), "w").write("new\\n")
        open(os.path.join(mp, "etc/motd"), "w").write("changed\\n")
        subprocess.run(["rm", "-rf", os.path.join(mp, "etc/conf.d")], check=True)  # a lower dir
        assert not os.path.exists(os.path.join(mp, "etc/conf.d"))
        store.workspaces.unmount("w")
        assert not store.workspaces.is_mounted(ws)
        delta = store.layers.commit("w", "delta")
        out = io.BytesIO()
        store.layers.export("delta", out)
        out.seek(0)
        names = sorted(tarfile.open(fileobj=out).getnames())
        assert names == ["etc", "etc/.wh.conf.d", "etc/motd", "new"], names
        out = io.BytesIO()
        store.layers.export("base", out)
        out.seek(0)
        owners = {{m.name: m.uid for m in tarfile.open(fileobj=out)}}
        assert owners["home/someone"] == 4242, owners
        ws2 = store.workspaces.create("v", ["delta", "base"])
        assert open(os.path.join(ws2.mountpoint, "etc/motd")).read() == "changed\\n"
        assert not os.path.exists(os.path.join(ws2.mountpoint, "etc/conf.d"))
        store.workspaces.remove("v")
        store.workspaces.remove("w")
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_rootless_cli_contract_in_user_namespace(user: User, base_tar: Path) -> None:
    root = f"cli-{uuid.uuid4().hex[:6]}"
    r = user.run(
        f"""
        import subprocess, sys
        def t(*args):
            p = subprocess.run([sys.executable, "-m", "tophan", "--root", {root!r}, *args],
                               capture_output=True, text=True)
            return p.returncode, p.stdout, p.stderr
        assert t("init") == (0, {root!r} + "\\n", "")
        assert t("layer", "import", {str(base_tar)!r}, "base") == (0, "base\\n", "")
        rc, mp, err = t("ws", "create", "w", "-l", "base")
        assert rc == 0 and err == "", err
        assert t("ws", "list")[1].split("\\t")[1] == "mounted"
        assert t("ws", "unmount", "w")[0] == 0
        assert t("ws", "list")[1].split("\\t")[1] == "unmounted"
        assert t("layer", "commit", "w", "c") == (0, "c\\n", "")
        assert t("ws", "rm", "w") == (0, "", "")
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_mount_without_namespace_fails_with_one_clear_line(user: User, base_tar: Path) -> None:
    root = f"nons-{uuid.uuid4().hex[:6]}"
    r = user.run(
        f"""
        import subprocess, sys
        def t(*args):
            return subprocess.run([sys.executable, "-m", "tophan", "--root", {root!r}, *args],
                                  capture_output=True, text=True)
        assert t("init").returncode == 0
        assert t("layer", "import", {str(base_tar)!r}, "base").returncode == 0
        p = t("ws", "create", "w", "-l", "base")
        print(p.returncode)
        print(p.stderr, end="")
        print(repr(p.stdout))
        print(t("ws", "list").stdout, end="")
        """,
        unshare=False,
    )
    assert r.returncode == 0, r.stderr
    rc, err, out, *rest = r.stdout.splitlines()
    assert rc == "1"
    assert err.startswith("tophan: cannot mount overlay") and "unshare -Urm" in err
    assert out == "''"
    assert rest == []  # the failed create left no workspace behind
