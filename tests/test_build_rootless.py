"""Rootless builds as a real unprivileged user (with subordinate ids, and with one id), and the
ownership model of rootless stores they rely on (docs/build.md, "Rootless")."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import busybox_full_rootfs
from rootless import RootlessUser, _user_mkdir, kill_user_processes, run_as_user

pytestmark = pytest.mark.rootless


@pytest.fixture
def subid_dir(subid_user: RootlessUser) -> Iterator[Path]:
    import uuid

    d = _user_mkdir(subid_user.base / "work" / uuid.uuid4().hex[:12], subid_user)
    try:
        yield d
    finally:
        kill_user_processes(subid_user.uid)


def _tophan(user: RootlessUser, cwd: Path, *args: str) -> tuple[int, str, str]:
    r = run_as_user(user, ["tophan", "--root", str(cwd / "store"), *args], unshare=False, cwd=cwd)
    return r.returncode, r.stdout, r.stderr


def _base(user: RootlessUser, cwd: Path) -> None:
    rootfs = busybox_full_rootfs(cwd / "rootfs-src")
    for dirpath, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), user.uid, user.gid)
    os.chown(rootfs, user.uid, user.gid)
    assert _tophan(user, cwd, "init")[0] == 0
    rc, _, err = _tophan(user, cwd, "layer", "create", "base", "--from", str(rootfs))
    assert rc == 0, err


def test_subid_run_leaves_nothing(subid_user: RootlessUser, subid_dir: Path) -> None:
    _base(subid_user, subid_dir)
    rc, out, err = _tophan(
        subid_user, subid_dir, "run", "-l", "base", "--", "sh", "-c",
        "cat /proc/self/uid_map; mkdir -p /d/e && echo x > /d/e/f && chown -R 5:5 /d "
        "&& chmod 700 /d /d/e && ls -ln /d",
    )  # fmt: skip
    print(out, err)
    assert rc == 0, err
    assert list((subid_dir / "store/tmp").iterdir()) == []


def _tar_owners(user: RootlessUser, cwd: Path, layer: str) -> dict[str, tuple[int, int]]:
    """The owners a layer's canonical tar says (what a push would send), exported as the user."""
    import tarfile

    out = cwd / f"{layer.replace(':', '-')}.tar"
    rc, _, err = _tophan(user, cwd, "layer", "export", layer, str(out))
    assert rc == 0, err
    with tarfile.open(out) as tf:
        return {m.name.rstrip("/"): (m.uid, m.gid) for m in tf.getmembers()}


def test_rootless_build_with_subordinate_ids(subid_user: RootlessUser, subid_dir: Path) -> None:
    """Several users inside a RUN; their files committed with the owners they had in the
    container (recorded, as a rootless store keeps owners); a later USER step writes into the
    home an earlier step gave it; COPY --chown; the image runs; the build leaves nothing behind
    that the user cannot remove."""
    _base(subid_user, subid_dir)
    assert _tophan(subid_user, subid_dir, "image", "create", "bb", "-l", "base")[0] == 0
    ctx = _user_mkdir(subid_dir / "ctx", subid_user)
    (ctx / "Containerfile").write_text(
        "FROM bb\n"
        "RUN mkdir -p /home/app /var/spool/q \\\n"
        "    && echo secret > /var/spool/q/job && chmod 600 /var/spool/q/job \\\n"
        "    && chown -R 100:101 /var/spool/q && chmod 700 /var/spool/q \\\n"
        "    && chown 1000:1000 /home/app && ln -s /home/app /applink \\\n"
        "    && echo nobody:x:65534:65534::/:/bin/sh >> /etc/passwd \\\n"
        "    && echo nogroup:x:65534: >> /etc/group \\\n"
        "    && su nobody -c 'id -u > /tmp/nobody-was-here'\n"
        "COPY --chown=7:8 f.txt /srv/f.txt\n"
        "USER 1000:1000\n"
        "RUN id -u > /tmp/uid && echo mine > /home/app/note\n"
        'CMD ["cat", "/tmp/uid", "/var/spool/q/job"]\n'
    )
    (ctx / "f.txt").write_text("from the context\n")
    os.chown(ctx / "Containerfile", subid_user.uid, subid_user.gid)
    os.chown(ctx / "f.txt", subid_user.uid, subid_user.gid)
    rc, out, err = _tophan(subid_user, subid_dir, "build", "-t", "app", str(ctx))
    assert rc == 0, (out, err)
    assert "warning" not in err
    rc, out, err = _tophan(subid_user, subid_dir, "run", "--user", "0", "app")
    assert (rc, out) == (0, "1000\nsecret\n"), err
    rc, out, err = _tophan(subid_user, subid_dir, "image", "inspect", "app")
    assert rc == 0, err
    import json

    layers = [layer["digest"] for layer in json.loads(out)["layers"]]
    assert len(layers) == 4  # base, the first RUN, COPY, the second RUN
    owners = _tar_owners(subid_user, subid_dir, layers[1])
    assert owners["var/spool/q"] == (100, 101) and owners["var/spool/q/job"] == (100, 101)
    assert owners["home/app"] == (1000, 1000)
    assert owners["applink"] == (0, 0) and owners["tmp/nobody-was-here"] == (65534, 65534)
    assert _tar_owners(subid_user, subid_dir, layers[2])["srv/f.txt"] == (7, 8)
    top = _tar_owners(subid_user, subid_dir, layers[3])
    assert top["tmp/uid"] == (1000, 1000) and top["home/app/note"] == (1000, 1000)
    assert top["home/app"] == (1000, 1000)  # (its mtime changed: a new entry)
    # the run gave /var/spool/q its recorded owner (a copy-up), which is no change to commit
    assert not any(name.startswith("var") for name in top)
    # a rootless run shows the owners a layer records on its directories
    rc, out, err = _tophan(
        subid_user,
        subid_dir,
        "run",
        "app",
        "--",
        "stat",
        "-c",
        "%u:%g",
        "/home/app",
        "/var/spool/q",
    )
    assert (rc, out) == (0, "1000:1000\n100:101\n"), err
    # nothing left in the store's temporary space, all of it the user's own
    assert list((subid_dir / "store/tmp").iterdir()) == []
    for dirpath, dirs, files in os.walk(subid_dir / "store"):
        for name in dirs + files:
            assert os.lstat(os.path.join(dirpath, name)).st_uid == subid_user.uid


def test_rootless_build_with_one_id_says_what_cannot_work(
    rootless_user: RootlessUser, rootless_dir: Path
) -> None:
    _base(rootless_user, rootless_dir)
    assert _tophan(rootless_user, rootless_dir, "image", "create", "bb", "-l", "base")[0] == 0
    ctx = _user_mkdir(rootless_dir / "ctx", rootless_user)
    (ctx / "Containerfile").write_text("FROM bb\nRUN echo ok > /ok\nRUN chown 5 /ok\n")
    os.chown(ctx / "Containerfile", rootless_user.uid, rootless_user.gid)
    rc, _, err = _tophan(rootless_user, rootless_dir, "build", "-t", "x", str(ctx))
    assert rc != 0
    lines = err.strip().splitlines()
    assert lines[0].startswith("warning: rootless without subordinate ids"), err
    assert "/etc/subuid" in lines[0]
    assert "RUN failed" in lines[-1] and "chown 5 /ok" in lines[-1], err
    assert list((rootless_dir / "store/tmp").iterdir()) == []


def test_rootless_store_keeps_a_layers_digest(
    rootless_user: RootlessUser, rootless_dir: Path, tmp_path: Path
) -> None:
    """A layer made by root (root-owned symlinks, files of other users) imported by an
    unprivileged user, outside any namespace, keeps its digest: the user's own ids read as
    root's, other owners are recorded, and its export is byte-identical."""
    import hashlib
    import shutil

    from conftest import busybox_rootfs, run_cli

    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "srv").mkdir()
    (rootfs / "srv/data").write_text("d\n")
    os.chown(rootfs / "srv/data", 5, 6)
    os.chown(rootfs / "srv", 7, 8)
    os.symlink("data", rootfs / "srv/link")
    root_store = tmp_path / "store"
    assert run_cli("init", str(root_store)).rc == 0
    assert run_cli("layer", "create", "l", "--from", str(rootfs), root=root_store).rc == 0
    tar = tmp_path / "l.tar"
    assert run_cli("layer", "export", "l", str(tar), root=root_store).rc == 0
    digest = "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()
    user_tar = rootless_dir / "l.tar"
    shutil.copyfile(tar, user_tar)
    os.chown(user_tar, rootless_user.uid, rootless_user.gid)
    assert _tophan(rootless_user, rootless_dir, "init")[0] == 0
    rc, out, err = _tophan(rootless_user, rootless_dir, "layer", "import", str(user_tar), "l")
    assert rc == 0, err
    rc, out, err = _tophan(rootless_user, rootless_dir, "layer", "info", "l")
    assert rc == 0 and digest in out, (digest, out, err)
    again = rootless_dir / "again.tar"
    assert _tophan(rootless_user, rootless_dir, "layer", "export", "l", str(again))[0] == 0
    assert again.read_bytes() == tar.read_bytes()
    assert _tophan(rootless_user, rootless_dir, "layer", "verify", "l")[0] == 0


def test_rootless_failed_run_leaves_nothing(subid_user: RootlessUser, subid_dir: Path) -> None:
    """A RUN that fails after another user's files were made: the build stops with its exit
    code and its run dir is gone (removed as root of the mapped namespace)."""
    _base(subid_user, subid_dir)
    assert _tophan(subid_user, subid_dir, "image", "create", "bb", "-l", "base")[0] == 0
    ctx = _user_mkdir(subid_dir / "ctx", subid_user)
    (ctx / "Containerfile").write_text(
        "FROM bb\nRUN mkdir -p /x/y && touch /x/y/z && chown -R 5:5 /x && chmod -R 700 /x"
        " && exit 3\n"
    )
    os.chown(ctx / "Containerfile", subid_user.uid, subid_user.gid)
    rc, _, err = _tophan(subid_user, subid_dir, "build", "-t", "x", str(ctx))
    assert rc == 3 and "RUN failed with exit code 3" in err, err
    assert list((subid_dir / "store/tmp").iterdir()) == []
    rc, _, err = _tophan(subid_user, subid_dir, "gc")
    assert rc == 0, err


def test_recorded_owners_never_follow_a_layers_symlink_to_the_host(
    subid_user: RootlessUser, subid_dir: Path, tmp_path: Path
) -> None:
    """Hostile layers: a lower records an owner for /a/b, an upper makes /a a symlink to a
    directory of the user's on the host. The init applies owners before it pivots into the
    root: it must not chown the host's directory through that symlink."""
    import io
    import tarfile

    victim = _user_mkdir(subid_dir / "victim", subid_user)
    _user_mkdir(victim / "b", subid_user)

    def tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            for m in members:
                tf.addfile(m, io.BytesIO(b"") if m.isfile() else None)
        os.chown(path, subid_user.uid, subid_user.gid)
        return path

    def member(name: str, kind: bytes, uid: int = 0, link: str = "") -> tarfile.TarInfo:
        m = tarfile.TarInfo(name)
        m.type, m.uid, m.gid, m.mode, m.linkname = kind, uid, uid, 0o755, link
        return m

    _base(subid_user, subid_dir)
    lower = tar(
        subid_dir / "lower.tar",
        [member("a", tarfile.DIRTYPE), member("a/b", tarfile.DIRTYPE, uid=1000)],
    )
    upper = tar(subid_dir / "upper.tar", [member("a", tarfile.SYMTYPE, link=str(victim))])
    for path, name in ((lower, "lower"), (upper, "upper")):
        rc, _, err = _tophan(subid_user, subid_dir, "layer", "import", str(path), name)
        assert rc == 0, err
    rc, out, err = _tophan(
        subid_user, subid_dir, "run", "-l", "upper", "-l", "lower", "-l", "base", "--",
        "sh", "-c", "readlink /a",
    )  # fmt: skip
    assert (rc, out) == (0, f"{victim}\n"), err
    st = os.stat(victim / "b")
    assert (st.st_uid, st.st_gid) == (subid_user.uid, subid_user.gid)
