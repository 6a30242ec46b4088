"""Peer: the same Containerfile built by buildah (`bud --isolation chroot --layers`) and by
`tophan build` gives the same root tree (issue 11's acceptance).

Both builds start from the same base image (a busybox rootfs made into an image by tophan and
handed to buildah as an OCI layout), and both results are exported as OCI layouts and unpacked by
umoci, a third tool, so neither side's own unpacking is trusted. The trees are compared path by
path: type, mode (setuid/setgid/sticky included), owner, contents, link target, xattrs, hard
links, and the mtimes of what came from the context, the archive or the base. Where buildah and
Docker differ, the test expects Docker's behaviour (the issue's rule) and says which rule.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from build_trees import (
    Buildah,
    Entry,
    Rules,
    compare,
    image_config,
    mounts_under,
    unpack,
    walk,
    without_heredocs,
)
from conftest import busybox_rootfs, run_cli

pytestmark = [
    pytest.mark.slow,  # two builds of ~20 steps, buildah on vfs copies the rootfs per step
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah and umoci's owners need root"),
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah not installed"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed"),
]

# The base's files, the context's and the archive's members get these mtimes (2001), far from
# any build's clock: a builder that resets a kept file's mtime shows up, and mtimes at or before
# KEPT_MTIMES are compared (later ones were made by the build, at different moments).
BASE_MTIME = 999_999_000
CONTEXT_MTIME = 1_000_000_000
KEPT_MTIMES = CONTEXT_MTIME

CONTAINERFILE = """\
ARG BASE=busybox
FROM ${BASE} AS builder
ARG GREETING=hello
RUN mkdir -p /out/sub && echo "$GREETING from builder" > /out/greeting.txt \\
    && echo deep > /out/sub/deep.txt && ln -s greeting.txt /out/link && chmod 0750 /out/sub

FROM ${BASE}
ARG VERSION=1.2.3
ENV APP_HOME=/opt/app \\
    RELEASE=v${VERSION}
ENV SUB=${APP_HOME:+set}-${NOPE:-unset}
# The Dockerfile reference's own example: an ENV's substitutions see the values from before it.
ENV abc=hello
ENV abc=bye def=$abc
WORKDIR ${APP_HOME}/deep/nested
RUN echo "$RELEASE $SUB $abc $def" > release.txt && pwd > where.txt
RUN ["/bin/sh", "-c", "echo exec-form $RELEASE > /exec.txt"]
RUN ["/bin/busybox", "mkdir", "-p", "/exec-dir/a"]
RUN <<EOF
echo first > /heredoc.txt
echo "second $VERSION" >> /heredoc.txt
EOF
RUN echo 'worker:x:1001:1000::/home/worker:/bin/sh' >> /etc/passwd
COPY files/plain.txt /plain/
COPY --chown=user:user files/ /byname/
COPY --chown=1000:1000 files/plain.txt /bynumber/x/y/plain.txt
COPY --chown=worker files/other.txt /worker-owned.txt
COPY --chown=1001 files/other.txt /uid-only.txt
COPY --chmod=0640 files/plain.txt /chmod/plain.txt
COPY --chmod=755 --chown=1000 files/script.sh /usr/local/bin/
COPY files/*.txt ${DEST:-/globbed}/
COPY files/sub relative-sub/
COPY --from=builder /out /from-builder
COPY --from=builder /out/greeting.txt /from-builder-file.txt
ADD archive.tar.gz /added/
ADD --chown=1000:1000 archive.tar.gz /added-chown/
ADD files/plain.txt /added-plain.txt
COPY files/link /top-level-link
COPY --chmod=0700 files/sub /chmod-dir/
COPY --chmod=0700 files/sub /var/www/
RUN ln -s /plain /linkdir
COPY files/other.txt /linkdir/
RUN rm /bin/wget && rm -r /home/user && rm -rf /usr/share/doc \\
    && mkdir -p /usr/share/doc/new && echo new > /usr/share/doc/new/README
RUN cp /bin/busybox /bin/suid-busybox && chmod 4755 /bin/suid-busybox \\
    && mkdir -m 2775 /shared && chmod +t /shared \\
    && echo hl > /hl-a && ln /hl-a /hl-b \\
    && ln -s /plain/plain.txt /abs-link && ln -s nowhere /dangling \\
    && chown 123:456 /exec.txt && mkfifo /fifo
USER user
RUN touch /tmp/as-user
COPY files/other.txt /as-user-copy.txt
WORKDIR /home/worker
USER root
CMD ["sh"]
"""

RULES = Rules(
    # The runtime's bind mounts, never part of an image (the issue's own exception).
    ignore=frozenset({"etc/hosts", "etc/hostname", "etc/resolv.conf"}),
    # Mount points the RUN container needed and the base lacks. buildah commits them as empty
    # directories; Docker does not (the classic builder keeps them in the container's init
    # layer, which is never committed; BuildKit removes the mount stubs it created after each
    # RUN). Either is accepted, as long as they are empty.
    optional_empty_dirs=frozenset({"dev", "proc", "sys", "run"}),
    added={
        # Docker creates a WORKDIR that does not exist even when no later instruction uses it
        # (Dockerfile reference, WORKDIR), and BuildKit, its builder since Docker 23, makes it
        # owned by the stage's USER (dockerfile2llb dispatchWorkdir: llb.Mkdir(wd, 0755,
        # llb.WithUser(USER))). buildah 1.28 makes it only when a RUN needs it.
        "home/worker": Entry(kind="dir", mode=0o755, uid=1000, gid=1000, empty=True),
    },
    below={
        # Docker (BuildKit) applies ADD --chown to the members of an extracted archive too
        # (solver/llbsolver/file unpack: ownerMapper, "explicit --chown values override the
        # header ownership"); buildah 1.28 keeps the archive's owners, as Docker's classic
        # builder did.
        "added-chown": {"uid": 1000, "gid": 1000},
    },
    mtime_before=KEPT_MTIMES + 1,
)


def make_context(ctx: Path) -> None:
    files = ctx / "files"
    (files / "sub/deeper").mkdir(parents=True)
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    (ctx / ".containerignore").write_text("files/ignored.txt\n")
    (files / "plain.txt").write_text("plain\n")
    (files / "other.txt").write_text("other\n")
    (files / "ignored.txt").write_text("must not be copied\n")
    (files / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (files / "sub/f").write_text("sub file\n")
    (files / "sub/f").chmod(0o600)
    (files / "sub/deeper/g").write_text("deeper\n")
    (files / "link").symlink_to("plain.txt")
    (files / "empty").mkdir()
    (files / "zero.txt").write_bytes(b"")
    (files / "hl1").write_text("hard-linked in the context\n")
    os.link(files / "hl1", files / "hl2")
    (files / "with space.txt").write_text("space\n")
    (files / "ünï.txt").write_text("unicode\n")
    long = files / "long" / ("d" * 120) / ("f" * 150)
    long.parent.mkdir(parents=True)
    long.write_text("long name\n")
    os.setxattr(files / "plain.txt", "user.peer", b"from the context")
    (ctx / "archive.tar.gz").write_bytes(archive())
    for p in [ctx, *ctx.rglob("*")]:
        os.utime(p, (CONTEXT_MTIME, CONTEXT_MTIME), follow_symlinks=False)


def archive() -> bytes:
    """A .tar.gz for ADD: owners and modes of its own, a hard link, a symlink, an xattr."""

    def member(name: str, kind: bytes, mode: int, data: bytes = b"", **kw: object) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = kind, mode, CONTEXT_MTIME
        ti.uid, ti.gid = 1234, 5678
        ti.size = len(data)
        for k, v in kw.items():
            setattr(ti, k, v)
        tf.addfile(ti, io.BytesIO(data) if data else None)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        member("d", tarfile.DIRTYPE, 0o700)
        member("d/a", tarfile.REGTYPE, 0o644, b"archived\n")
        member("d/h", tarfile.LNKTYPE, 0o644, linkname="d/a")
        member("d/s", tarfile.SYMTYPE, 0o777, linkname="a")
        member("d/suid", tarfile.REGTYPE, 0o4755, b"#!/bin/sh\n", uid=0, gid=0)
        member("d/x", tarfile.REGTYPE, 0o640, b"x\n", pax_headers={"SCHILY.xattr.user.o": "tar"})
        member("d/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3, uid=0, gid=0)
        member("d/big-ids", tarfile.REGTYPE, 0o600, b"ids\n", uid=70000, gid=70001)
        member("d/" + "n" * 130, tarfile.REGTYPE, 0o644, b"long\n")
    return buf.getvalue()


@dataclass
class Trees:
    buildah: dict[str, Entry]
    tophan: dict[str, Entry]
    buildah_config: dict  # type: ignore[type-arg]
    tophan_config: dict  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trees]:
    top = tmp_path_factory.mktemp("peer")
    try:
        yield build_both(top)
    finally:
        # Module-scoped, so conftest's per-test mount check does not cover it: a build that
        # failed half-way must not leave anything mounted either.
        left = mounts_under(top)
        for mp in reversed(left):
            subprocess.run(["umount", "-l", mp], check=False)
        shutil.rmtree(top, ignore_errors=True)
    assert not left, f"mounts left behind: {left}"


def build_both(top: Path) -> Trees:
    store = top / "store"

    def tophan(*args: str) -> str:
        r = run_cli(*args, root=store)
        assert r.rc == 0, f"tophan {' '.join(args)}: rc {r.rc}\n{r.out}\n{r.err}"
        return r.out

    tophan("init", str(store))
    base = busybox_rootfs(top / "base-rootfs")
    for p in [base, *base.rglob("*")]:
        os.utime(p, (BASE_MTIME, BASE_MTIME), follow_symlinks=False)
    tophan("layer", "create", "bb", "--from", str(base))
    tophan("image", "create", "busybox", "-l", "bb", "--cmd", '["sh"]')
    base_layout = top / "base-oci"
    tophan("image", "export", "busybox", str(base_layout), "--format", "oci")

    ctx = top / "context"
    ctx.mkdir()
    make_context(ctx)
    # buildah 1.28 (Debian 12) predates RUN heredocs (buildah 1.33 has them): its copy of the
    # Containerfile has the heredoc's script on one line, which the shell runs the same way.
    # It lives outside the context so that both builds see the same context.
    buildah_file = top / "Containerfile.buildah"
    buildah_file.write_text(without_heredocs(CONTAINERFILE))

    buildah = Buildah(top / "buildah")
    try:
        buildah.load_layout(base_layout, "busybox:latest", "busybox")
        buildah.bud(ctx, "peer", buildah_file)
        buildah.push_layout("peer", top / "buildah-oci", "peer")
    finally:
        buildah.cleanup()

    tophan("build", "-t", "peer", str(ctx))
    tophan("image", "export", "peer", str(top / "tophan-oci"), "--format", "oci")

    return Trees(
        buildah=walk(unpack(top / "buildah-oci", top / "buildah-tree")),
        tophan=walk(unpack(top / "tophan-oci", top / "tophan-tree")),
        buildah_config=image_config(top / "buildah-oci")["config"],
        tophan_config=image_config(top / "tophan-oci")["config"],
    )


def test_reference_tree_exercises_the_containerfile(trees: Trees) -> None:
    """buildah's tree has what the Containerfile asks for, so an equal tophan tree means the
    features were exercised (two builders that both skipped a step would compare equal)."""
    t = trees.buildah
    assert t["heredoc.txt"].size == len("first\nsecond 1.2.3\n")
    assert t["opt/app/deep/nested/release.txt"].size == len("v1.2.3 set-unset bye hello\n")
    for gone in ("bin/wget", "home/user", "usr/share/doc/base", "byname/ignored.txt"):
        assert gone not in t, gone
    assert t["bin/suid-busybox"].mode == 0o4755
    assert t["shared"].mode == 0o3775
    assert (t["byname/plain.txt"].uid, t["bynumber/x/y/plain.txt"].gid) == (1000, 1000)
    assert (t["worker-owned.txt"].uid, t["worker-owned.txt"].gid) == (1001, 1000)
    assert t["chmod/plain.txt"].mode == 0o640
    assert t["added/d/h"].links == ("added/d/a",)
    assert t["added/d/x"].xattrs == (("user.o", b"tar"),)
    assert t["plain/plain.txt"].xattrs == (("user.peer", b"from the context"),)
    assert t["from-builder/link"].data == "greeting.txt"
    assert t["fifo"].kind == "fifo"
    assert t["opt/app/deep/nested/relative-sub/deeper/g"].kind == "file"
    # A top-level source symlink is followed; a destination through an image symlink lands
    # where the symlink points, inside the image.
    assert t["top-level-link"].kind == "file" and t["linkdir"].kind == "symlink"
    assert t["plain/other.txt"].kind == "file"
    assert t["added-chown/d/a"].uid == 1234  # buildah keeps the archive's owners (see RULES)
    assert t["chmod-dir/f"].mode == 0o700
    assert (t["added/d/null"].kind, t["added/d/null"].data) == ("char", "1:3")
    assert t["byname/zero.txt"].size == 0
    assert t["byname/hl1"].links == ("byname/hl2",)  # a hard link within one COPY is kept


def test_same_root_tree(trees: Trees) -> None:
    diffs = compare(trees.buildah, trees.tophan, RULES, ("buildah", "tophan"))
    assert not diffs, "root trees differ:\n" + "\n".join(diffs)


def test_same_run_config(trees: Trees) -> None:
    """What the image runs with: environment, command, working directory, user."""
    keys = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User")
    b = {k: trees.buildah_config.get(k) for k in keys}
    t = {k: trees.tophan_config.get(k) for k in keys}
    assert t == b, json.dumps({"buildah": b, "tophan": t}, indent=1)
