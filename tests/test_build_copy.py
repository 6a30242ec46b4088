"""tophan.build.copy: COPY/ADD planned over real trees, written as a tar, extracted by tophan's
own extractor and compared; ADD URLs from a real HTTP server on 127.0.0.1. Hostile contexts,
images and archives included."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import zstandard

from rootless import RootlessUser, python_as_user
from tarbuild import d, f, hard, sym, tar_bytes
from tophan.build.copy import CopySource, Plan, plan
from tophan.build.tree import Tree
from tophan.errors import IntegrityError, TophanError, UsageError
from tophan.layer import tarimport

WHERE = "Containerfile:7"


class Ignore:
    """A stand-in for the .containerignore matcher: ``paths`` are ignored with everything
    below them, ``keep`` re-includes a path (and what is below it)."""

    def __init__(self, *paths: str, keep: tuple[str, ...] = ()) -> None:
        self.paths = paths
        self.keep = keep

    @staticmethod
    def _under(rel: str, top: str) -> bool:
        return rel == top or rel.startswith(top + "/")

    def ignored(self, rel: str) -> bool:
        if any(self._under(rel, k) for k in self.keep):
            return False
        return any(self._under(rel, p) for p in self.paths)

    def may_include_under(self, rel_dir: str) -> bool:
        return any(k.startswith(rel_dir + "/") for k in self.keep)


@dataclass
class Env:
    root: Path
    ctx: Path
    img: Path
    staging: Path
    ignore: Ignore | None = None
    plans: list[Plan] = field(default_factory=list)

    def source(self) -> CopySource:
        return CopySource(Tree([str(self.ctx)], xattr_ns=None), self.ignore, is_context=True)

    def target(self) -> Tree:
        return Tree([str(self.img)], xattr_ns="trusted")

    def plan(self, srcs: list[str], dest: str, **kw: object) -> Plan:
        kw.setdefault("source", self.source())
        kw.setdefault("target", self.target())
        kw.setdefault("workdir", "/")
        p = plan(srcs, dest, where=WHERE, staging_dir=str(self.staging), **kw)  # type: ignore[arg-type]
        self.plans.append(p)
        return p

    def layer(self, p: Plan, mtime: int | None = None) -> Path:
        """The plan's tar, extracted by tophan's importer into a fresh dir."""
        data = tar_of(p, mtime)
        out = self.root / f"layer{len(list(self.root.glob('layer*')))}"
        out.mkdir()
        tarimport.extract(io.BytesIO(data), str(out), xattr_ns="trusted", privileged=True)
        return out


def tar_of(p: Plan, mtime: int | None = None) -> bytes:
    buf = io.BytesIO()
    p.write(buf, mtime=mtime)
    return buf.getvalue()


def members(p: Plan, mtime: int | None = None) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar_of(p, mtime))) as tf:
        return {m.name: m for m in tf.getmembers()}


def listing(root: Path) -> dict[str, str]:
    """rel path -> "kind mode uid:gid content-or-target" for a whole tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            what = ""
            if stat.S_ISREG(st.st_mode):
                what = p.read_bytes().decode(errors="replace")
            elif stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            kind = stat.filemode(st.st_mode)[0]
            out[str(p.relative_to(root))] = (
                f"{kind} {stat.S_IMODE(st.st_mode):o} {st.st_uid}:{st.st_gid} {what}".rstrip()
            )
    return out


def put(path: Path, data: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    os.chmod(path, mode)
    return path


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    ctx, img, staging = tmp_path / "ctx", tmp_path / "img", tmp_path / "staging"
    for p in (ctx, img, staging):
        p.mkdir()
    put(ctx / "a.txt", "A", 0o640)
    put(ctx / "b.txt", "B")
    put(ctx / "sub/c.txt", "C")
    put(ctx / "sub/deep/d.txt", "D", 0o4755)  # setuid kept
    os.symlink("c.txt", ctx / "sub/link")
    for p in (ctx / "a.txt", ctx / "sub/c.txt"):
        os.chown(p, 1234, 1234)  # the context's owners never reach the layer
    put(img / "etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    put(img / "etc/group", "root:x:0:\nstaff:x:50:\napp:x:1001:\n")
    (img / "usr/bin").mkdir(parents=True)
    os.symlink("usr/bin", img / "bin")
    (img / "opt").mkdir(mode=0o750)
    os.chmod(img / "opt", 0o750)
    os.chown(img / "opt", 5, 6)
    os.setxattr(img / "opt", "user.note", b"image's")
    os.utime(img / "opt", (1_600_000_000, 1_600_000_000))
    e = Env(tmp_path, ctx, img, staging)
    yield e
    for p in e.plans:
        p.close()


# -- COPY: where things go ----------------------------------------------------------------------


def test_file_to_file(env: Env) -> None:
    out = env.layer(env.plan(["a.txt"], "/b.txt"))
    assert listing(out) == {"b.txt": "- 640 0:0 A"}


def test_file_into_dir_with_trailing_slash(env: Env) -> None:
    out = env.layer(env.plan(["a.txt"], "/new/dir/"))
    assert listing(out) == {
        "new": "d 755 0:0",
        "new/dir": "d 755 0:0",
        "new/dir/a.txt": "- 640 0:0 A",
    }


def test_file_into_existing_dir_keeps_its_metadata(env: Env) -> None:
    p = env.plan(["a.txt"], "/opt")
    m = members(p)
    assert set(m) == {"opt", "opt/a.txt"}
    opt = m["opt"]
    assert (opt.mode, opt.uid, opt.gid, opt.mtime) == (0o750, 5, 6, 1_600_000_000)
    assert opt.pax_headers.get("SCHILY.xattr.user.note") == "image's"


def test_directory_source_copies_its_contents(env: Env) -> None:
    out = env.layer(env.plan(["sub"], "/app"))
    assert listing(out) == {
        "app": "d 755 0:0",
        "app/c.txt": "- 644 0:0 C",
        "app/deep": "d 755 0:0",
        "app/deep/d.txt": "- 4755 0:0 D",
        "app/link": "l 777 0:0 -> c.txt",  # symlinks inside a directory stay symlinks
    }


def test_dest_relative_to_workdir(env: Env) -> None:
    assert env.plan(["a.txt"], "rel", workdir="/work").paths == ["/work", "/work/rel"]
    assert env.plan(["a.txt"], ".", workdir="/work").paths == ["/work", "/work/a.txt"]
    assert env.plan(["a.txt"], "x/.", workdir="/w").paths == ["/w", "/w/x", "/w/x/a.txt"]


def test_dest_through_image_symlink_is_resolved_not_written_through(env: Env) -> None:
    p = env.plan(["a.txt"], "/bin/")
    assert p.paths == ["/usr", "/usr/bin", "/usr/bin/a.txt"]
    out = env.layer(p)
    assert not (out / "bin").exists() and (out / "usr/bin/a.txt").read_text() == "A"


def test_dest_symlink_pointing_out_of_the_image_stays_inside(env: Env) -> None:
    os.symlink("../../../../../../../../tmp", env.img / "escape")
    os.symlink("/etc", env.img / "abs")
    assert env.plan(["a.txt"], "/escape/x").paths == ["/tmp", "/tmp/x"]
    assert env.plan(["a.txt"], "/abs/").paths == ["/etc", "/etc/a.txt"]


def test_globs(env: Env) -> None:
    put(env.ctx / "ab.txt", "AB")
    put(env.ctx / "*.txt", "star")
    assert env.plan(["*.txt"], "/g/").paths == [
        "/g",
        "/g/*.txt",
        "/g/a.txt",
        "/g/ab.txt",
        "/g/b.txt",
    ]
    assert env.plan(["?.txt"], "/g/").paths == ["/g", "/g/*.txt", "/g/a.txt", "/g/b.txt"]
    assert env.plan(["[ab].txt"], "/g/").paths == ["/g", "/g/a.txt", "/g/b.txt"]
    assert env.plan(["[^a].txt"], "/g/").paths == ["/g", "/g/*.txt", "/g/b.txt"]
    assert env.plan(["\\*.tx?"], "/g/").paths == ["/g", "/g/*.txt"]  # an escaped star
    assert env.plan(["s*/c*"], "/g/").paths == ["/g", "/g/c.txt"]
    # a directory matched copies its contents
    assert env.plan(["su?"], "/g/").paths[:3] == ["/g", "/g/c.txt", "/g/deep"]


def test_glob_matching_nothing_names_pattern_and_place(env: Env) -> None:
    with pytest.raises(UsageError, match=r"^Containerfile:7: COPY nope\*: no source files"):
        env.plan(["nope*"], "/")
    with pytest.raises(UsageError, match="malformed glob"):
        env.plan(["[a"], "/")


def test_several_sources_need_a_directory(env: Env) -> None:
    with pytest.raises(UsageError, match="must be a directory"):
        env.plan(["a.txt", "b.txt"], "/x")
    with pytest.raises(UsageError, match="must be a directory"):
        env.plan(["*.txt"], "/x")
    assert env.plan(["a.txt", "b.txt"], "/x/").paths == ["/x", "/x/a.txt", "/x/b.txt"]
    assert env.plan(["a.txt", "b.txt"], "/opt").paths == ["/opt", "/opt/a.txt", "/opt/b.txt"]


def test_missing_source(env: Env) -> None:
    with pytest.raises(UsageError, match=r"^Containerfile:7: COPY nothing.txt: no such file"):
        env.plan(["nothing.txt"], "/")


def test_dotdot_is_clamped_at_the_context_root(env: Env) -> None:
    put(env.root / "outside.txt", "host file")
    with pytest.raises(UsageError, match="no such file"):
        env.plan(["../outside.txt"], "/")
    out = env.layer(env.plan(["../../../a.txt"], "/"))
    assert listing(out) == {"a.txt": "- 640 0:0 A"}


def test_symlink_source_is_followed_and_named_as_written(env: Env) -> None:
    os.symlink("sub/c.txt", env.ctx / "alias")
    assert listing(env.layer(env.plan(["alias"], "/d/"))) == {
        "d": "d 755 0:0",
        "d/alias": "- 644 0:0 C",
    }


def test_dir_over_image_symlink_is_refused_as_buildkit(env: Env) -> None:
    put(env.ctx / "root/bin/tool", "T")
    with pytest.raises(UsageError, match="directory over non-directory /bin"):
        env.plan(["root"], "/")


def test_file_replaces_an_image_symlink_never_writes_through_it(env: Env) -> None:
    os.symlink("/etc/passwd", env.img / "opt2")
    m = members(env.plan(["a.txt"], "/", chown=None))
    assert "a.txt" in m
    p = env.plan(["a.txt"], "/opt2")  # dest followed (RootPath): /etc/passwd replaced
    assert p.paths == ["/etc", "/etc/passwd"]


def test_from_scratch(env: Env) -> None:
    p = env.plan(["a.txt"], "/x/y/", target=Tree([], xattr_ns="trusted"))
    assert listing(env.layer(p)) == {
        "x": "d 755 0:0",
        "x/y": "d 755 0:0",
        "x/y/a.txt": "- 640 0:0 A",
    }


def test_hard_links_stay_hard_links(env: Env) -> None:
    os.link(env.ctx / "b.txt", env.ctx / "sub/b-again")
    p = env.plan(["."], "/h/")
    m = members(p)
    assert m["h/sub/b-again"].islnk() and m["h/sub/b-again"].linkname == "h/b.txt"
    out = env.layer(p)
    assert os.stat(out / "h/b.txt").st_ino == os.stat(out / "h/sub/b-again").st_ino


def test_large_files_stream_in_chunks(env: Env) -> None:
    data = os.urandom((3 << 20) + 17)
    (env.ctx / "blob").write_bytes(data)
    out = env.layer(env.plan(["blob"], "/b"))
    assert (out / "b").read_bytes() == data


def test_long_names_go_through_pax(env: Env) -> None:
    long = "n" * 120 + "/" + "m" * 150
    put(env.ctx / long, "long")
    out = env.layer(env.plan([long.split("/")[0]], "/deep/"))
    assert (out / "deep" / ("m" * 150)).read_text() == "long"


# -- metadata -----------------------------------------------------------------------------------


def test_chown_by_name_from_the_images_passwd(env: Env) -> None:
    out = env.layer(env.plan(["a.txt", "sub"], "/o/", chown="app"))
    got = listing(out)
    assert got["o/a.txt"] == "- 640 1000:1001 A"
    assert got["o/deep"] == "d 755 1000:1001"
    assert got["o"] == "d 755 1000:1001"  # created parents take the owner too (BuildKit)


def test_chown_forms(env: Env) -> None:
    def owner(spec: str) -> tuple[int, int]:
        m = members(env.plan(["a.txt"], "/f", chown=spec))["f"]
        return m.uid, m.gid

    assert owner("7") == (7, 7)
    assert owner("7:8") == (7, 8)
    assert owner("app:staff") == (1000, 50)
    assert owner("7:staff") == (7, 50)
    assert owner("app:9") == (1000, 9)
    with pytest.raises(UsageError, match="no 'nobody' in the image's /etc/passwd"):
        owner("nobody")
    with pytest.raises(UsageError, match="no 'wheel' in the image's /etc/group"):
        owner("0:wheel")
    with pytest.raises(UsageError, match="expected user"):
        owner("a:b:c")


def test_chown_without_passwd_in_the_image(env: Env) -> None:
    with pytest.raises(UsageError, match="has no /etc/passwd"):
        env.plan(["a.txt"], "/", chown="app", target=Tree([], xattr_ns="trusted"))
    assert (
        members(env.plan(["a.txt"], "/f", chown="5", target=Tree([], xattr_ns="user")))["f"].uid
        == 5
    )


def test_chown_passwd_symlinked_to_the_hosts(env: Env) -> None:
    """A hostile image whose /etc/passwd points at the host's: the name must be looked up in
    the image (here: a symlink loop) or nowhere, never on the host."""
    os.unlink(env.img / "etc/passwd")
    os.symlink("/etc/passwd", env.img / "etc/passwd")
    with pytest.raises(TophanError, match="symbolic links"):
        env.plan(["a.txt"], "/", chown="root")
    os.unlink(env.img / "etc/passwd")
    os.symlink("/../../host/etc/passwd", env.img / "etc/passwd")
    with pytest.raises(UsageError, match="has no /etc/passwd"):
        env.plan(["a.txt"], "/", chown="root")


def test_chmod(env: Env) -> None:
    got = listing(env.layer(env.plan(["sub"], "/m", chmod="0700")))
    assert got["m/c.txt"] == "- 700 0:0 C"
    assert got["m/deep"] == "d 700 0:0"
    assert got["m"] == "d 755 0:0"  # created 0755 as Docker (fsutil) and buildah make it
    assert got["m/link"] == "l 777 0:0 -> c.txt"
    with pytest.raises(UsageError, match=r"--chmod=u\+x: not an octal mode"):
        env.plan(["a.txt"], "/", chmod="u+x")
    with pytest.raises(UsageError, match="not an octal mode"):
        env.plan(["a.txt"], "/", chmod="17777")


def test_context_xattrs_kept_and_dropped(env: Env) -> None:
    p = env.ctx / "a.txt"
    os.setxattr(p, "user.keep", b"1")
    os.setxattr(p, "user.tophan.owner", b"0:0")
    os.setxattr(p, "trusted.overlay.opaque", b"y")
    os.setxattr(p, "trusted.hidden", b"x")
    xattrs = {
        k: v for k, v in members(env.plan(["a.txt"], "/f"))["f"].pax_headers.items() if "xattr" in k
    }
    assert xattrs == {"SCHILY.xattr.user.keep": "1"}


def test_copy_from_another_root_keeps_owners(env: Env, tmp_path: Path) -> None:
    lower, upper = tmp_path / "stage-low", tmp_path / "stage-up"
    put(lower / "app/bin/tool", "v1", 0o755)
    put(lower / "app/cfg", "cfg")
    os.chown(lower / "app/cfg", 33, 33)
    put(upper / "app/bin/tool", "v2", 0o755)
    os.setxattr(upper / "app/bin/tool", "user.tophan.owner", b"70:71")
    os.mknod(upper / "app/cfg", stat.S_IFCHR | 0o600, 0)  # whited out in the stage
    stage = CopySource(Tree([str(upper), str(lower)], xattr_ns="trusted"), None, is_context=False)
    got = listing(env.layer(env.plan(["/app"], "/srv", source=stage)))
    assert got == {"srv": "d 755 0:0", "srv/bin": "d 755 0:0", "srv/bin/tool": "- 755 70:71 v2"}


# -- hostile contexts -----------------------------------------------------------------------------


def test_context_symlink_to_shadow_is_copied_as_a_link(env: Env) -> None:
    os.symlink("/etc/shadow", env.ctx / "sub/shadow")
    m = members(env.plan(["sub"], "/s"))
    assert m["s/shadow"].issym() and m["s/shadow"].linkname == "/etc/shadow"
    assert all(not x.isfile() or x.size <= 2 for x in m.values())  # only the tiny test files
    # as a source, the link is followed inside the context, where there is no /etc/shadow
    with pytest.raises(UsageError, match="sub/shadow is a symlink to nothing in the build"):
        env.plan(["sub/shadow"], "/")


def test_source_symlink_out_of_the_context_resolves_inside(env: Env) -> None:
    put(env.ctx / "etc/hostname", "the context's")
    os.symlink("../../../../../../etc/hostname", env.ctx / "out")
    out = env.layer(env.plan(["out"], "/h"))
    assert listing(out) == {"h": "- 644 0:0 the context's"}


def test_fifo_and_device_in_the_context_are_refused(env: Env) -> None:
    os.mkfifo(env.ctx / "sub/pipe")
    with pytest.raises(UsageError, match=r"/sub/pipe: a FIFO in the build context"):
        env.plan(["."], "/")
    os.unlink(env.ctx / "sub/pipe")
    os.mknod(env.ctx / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(UsageError, match="/null: a character device"):
        env.plan(["null"], "/")


def test_whiteout_names_are_refused(env: Env) -> None:
    put(env.ctx / "sub/.wh.c.txt", "not a whiteout")
    with pytest.raises(UsageError, match=r"\.wh\. mean whiteouts"):
        env.plan(["sub"], "/")


def test_ignored_files_are_never_copied_nor_matched(env: Env) -> None:
    put(env.ctx / "secret.txt", "s")
    put(env.ctx / "build/keep/k", "k")
    put(env.ctx / "build/drop", "x")
    env.ignore = Ignore("secret.txt", "sub/deep", "build", keep=("build/keep",))
    p = env.plan(["."], "/app/")
    assert p.paths == [
        "/app",
        "/app/a.txt",
        "/app/b.txt",
        "/app/build",
        "/app/build/keep",
        "/app/build/keep/k",
        "/app/sub",
        "/app/sub/c.txt",
        "/app/sub/link",
    ]
    assert env.plan(["*.txt"], "/g/").paths == ["/g", "/g/a.txt", "/g/b.txt"]
    with pytest.raises(UsageError, match=r"check \.containerignore"):
        env.plan(["secret.txt"], "/")
    with pytest.raises(UsageError, match="no such file"):
        env.plan(["sub/deep/d.txt"], "/")
    os.symlink("secret.txt", env.ctx / "via-link")
    with pytest.raises(UsageError, match="no such file"):
        env.plan(["via-link"], "/")


# -- the digest and the written tar -------------------------------------------------------------


def test_digest_is_stable_and_content_keyed(env: Env) -> None:
    first = env.plan(["sub", "a.txt"], "/d/").digest
    assert env.plan(["sub", "a.txt"], "/d/").digest == first
    os.utime(env.ctx / "a.txt", (1, 1))  # only an mtime: same cache key (Docker's checksum)
    assert env.plan(["sub", "a.txt"], "/d/").digest == first
    assert env.plan(["sub", "a.txt"], "/d/", chown="7").digest != first
    assert env.plan(["sub", "a.txt"], "/d/", chmod="0600").digest != first
    assert env.plan(["sub", "a.txt"], "/e/").digest != first
    (env.ctx / "a.txt").write_text("changed")
    assert env.plan(["sub", "a.txt"], "/d/").digest != first


def test_write_with_fixed_mtime(env: Env) -> None:
    m = members(env.plan(["sub"], "/opt/x"), mtime=1234)
    assert m and all(x.mtime == 1234 for x in m.values())
    natural = members(env.plan(["a.txt"], "/y"))
    assert abs(natural["y"].mtime - os.stat(env.ctx / "a.txt").st_mtime) < 1e-6


def test_write_refuses_a_file_changed_since_the_plan(env: Env) -> None:
    p = env.plan(["a.txt"], "/f")
    (env.ctx / "a.txt").write_text("B")  # same size, other content
    with pytest.raises(TophanError, match="changed after the build read it"):
        tar_of(p)


# -- ADD: archives -----------------------------------------------------------------------------


def archive(members_: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    return tar_bytes(members_)


def test_add_extracts_tar_gz_and_tar_zst(env: Env) -> None:
    data = archive([d("pkg"), f("pkg/run", b"#!/bin/sh\n", mode=0o755, uid=33, gid=34)])
    (env.ctx / "pkg.tar.gz").write_bytes(gzip.compress(data))
    (env.ctx / "pkg.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    for name in ("pkg.tar.gz", "pkg.zst"):
        got = listing(env.layer(env.plan([name], "/srv", add=True)))
        assert got == {
            "srv": "d 755 0:0",
            "srv/pkg": "d 755 0:0",
            "srv/pkg/run": "- 755 33:34 #!/bin/sh",  # the archive's owner and mode
        }
    got = listing(env.layer(env.plan(["pkg.zst"], "/srv", add=True, chown="app")))
    assert got["srv/pkg/run"] == "- 755 1000:1001 #!/bin/sh"
    # COPY never extracts
    assert env.plan(["pkg.tar.gz"], "/srv/").paths == ["/srv", "/srv/pkg.tar.gz"]


def test_add_copies_a_compressed_non_archive_as_is(env: Env) -> None:
    (env.ctx / "notes.gz").write_bytes(gzip.compress(b"just text" * 100))
    assert env.plan(["notes.gz"], "/d/", add=True).paths == ["/d", "/d/notes.gz"]


def test_add_archive_with_dotdot_members_is_refused(env: Env) -> None:
    data = archive([f("ok", b"fine"), f("../../escaped", b"evil")])
    (env.ctx / "evil.tar").write_bytes(data)
    with pytest.raises(TophanError, match="escapes the layer"):
        env.plan(["evil.tar"], "/x", add=True)
    assert not list(env.root.rglob("escaped"))
    assert not os.listdir(env.staging)  # the failed plan left nothing staged


def test_add_archive_absolute_names_and_image_symlinks(env: Env) -> None:
    data = archive([d("/bin"), f("/bin/sh", b"sh", mode=0o755), sym("lib", "/usr/lib")])
    (env.ctx / "root.tar").write_bytes(data)
    p = env.plan(["root.tar"], "/", add=True)
    # bin/ follows the image's /bin -> usr/bin (BuildKit's unpack); nothing lands in /bin
    assert p.paths == ["/lib", "/usr", "/usr/bin", "/usr/bin/sh"]
    assert listing(env.layer(p))["usr/bin/sh"] == "- 755 0:0 sh"


def test_add_archive_links_below_own_symlink_refused(env: Env) -> None:
    data = archive([sym("etc", "/etc"), f("etc/passwd", b"owned")])
    (env.ctx / "sneaky.tar").write_bytes(data)
    with pytest.raises(TophanError, match="lies below symlink"):
        env.plan(["sneaky.tar"], "/x", add=True)


def test_add_archive_whiteouts_refused(env: Env) -> None:
    (env.ctx / "wh.tar").write_bytes(archive([f("a"), f(".wh.b")]))
    with pytest.raises(UsageError, match="holds a whiteout for b"):
        env.plan(["wh.tar"], "/x", add=True)
    (env.ctx / "opq.tar").write_bytes(archive([d("dir"), f("dir/.wh..wh..opq")]))
    with pytest.raises(UsageError, match="marks dir/ opaque"):
        env.plan(["opq.tar"], "/x", add=True)


def test_add_archive_hard_links_and_digest_sees_member_mtimes(env: Env) -> None:
    one = archive([f("x", b"same"), hard("y", "x")])
    (env.ctx / "h.tar").write_bytes(one)
    p = env.plan(["h.tar"], "/h", add=True)
    assert members(p)["h/y"].islnk()
    (env.ctx / "h.tar").write_bytes(archive([f("x", b"same", mtime=5), hard("y", "x")]))
    assert env.plan(["h.tar"], "/h", add=True).digest != p.digest


def test_add_archive_merges_and_keeps_implied_parents_as_they_are(env: Env) -> None:
    (env.img / "tmp").mkdir(mode=0o1777)
    os.chmod(env.img / "tmp", 0o1777)
    # tmp/ has no entry of its own: the image's 1777 /tmp stays; etc/ has one: it applies
    data = archive([f("tmp/scratch", b"s"), d("etc", mode=0o700), f("etc/app.conf", b"c")])
    (env.ctx / "m.tar").write_bytes(data)
    m = members(env.plan(["m.tar"], "/", add=True))
    assert (m["tmp"].mode, m["etc"].mode) == (0o1777, 0o700)
    assert set(m) == {"tmp", "tmp/scratch", "etc", "etc/app.conf"}


def test_add_archive_bomb_is_capped(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from tophan.build import copy

    monkeypatch.setattr(copy, "MAX_ARCHIVE_BYTES", 1 << 20)  # the limit, made testable
    (env.ctx / "bomb.tgz").write_bytes(gzip.compress(archive([f("zeros", bytes(4 << 20))])))
    with pytest.raises(TophanError, match="decompresses to more than 1 MiB"):
        env.plan(["bomb.tgz"], "/", add=True)
    assert not os.listdir(env.staging)


def test_symlink_loops_are_errors_not_hangs(env: Env) -> None:
    os.symlink("loop", env.ctx / "loop")
    with pytest.raises(TophanError, match="too many levels of symbolic links"):
        env.plan(["loop"], "/")
    os.symlink("/spin/x", env.img / "spin")
    with pytest.raises(TophanError, match="too many levels of symbolic links"):
        env.plan(["a.txt"], "/spin/")


ROOTLESS_ADD = """
import io, json, os, tarfile
from tophan.build.copy import CopySource, plan
from tophan.build.tree import Tree
os.mkdir("stage")
p = plan(["pkg.tar"], "/srv", source=CopySource.context("ctx"), target=Tree([], xattr_ns="user"),
         workdir="/", add=True, staging_dir="stage")
buf = io.BytesIO()
p.write(buf, mtime=None)
p.close()
with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
    out = {m.name: [m.uid, m.gid, m.mode] for m in tf}
try:
    plan(["dev.tar"], "/", source=CopySource.context("ctx"), target=Tree([], xattr_ns="user"),
         workdir="/", add=True, staging_dir="stage")
    out["dev"] = "extracted"
except Exception as e:
    out["dev"] = str(e)
out["staged"] = os.listdir("stage")
print(json.dumps(out))
"""


@pytest.mark.rootless
def test_add_archive_unprivileged(rootless_user: RootlessUser, rootless_dir: Path) -> None:
    """Rootless: members' owners survive extraction (in user.tophan.owner) into the tar;
    device members are refused; nothing stays staged."""
    ctx = rootless_dir / "ctx"
    ctx.mkdir()
    (ctx / "pkg.tar").write_bytes(
        archive([d("pkg", uid=7, gid=8), f("pkg/run", b"x", uid=33, gid=34)])
    )
    dev = ti_dev("null")
    (ctx / "dev.tar").write_bytes(archive([(dev, None)]))
    os.chown(ctx, rootless_user.uid, rootless_user.gid)
    for p in ctx.iterdir():
        os.chown(p, rootless_user.uid, rootless_user.gid)
    r = python_as_user(rootless_user, ROOTLESS_ADD, unshare=False, cwd=rootless_dir)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["srv/pkg/run"] == [33, 34, 0o644]
    assert got["srv/pkg"] == [7, 8, 0o755]
    assert "device node 'null' needs root" in got["dev"]
    assert got["staged"] == []


def ti_dev(name: str) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type = tarfile.CHRTYPE
    t.devmajor, t.devminor = 1, 3
    return t


def test_plan_close_removes_what_it_staged(env: Env) -> None:
    (env.ctx / "a.tar").write_bytes(archive([f("x", b"1")]))
    p = env.plan(["a.tar"], "/", add=True)
    assert os.listdir(env.staging)
    with p:
        tar_of(p)
    assert not os.listdir(env.staging)


# -- ADD: URLs ---------------------------------------------------------------------------------

BODY = b"#!/bin/sh\necho downloaded\n"
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"  # 1445412480


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path
        if path == "/files/tool.sh":
            self.reply(200, BODY, {"Last-Modified": LAST_MODIFIED})
        elif path == "/":
            self.reply(200, b"index", {})
        elif path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[1])
            self.reply(302, b"", {"Location": f"/hop/{n - 1}" if n > 1 else "/files/tool.sh"})
        elif path == "/to-ftp":
            self.reply(302, b"", {"Location": "ftp://127.0.0.1/x"})
        elif path == "/to-file":
            self.reply(302, b"", {"Location": "file:///etc/passwd"})
        elif path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(2 << 30))
            self.end_headers()
        else:
            self.reply(404, b"no", {})

    def reply(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_add_url_with_checksum(env: Env, server: str) -> None:
    good = "sha256:" + hashlib.sha256(BODY).hexdigest()
    p = env.plan([f"{server}/files/tool.sh"], "/usr/local/bin/", add=True, checksum=good)
    m = members(p)["usr/local/bin/tool.sh"]
    assert (m.mode, m.uid, m.gid, m.mtime) == (0o600, 0, 0, 1445412480)
    assert listing(env.layer(p))["usr/local/bin/tool.sh"].endswith("echo downloaded")
    p2 = env.plan([f"{server}/files/tool.sh"], "/t", add=True, chmod="0755")
    assert members(p2)["t"].mode == 0o755
    bad = "sha256:" + "0" * 64
    with pytest.raises(IntegrityError, match=f"expected {bad}, got {good}"):
        env.plan([f"{server}/files/tool.sh"], "/t", add=True, checksum=bad)


def test_add_url_names(env: Env, server: str) -> None:
    assert env.plan([f"{server}/"], "/d/", add=True).paths == ["/d", "/d/__unnamed__"]
    assert env.plan([f"{server}/files/tool.sh"], "/opt", add=True).paths == [
        "/opt",
        "/opt/tool.sh",
    ]


def test_add_url_redirects(env: Env, server: str) -> None:
    assert env.plan([f"{server}/hop/3"], "/t", add=True).paths == ["/t"]
    with pytest.raises(TophanError, match="more than 5 redirects"):
        env.plan([f"{server}/hop/9"], "/t", add=True)
    with pytest.raises(TophanError, match="redirected to a ftp:// URL"):
        env.plan([f"{server}/to-ftp"], "/t", add=True)
    with pytest.raises(TophanError, match="redirected to a file:// URL"):
        env.plan([f"{server}/to-file"], "/t", add=True)


def test_add_url_failures(env: Env, server: str) -> None:
    with pytest.raises(TophanError, match="answered 404"):
        env.plan([f"{server}/missing"], "/t", add=True)
    with pytest.raises(TophanError, match="larger than 1 GiB"):
        env.plan([f"{server}/huge"], "/t", add=True)
    assert not os.listdir(env.staging)


def test_url_rules(env: Env, server: str) -> None:
    with pytest.raises(UsageError, match="only http:// and https://"):
        env.plan(["file:///etc/passwd"], "/t", add=True)
    with pytest.raises(UsageError, match="COPY does not fetch URLs"):
        env.plan([f"{server}/files/tool.sh"], "/t")
    with pytest.raises(UsageError, match="--checksum needs exactly one http"):
        env.plan(["a.txt"], "/t", add=True, checksum="sha256:" + "0" * 64)
    with pytest.raises(UsageError, match="--checksum is for ADD"):
        env.plan(["a.txt"], "/t", checksum="sha256:" + "0" * 64)
    with pytest.raises(UsageError, match="expected sha256:<64 hex digits>"):
        env.plan([f"{server}/x"], "/t", add=True, checksum="md5:abc")
    with pytest.raises(UsageError, match="only http") as e:
        env.plan(["ftp://user:pass@host/x"], "/t", add=True)
    assert "pass" not in str(e.value)


def test_url_credentials_stay_out_of_messages(env: Env, server: str) -> None:
    url = server.replace("http://", "http://user:hunter2@") + "/missing"
    with pytest.raises(TophanError) as e:
        env.plan([url], "/t", add=True)
    assert "hunter2" not in str(e.value)
