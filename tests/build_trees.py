"""Helpers for comparing `tophan build` with buildah: a private buildah, OCI image -> root tree
(through umoci, a third tool neither builder wrote), and a walker that lists every difference
between two root trees with its path.

Used by tests/test_build_peer.py and bench/build.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

# buildah 1.28 (Debian 12) writes its blob-info cache to /var/lib/containers/cache whatever
# --root says, and unpacks oci-archives and build scratch files into /var/tmp whatever TMPDIR
# says. Each buildah command therefore runs in a private mount namespace where those two places
# are this buildah's own directories: nothing of the host's is written, and the namespace (with
# its mounts) ends with the command. /var/lib/containers may not exist on a fresh machine; there
# /var/lib as a whole is covered (buildah reads nothing of the host's there: its store is --root).
_PRIVATE_DIRS = r"""set -e
mount --bind "$PEER_SCRATCH/var-tmp" /var/tmp
if [ -d /var/lib/containers ]; then
    mount --bind "$PEER_SCRATCH/var-lib-containers" /var/lib/containers
else
    mount -t tmpfs peer-var-lib /var/lib
fi
exec buildah "$@"
"""


class Buildah:
    """A buildah whose whole state (storage, run root, config, temp files) lives under ``top``;
    ``cleanup()`` removes it and checks that nothing stays mounted there.

    ``driver``: the storage driver (vfs keeps plain directories and needs no mounts;
    bench/build.py also measures overlay, buildah's default as root). ``private=False`` runs
    buildah directly, for a caller that is already in a mount namespace of its own where
    /var/tmp and /var/lib/containers are covered (bench/build.py: no unshare in the timings).
    """

    def __init__(self, top: Path, private: bool = True, driver: str = "vfs") -> None:
        self.top = top
        self.root = top / "buildah-root"
        self.runroot = top / "buildah-run"
        self.scratch = top / "buildah-scratch"
        for d in (self.root, self.runroot, self.scratch / "var-tmp"):
            d.mkdir(parents=True, exist_ok=True)
        (self.scratch / "var-lib-containers").mkdir(exist_ok=True)
        conf = top / "buildah-conf"
        conf.mkdir(exist_ok=True)
        # Our own configuration files, so that the host's /etc/containers (or its absence on a
        # fresh machine) changes nothing: vfs storage here, no registry ever consulted for a
        # short name, any image accepted (we only move local images), temp files here.
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "{driver}"\n'
            f'runroot = "{self.runroot}"\ngraphroot = "{self.root}"\n'
        )
        (conf / "registries.conf").write_text(
            'unqualified-search-registries = []\nshort-name-mode = "permissive"\n'
        )
        (conf / "containers.conf").write_text(
            f'[engine]\nimage_copy_tmp_dir = "{self.scratch / "var-tmp"}"\n'
        )
        self.policy = conf / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
            "CONTAINERS_CONF": str(conf / "containers.conf"),
            "BUILDAH_ISOLATION": "chroot",
            "TMPDIR": str(self.scratch / "var-tmp"),
            "PEER_SCRATCH": str(self.scratch),
        }
        wrap = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _PRIVATE_DIRS]
        self.argv = [
            *(wrap if private else []),
            "buildah",
            *("--root", str(self.root), "--runroot", str(self.runroot)),
            *("--storage-driver", driver),
        ]

    def run(self, *args: str, quiet: bool = False) -> str:
        p = subprocess.run(
            [*self.argv, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if p.returncode != 0:
            raise AssertionError(
                f"buildah {' '.join(args)}: rc {p.returncode}\n{p.stdout}\n{p.stderr}"
            )
        return "" if quiet else p.stdout

    def load_layout(self, layout: Path, ref: str, name: str) -> None:
        """Pull image ``ref`` of the OCI layout into this storage and name it ``name``."""
        out = self.run("pull", "--signature-policy", str(self.policy), f"oci:{layout}:{ref}")
        self.run("tag", out.split()[-1], name)

    def bud(self, context: Path, tag: str, containerfile: Path, *flags: str) -> None:
        self.run(
            *("bud", "--isolation", "chroot", "--layers", "--pull=never"),
            *("--signature-policy", str(self.policy)),
            *("-f", str(containerfile), "-t", tag, *flags, str(context)),
            quiet=True,
        )

    def push_layout(self, image: str, layout: Path, tag: str) -> None:
        self.run(
            "push", "--signature-policy", str(self.policy), image, f"oci:{layout}:{tag}", quiet=True
        )

    def cleanup(self) -> None:
        # Containers first (a failed bud can leave its working container), then images; vfs
        # keeps plain directories, so rm -rf finishes whatever those leave.
        subprocess.run([*self.argv, "rm", "-a"], env=self.env, capture_output=True, check=False)
        subprocess.run(
            [*self.argv, "rmi", "-a", "-f"], env=self.env, capture_output=True, check=False
        )
        left = mounts_under(self.top)
        for mp in reversed(left):
            subprocess.run(["umount", "-l", mp], check=False)
        for d in (self.root, self.runroot, self.scratch, self.top / "buildah-conf"):
            shutil.rmtree(d, ignore_errors=True)
        assert not left, f"buildah left mounts behind: {left}"


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below ``prefix``, in /proc/self/mountinfo's order."""
    top = str(prefix)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == top or mp.startswith(top + "/"):
                out.append(mp)
    return out


# -- OCI image -> root tree ---------------------------------------------------------------------


def layout_ref(layout: Path) -> str:
    """The ref name of the one image in an OCI layout (umoci's ``--image LAYOUT:REF``)."""
    index = json.loads((layout / "index.json").read_text())
    (manifest,) = index["manifests"]
    return str(manifest["annotations"]["org.opencontainers.image.ref.name"])


def unpack(layout: Path, dest: Path) -> Path:
    """The image's root filesystem, every layer applied in order with its whiteouts, by
    ``umoci raw unpack`` as root (so owners, modes, xattrs and device nodes are kept)."""
    subprocess.run(
        ["umoci", "raw", "unpack", "--image", f"{layout}:{layout_ref(layout)}", str(dest)],
        check=True,
        capture_output=True,
    )
    return dest


def image_config(layout: Path) -> dict:  # type: ignore[type-arg]
    """The image config of the one image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs"

    def blob(digest: str) -> dict:  # type: ignore[type-arg]
        algo, hexd = digest.split(":", 1)
        return json.loads((blobs / algo / hexd).read_bytes())  # type: ignore[no-any-return]

    manifest = blob(index["manifests"][0]["digest"])
    return blob(manifest["config"]["digest"])


# -- the walker ---------------------------------------------------------------------------------

_KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass(frozen=True)
class Entry:
    """What a root tree says about one path. ``data`` is the sha256 of a file's contents, a
    symlink's target or a device's major:minor; ``links`` the other paths of a hard-linked
    inode; ``empty`` whether a directory has no entries."""

    kind: str
    mode: int
    uid: int
    gid: int
    data: str = ""
    size: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
    mtime: int = 0
    links: tuple[str, ...] = ()
    empty: bool = False

    def describe(self) -> str:
        text = f"{self.kind} {self.mode:04o} {self.uid}:{self.gid}"
        if self.kind == "symlink":
            text += f" -> {self.data}"
        elif self.kind == "file":
            text += f" {self.size} B"
        return text


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    # security.selinux is the host's label of the unpacked copy, not the image's.
    return tuple(
        sorted(
            (n, os.getxattr(path, n, follow_symlinks=False))
            for n in names
            if n != "security.selinux"
        )
    )


def walk(root: Path) -> dict[str, Entry]:
    """Every path below ``root`` (relative, '/'-separated, root itself as '.') with its Entry."""
    out: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    top = str(root)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames] if dirpath == top else [*dirnames, *filenames]:
            full = top if name == "." else os.path.join(dirpath, name)
            rel = "." if name == "." else os.path.relpath(full, top)
            st = os.lstat(full)
            kind = _KINDS[stat.S_IFMT(st.st_mode)]
            data, empty = "", False
            if kind == "file":
                data = _sha256(full)
            elif kind == "symlink":
                data = os.readlink(full)
            elif kind in ("char", "block"):
                data = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            elif kind == "dir":
                empty = not os.listdir(full)
            out[rel] = Entry(
                kind=kind,
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
                data=data,
                size=st.st_size if kind == "file" else 0,
                xattrs=_xattrs(full),
                mtime=int(st.st_mtime),
                empty=empty,
            )
            if kind != "dir" and st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    for paths in inodes.values():
        for p in paths:
            out[p] = replace(out[p], links=tuple(sorted(q for q in paths if q != p)))
    return out


@dataclass
class Rules:
    """How two trees are compared.

    ``ignore``: paths left out on both sides (and everything below them).
    ``optional_empty_dirs``: paths that may be an empty directory on either side or absent.
    ``added``: paths the reference tree lacks where Docker makes them, with what Docker makes:
    the reference gets them (and must still lack them: the allow-list is about what the
    reference does today, so a change there is noticed too).
    ``below``: for every entry strictly below a path, fields whose value Docker gives and the
    reference does not: ``{path: {field: value}}`` (at least one entry there must differ in
    the reference, for the same reason).
    ``mtime_before``: a non-directory's mtime is compared when either side's is older than
    this (it came from the context, an archive or the base, where both must keep it); newer
    ones were made by the build itself at different moments. Directory mtimes are never
    compared: adding a child changes them.
    """

    ignore: frozenset[str] = frozenset()
    optional_empty_dirs: frozenset[str] = frozenset()
    added: Mapping[str, Entry] = field(default_factory=dict)
    below: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    mtime_before: int = 0


_FIELDS = ("kind", "mode", "uid", "gid", "data", "size", "xattrs", "links")


def _show(name: str, value: object) -> str:
    if name == "mode" and isinstance(value, int):
        return f"{value:04o}"
    return repr(value)


def compare(
    ref: Mapping[str, Entry], ours: Mapping[str, Entry], rules: Rules, names: tuple[str, str]
) -> list[str]:
    """Every difference between the reference tree and ours, one line each, path first."""
    ref_name, our_name = names

    def ignored(path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in rules.ignore)

    diffs: list[str] = []
    # The reference as Docker would have it: allow-listed paths are shown as "Docker's".
    ref = dict(ref)
    docker = f"Docker's (allow-listed, {ref_name} differs)"
    names_of = {p: ref_name for p in ref}
    for path, entry in rules.added.items():
        if path in ref:
            diffs.append(
                f"/{path}: allow-list says {ref_name} lacks it, it has {ref[path].describe()}"
            )
        ref[path], names_of[path] = entry, docker
    for top, fields in rules.below.items():
        inside = [p for p in ref if p.startswith(top + "/")]
        if not any(getattr(ref[p], k) != v for p in inside for k, v in fields.items()):
            diffs.append(
                f"/{top}/: allow-list says {ref_name} differs from Docker below, it does not"
            )
        for p in inside:
            ref[p], names_of[p] = replace(ref[p], **fields), docker  # type: ignore[arg-type]
    for path in sorted(set(ref) | set(ours)):
        if ignored(path):
            continue
        a, b = ref.get(path), ours.get(path)
        if path in rules.optional_empty_dirs and all(
            e is None or (e.kind == "dir" and e.empty) for e in (a, b)
        ):
            continue
        a_name = names_of.get(path, ref_name)
        if a is None or b is None:
            where, e = (our_name, b) if a is None else (a_name, a)
            assert e is not None
            diffs.append(f"/{path}: only in {where} ({e.describe()})")
            continue
        for name in _FIELDS:
            va, vb = getattr(a, name), getattr(b, name)
            if va != vb:
                diffs.append(
                    f"/{path}: {name}: {a_name} {_show(name, va)}, {our_name} {_show(name, vb)}"
                )
        if a.kind != "dir" and min(a.mtime, b.mtime) < rules.mtime_before and a.mtime != b.mtime:
            diffs.append(f"/{path}: mtime: {a_name} {a.mtime}, {our_name} {b.mtime}")
    return diffs


def without_heredocs(containerfile: str) -> str:
    """The same Containerfile with each ``RUN <<EOF`` heredoc as the same script on one line
    (``; ``-joined), for a buildah that predates heredocs. Only the plain form the test uses
    (no command words before the heredoc, one heredoc per RUN) is handled."""
    out: list[str] = []
    lines: Iterator[str] = iter(containerfile.splitlines())
    for line in lines:
        words = line.split()
        if len(words) == 2 and words[0].upper() == "RUN" and words[1].startswith("<<"):
            delim = words[1][2:].lstrip("-").strip("'\"")
            body = []
            for inner in lines:
                if inner.strip() == delim:
                    break
                body.append(inner)
            out.append("RUN " + "; ".join(body))
        else:
            out.append(line)
    return "\n".join(out) + "\n"
