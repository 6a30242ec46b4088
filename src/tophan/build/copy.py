"""COPY and ADD as a layer: what a Containerfile's copy instruction adds, as a tar stream.

:func:`plan` reads everything once (sources, globs, ignore rules, the target image's own tree,
downloads, archives), decides every entry of the new layer and its digest (the cache key);
:meth:`Plan.write` then writes the layer as an uncompressed tar that ``tophan.layer.tarimport``
extracts, reading the content again and checking it is what was planned.

The rules are Docker's (BuildKit's where the classic builder and BuildKit differ, as BuildKit is
Docker's builder today; buildah differs in places, noted where it matters):

- sources are relative to the context root (or, with --from, to the other root); ``..`` is
  clamped at that root (BuildKit joins every source to "/"); globs follow Go's filepath.Match,
  one path component at a time; a source that is a symlink is followed inside its tree; symlinks
  below a source directory are copied as symlinks;
- a directory source copies its contents; a file goes to ``dest``, or into it when ``dest`` ends
  with "/" (or "/.", or is ".") or is an existing directory; ``dest`` is followed through the
  image's symlinks (fsutil's RootPath) and never written through on the host;
- owners become 0:0 (BuildKit resets the context's owners on transfer) or the --chown owner;
  COPY --from keeps the other root's owners (BuildKit and the classic builder both do);
- ADD extracts a local tar archive (by content, any of gzip/bzip2/xz/zstd or none) into dest,
  downloads http(s) URLs (mode 0600, Last-Modified as mtime, never extracted), checks --checksum.

Nothing outside the context, the other root, the target tree or our own staging is ever read or
written: every lookup goes through :class:`tophan.build.tree.Tree`, which follows no host symlink.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import time
from typing import Protocol

from tophan.build.tree import MAX_LINKS, Comps, Tree, join, split
from tophan.errors import ArchiveError, IntegrityError, TophanError, UsageError
from tophan.layer import tarexport

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, BinaryIO, Literal, Self
    from urllib.request import OpenerDirector, Request

CHUNK = 1 << 20
MAX_DOWNLOAD = 1 << 30  # ADD <url>: more than this is refused
DOWNLOAD_TIMEOUT = 60  # seconds without progress on the connection
MAX_REDIRECTS = 5
# ADD <archive>: the decompressed tar may be at most this large (a small .gz can expand to fill
# the disk; a layer this size belongs in a RUN step that can be told what to do).
MAX_ARCHIVE_BYTES = 32 << 30
DIR_MODE = 0o755
LINK_MODE = 0o777  # what Linux reports for a symlink, as tarexport writes it
WHITEOUT_PREFIX = ".wh."
UNNAMED = "__unnamed__"  # BuildKit's name for a download whose URL path names no file
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class Ignore(Protocol):
    """The context's .containerignore, as the builder's matcher answers it (paths have no
    leading "/")."""

    def ignored(self, rel: str) -> bool: ...

    def may_include_under(self, rel_dir: str) -> bool: ...


class CopySource:
    """Where COPY reads from: the build context, or (--from) another stage's or image's root."""

    __slots__ = ("ignore", "is_context", "tree")

    def __init__(self, tree: Tree, ignore: Ignore | None = None, is_context: bool = True) -> None:
        self.tree = tree
        self.ignore = ignore
        self.is_context = is_context

    @classmethod
    def context(cls, path: str, ignore: Ignore | None = None) -> CopySource:
        """The build context directory ``path`` (an addition: the common case in one call)."""
        return cls(Tree([path], xattr_ns=None), ignore, is_context=True)

    @classmethod
    def root(cls, tree: Tree) -> CopySource:
        """Another stage's or image's root, for --from (an addition)."""
        return cls(tree, None, is_context=False)

    def visible(self, comps: Comps, is_dir: bool) -> bool:
        """Whether the context transfer would hold ``comps``: not ignored, or an ignored
        directory that may hold re-included entries (which then exists to hold them)."""
        ig = self.ignore
        if ig is None or not comps:
            return True
        for k in range(1, len(comps)):
            rel = "/".join(comps[:k])
            if ig.ignored(rel) and not ig.may_include_under(rel):
                return False
        return self.visible_child(comps, is_dir)

    def visible_child(self, comps: Comps, is_dir: bool) -> bool:
        """:meth:`visible` for an entry whose parent is known to be visible."""
        ig = self.ignore
        if ig is None:
            return True
        rel = "/".join(comps)
        if ig.ignored(rel):
            return is_dir and ig.may_include_under(rel)
        return True


class _Entry:
    """One entry of the new layer. ``content``: where a regular file's bytes are read from (a
    tree, its path there, the stat it had when planned); ``inode``: hard links share one."""

    __slots__ = (
        "content",
        "gid",
        "hash_mtime",
        "inode",
        "kind",
        "link",
        "mode",
        "mtime_ns",
        "rdev",
        "sha",
        "size",
        "uid",
        "xattrs",
    )

    def __init__(
        self,
        kind: str,
        mode: int,
        owner: tuple[int, int],
        mtime_ns: int,
        xattrs: dict[str, bytes] | None = None,
    ) -> None:
        self.kind = kind  # d f l p c b
        self.mode = mode
        self.uid, self.gid = owner
        self.mtime_ns = mtime_ns
        self.xattrs = xattrs or {}
        self.link = ""
        self.rdev = 0
        self.size = 0
        self.content: tuple[Tree, str, os.stat_result] | None = None
        self.sha = ""
        self.inode: object = None
        # Context and image files are keyed by content, not mtime (Docker's checksum); archive
        # members and downloads carry their mtime as part of what they are.
        self.hash_mtime = False

    def record(self, path: str, hardlink_to: str | None) -> list[object]:
        return [
            path,
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.link,
            self.rdev,
            self.size,
            self.sha,
            sorted((k, v.hex()) for k, v in self.xattrs.items()),
            hardlink_to,
            self.mtime_ns if self.hash_mtime else None,
        ]


_KINDS = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFIFO: "p",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
}
_TYPEFLAGS = {"d": b"5", "f": b"0", "l": b"2", "c": b"3", "b": b"4", "p": b"6"}


# -- the plan ---------------------------------------------------------------------------------


class Plan:
    """What a COPY/ADD adds: ``digest`` (the cache key) and the layer, written by :meth:`write`.
    Holds downloads and extracted archives in the staging dir until :meth:`close`."""

    def __init__(self, entries: dict[Comps, _Entry], staged: list[str]) -> None:
        self._entries = sorted(entries.items())
        self._staged = staged
        self.digest = self._digest()

    @property
    def paths(self) -> list[str]:
        """Every path the layer holds, in tar order (an addition, for messages and tests)."""
        return [join(comps) for comps, _ in self._entries]

    def _hardlinks(self) -> Iterator[tuple[Comps, _Entry, Comps | None]]:
        """Entries in tar order, each with the earlier path it is a hard link of (if any)."""
        first: dict[object, Comps] = {}
        for comps, entry in self._entries:
            leader = None
            if entry.inode is not None:
                leader = first.setdefault(entry.inode, comps)
                if leader == comps:
                    leader = None
            yield comps, entry, leader

    def _digest(self) -> str:
        h = hashlib.sha256(b"tophan copy v1\n")
        for comps, entry, leader in self._hardlinks():
            rec = entry.record(join(comps), join(leader) if leader else None)
            h.update(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
        return "sha256:" + h.hexdigest()

    def write(self, out: BinaryIO, *, mtime: int | None) -> None:
        """The layer as an uncompressed tar (PAX where needed, numeric owners); ``mtime`` not
        None: every entry's mtime is ``mtime`` (seconds), for reproducible builds."""
        sink = tarexport._Sink(out)
        writer = tarexport.Writer(b"", sink)
        try:
            for comps, entry, leader in self._hardlinks():
                _emit(writer, comps, entry, leader, mtime)
            sink.add(tarexport.ZERO_BLOCK * 2)
            sink.flush()
        except OSError as e:
            where = f" ({_filename(e)})" if e.filename else ""
            raise TophanError(f"cannot write the layer: {e.strerror}{where}") from e

    def close(self) -> None:
        from tophan._internal.fs import rmtree

        while self._staged:
            rmtree(self._staged.pop())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _emit(
    writer: tarexport.Writer,
    comps: Comps,
    entry: _Entry,
    leader: Comps | None,
    mtime: int | None,
) -> None:
    name = os.fsencode("/".join(comps))
    mtime_ns = entry.mtime_ns if mtime is None else mtime * 1_000_000_000
    xattrs = {os.fsencode(k): v for k, v in sorted(entry.xattrs.items())}
    if leader is not None:
        link = os.fsencode("/".join(leader))
        writer.header(name, b"1", entry.mode, entry.uid, entry.gid, mtime_ns, xattrs, linkname=link)
        return
    if entry.kind == "d":
        name += b"/"
    size = entry.size if entry.kind == "f" else 0
    writer.header(
        name,
        _TYPEFLAGS[entry.kind],
        entry.mode,
        entry.uid,
        entry.gid,
        mtime_ns,
        xattrs,
        size,
        linkname=os.fsencode(entry.link),
        rdev=entry.rdev,
    )
    if entry.kind == "f":
        _stream_content(writer.sink, entry, join(comps))


def _stream_content(sink: tarexport._Sink, entry: _Entry, shown: str) -> None:
    """A file's bytes into the tar, checked against what was planned (the digest promised
    them: a context file edited since then fails the write rather than lie)."""
    assert entry.content is not None
    tree, path, st = entry.content
    h = hashlib.sha256()
    fd = tree.open_file(path, st)
    try:
        buf = bytearray(min(CHUNK, max(entry.size, 1)))
        left = entry.size
        while left:
            n = os.readv(fd, [memoryview(buf)[: min(left, len(buf))]])
            if n == 0:
                break
            view = memoryview(buf)[:n]
            h.update(view)
            sink.big(view)
            left -= n
        if left or os.read(fd, 1) or h.hexdigest() != entry.sha:
            raise TophanError(
                f"{path} changed after the build read it (for {shown})",
                "keep the build context still during a build, and build again",
            )
    finally:
        os.close(fd)
    sink.add(b"", -entry.size % tarexport.BLOCK)


def _hash_file(tree: Tree, path: str, st: os.stat_result) -> str:
    h = hashlib.sha256()
    fd = tree.open_file(path, st)
    try:
        buf = bytearray(min(CHUNK, max(st.st_size, 1)))
        total = 0
        while n := os.readv(fd, [buf]):
            h.update(memoryview(buf)[:n])
            total += n
    finally:
        os.close(fd)
    if total != st.st_size:
        raise TophanError(f"{path} changed while the build read it", "keep the build context still")
    return h.hexdigest()


# -- options ----------------------------------------------------------------------------------


def parse_chmod(value: str) -> int:
    """--chmod: octal only (Docker also takes symbolic modes since BuildKit 0.14; not yet)."""
    if not re.fullmatch(r"[0-7]{1,5}", value) or int(value, 8) > 0o7777:
        raise UsageError(
            f"--chmod={value}: not an octal mode",
            "write it in octal, e.g. --chmod=0755 (symbolic modes are not supported)",
        )
    return int(value, 8)


def parse_chown(value: str, target: Tree) -> tuple[int, int]:
    """--chown=user[:group], names looked up in the target's own /etc/passwd and /etc/group.

    BuildKit's rules: a numeric user alone gives gid = uid; a name alone gives the user's
    primary group from /etc/passwd."""
    user, sep, group = value.partition(":")
    if not user or (sep and not group) or ":" in group:
        raise UsageError(f"--chown={value}: expected user[:group]", "e.g. --chown=1000:1000")
    if _is_id(user):
        uid = gid = int(user)
    else:
        uid, gid = _lookup(target, "/etc/passwd", user, value)
    if sep:
        gid = int(group) if _is_id(group) else _lookup(target, "/etc/group", group, value)[0]
    return uid, gid


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) < 1 << 32


def _lookup(target: Tree, path: str, name: str, value: str) -> tuple[int, int]:
    """The ids of ``name`` in the target's ``path``: (uid, primary gid) from /etc/passwd,
    (gid, gid) from /etc/group."""
    data = target.read_file(path)
    if data is None:
        raise UsageError(
            f"--chown={value}: the image has no {path} to look up {name!r} in",
            "use numeric ids, e.g. --chown=1000:1000",
        )
    passwd = path.endswith("passwd")
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if fields[0] != name or len(fields) < (4 if passwd else 3):
            continue
        try:
            first = int(fields[2])
            return first, int(fields[3]) if passwd else first
        except ValueError:
            continue  # a malformed line; a later one may still name it
    raise UsageError(
        f"--chown={value}: no {name!r} in the image's {path}",
        "create it in an earlier RUN step, or use numeric ids",
    )


def _parse_checksum(value: str) -> tuple[str, str]:
    algo, _, hexdigest = value.partition(":")
    if _DIGEST_LENGTHS.get(algo) != len(hexdigest) or not re.fullmatch(r"[0-9a-f]+", hexdigest):
        raise UsageError(
            f"--checksum={value}: expected sha256:<64 hex digits>",
            "sha384 and sha512 digests are taken too",
        )
    return algo, hexdigest


def has_wildcards(name: str) -> bool:
    """Whether ``name`` holds glob syntax (a backslash escapes the next character)."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 1
        elif ch in "*?[":
            return True
        i += 1
    return False


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match for one path component, as a regex: ``*``, ``?``, ``[...]`` with
    ``^`` negation and ranges, ``\\`` escapes. A malformed pattern is a UsageError (Go's
    ErrBadPattern, which BuildKit treats as matching nothing)."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i >= n:
                raise _bad_pattern(pattern)
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            cls, i = _glob_class(pattern, i)
            out.append(cls)
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _glob_class(pattern: str, i: int) -> tuple[str, int]:
    negate = i < len(pattern) and pattern[i] == "^"
    if negate:
        i += 1
    ranges: list[str] = []
    while True:
        if i >= len(pattern):
            raise _bad_pattern(pattern)
        if pattern[i] == "]" and ranges:
            return ("[^" if negate else "[") + "".join(ranges) + "]", i + 1
        lo, i = _class_char(pattern, i)
        if i < len(pattern) and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
            if hi < lo:
                raise _bad_pattern(pattern)
            ranges.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:
            ranges.append(re.escape(lo))


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        raise _bad_pattern(pattern)
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise _bad_pattern(pattern)
    return pattern[i], i + 1


def _bad_pattern(pattern: str) -> UsageError:
    return UsageError(f"malformed glob {pattern!r}", "see Go's filepath.Match syntax")


# -- the target as it will be: the image's tree with what this instruction plans on top --------


class _View:
    """The target tree with the planned entries over it: what each later source sees (Docker
    copies the sources one after the other into the same tree)."""

    def __init__(self, target: Tree) -> None:
        self.target = target
        self.planned: dict[Comps, _Entry] = {}

    def _hidden(self, comps: Comps) -> bool:
        """Whether a planned non-directory replaced one of ``comps``'s parents (what the image
        had below it is gone)."""
        for k in range(1, len(comps)):
            entry = self.planned.get(comps[:k])
            if entry is not None and entry.kind != "d":
                return True
        return False

    def kind(self, comps: Comps) -> str | None:
        """d, f, l, ... of what is at ``comps`` (no symlink followed); None if nothing."""
        entry = self.planned.get(comps)
        if entry is not None:
            return entry.kind
        if not comps:
            return "d"
        if self._hidden(comps):
            return None
        st = self.target.lstat(join(comps))
        return None if st is None else _KINDS.get(stat.S_IFMT(st.st_mode), "s")

    def _link(self, comps: Comps) -> str | None:
        entry = self.planned.get(comps)
        if entry is not None:
            return entry.link if entry.kind == "l" else None
        if self._hidden(comps):
            return None
        st = self.target.lstat(join(comps))
        if st is None or not stat.S_ISLNK(st.st_mode):
            return None
        return self.target.readlink(join(comps))

    def resolve(self, path: str, *, follow_last: bool) -> Comps:
        """As Tree.resolve (chroot semantics, ELOOP after MAX_LINKS), over the planned
        entries too."""
        todo = _parts(path)[::-1]
        out: list[str] = []
        links = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if out:
                    out.pop()
                continue
            target = self._link((*out, name)) if todo or follow_last else None
            if target:  # an empty target (ENOENT for the kernel) is left as the link
                links += 1
                if links > MAX_LINKS:
                    raise TophanError(
                        f"too many levels of symbolic links in {path}",
                        "the image holds a symlink loop",
                    )
                if target.startswith("/"):
                    out = []
                todo.extend(_parts(target)[::-1])
                continue
            out.append(name)
        return tuple(out)

    def existing_dir(self, comps: Comps) -> _Entry:
        """An entry repeating the image's own directory (so the layer is a correct diff)."""
        path = join(comps)
        st = self.target.lstat(path)
        assert st is not None
        return _Entry(
            "d",
            stat.S_IMODE(st.st_mode),
            self.target.owner(path),
            st.st_mtime_ns,
            self.target.xattrs(path),
        )


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


# -- planning ---------------------------------------------------------------------------------


class _Source:
    """One matched source: its path as matched (it names the copy), as followed (the content)."""

    __slots__ = ("matched", "resolved", "st")

    def __init__(self, matched: Comps, resolved: Comps, st: os.stat_result) -> None:
        self.matched = matched
        self.resolved = resolved
        self.st = st


class _Planner:
    def __init__(
        self, source: CopySource, target: Tree, *, add: bool, where: str, staging_dir: str
    ) -> None:
        self.source = source
        self.view = _View(target)
        self.add = add
        self.what = "ADD" if add else "COPY"
        self.where = where
        self.staging_dir = staging_dir
        self.staged: list[str] = []
        self.owner: tuple[int, int] | None = None  # --chown
        self.mode: int | None = None  # --chmod
        self.checksum: tuple[str, str] | None = None
        self.now_ns = int(time.time()) * 1_000_000_000  # directories we create
        self.sources_done = 0  # hard links are kept within one source (as BuildKit's copier)
        self.hashes: dict[object, str] = {}

    # -- messages ------------------------------------------------------------------------------

    def usage(self, msg: str, hint: str | None = None) -> UsageError:
        return UsageError(self._prefix() + msg, hint)

    def error(self, msg: str, hint: str | None = None) -> TophanError:
        return TophanError(self._prefix() + msg, hint)

    def _prefix(self) -> str:
        return f"{self.where}: {self.what} " if self.where else f"{self.what} "

    # -- options -------------------------------------------------------------------------------

    def configure(
        self, srcs: list[str], chown: str | None, chmod: str | None, checksum: str | None
    ) -> None:
        if not srcs:
            raise self.usage("needs a source and a destination")
        try:
            if chmod is not None:
                self.mode = parse_chmod(chmod)
            if chown is not None:
                self.owner = parse_chown(chown, self.view.target)
            if checksum is not None:
                self.checksum = _parse_checksum(checksum)
        except UsageError as e:
            raise self.usage(e.message, e.hint) from None
        if checksum is not None:
            if not self.add:
                raise self.usage("--checksum is for ADD of a URL", "use ADD --checksum=... <url>")
            if len(srcs) != 1 or not _is_http(srcs[0]):
                raise self.usage(
                    "--checksum needs exactly one http(s) URL source",
                    "local files are checked by the build cache already",
                )

    def created_owner(self) -> tuple[int, int]:
        """Owner of the directories we create: the --chown owner, else root (fsutil's
        MkdirAll chowns what it creates; the classic builder left them root's)."""
        return self.owner if self.owner is not None else (0, 0)

    # -- the instruction -----------------------------------------------------------------------

    def run(self, srcs: list[str], dest: str, workdir: str) -> None:
        dest_path, dest_is_dir = _dest_path(dest, workdir)
        items: list[tuple[str, list[_Source] | None]] = []
        for src in srcs:
            if _URL_RE.match(src):
                self.check_url(src)
                items.append((src, None))
            else:
                items.append((src, self.expand(src)))
        count = sum(1 if found is None else len(found) for _, found in items)
        # The classic builder wants a trailing "/" with several sources; BuildKit checks nothing
        # and overwrites one file with the next. An existing directory is taken as one here.
        if count > 1 and not dest_is_dir and not self.is_dir(dest_path):
            raise self.usage(
                f"has {count} sources: the destination {dest} must be a directory",
                f"end it with a slash: {dest.rstrip('/')}/",
            )
        for src, found in items:
            if found is None:
                self.place_url(src, dest_path, dest_is_dir)
                continue
            for one in found:
                self.place(one, src, dest_path, dest_is_dir)
                self.sources_done += 1

    def is_dir(self, path: str) -> bool:
        return self.view.kind(self.view.resolve(path, follow_last=True)) == "d"

    # -- sources -------------------------------------------------------------------------------

    def expand(self, src: str) -> list[_Source]:
        """The sources ``src`` names: a path, or a glob's matches (in lexical order)."""
        comps = split("/" + src)  # ".." clamped at the root, as BuildKit's Join("/", src)
        first = next((i for i, part in enumerate(comps) if has_wildcards(part)), None)
        if first is None:
            return [self.single(src, comps)]
        matches = self.glob(comps, first)
        if not matches:
            raise self.usage(
                f"{src}: no source files match the pattern",
                "check it" + (" and .containerignore" if self.source.ignore else ""),
            )
        return [self.follow(m, src) for m in matches]

    def single(self, src: str, comps: Comps) -> _Source:
        found = self.follow(comps, src)
        own = self.source.tree.lstat(join(comps))  # the path as written, if it is one
        is_dir = stat.S_ISDIR((own or found.st).st_mode)
        if not self.source.visible(comps, is_dir):
            raise self.missing(src)
        return found

    def follow(self, matched: Comps, src: str) -> _Source:
        """The source at ``matched``, followed if it is a symlink (inside its tree only)."""
        tree = self.source.tree
        resolved = split(tree.resolve(join(matched)))
        st = tree.lstat(join(resolved))
        if st is None or stat.S_ISLNK(st.st_mode):
            own = tree.lstat(join(matched))
            if own is not None and stat.S_ISLNK(own.st_mode):
                where = "build context" if self.source.is_context else "--from root"
                raise self.usage(
                    f"{src}: {join(matched)[1:]} is a symlink to nothing in the {where}",
                    "links are followed inside it only",
                )
            raise self.missing(src)
        if not self.source.visible(resolved, stat.S_ISDIR(st.st_mode)):
            raise self.missing(src)
        return _Source(matched, resolved, st)

    def missing(self, src: str) -> UsageError:
        if self.source.is_context:
            return self.usage(
                f"{src}: no such file in the build context",
                "source paths are relative to the context; check .containerignore",
            )
        return self.usage(f"{src}: no such file in the --from root")

    def glob(self, comps: Comps, first: int) -> list[Comps]:
        """Matches of the patterns ``comps[first:]`` (one per component) below
        ``comps[:first]`` (followed through symlinks); directories on the way are entered,
        never symlinks, as Go's filepath.Walk in BuildKit's resolveWildcards."""
        tree = self.source.tree
        level = [split(tree.resolve(join(comps[:first])))]
        patterns = comps[first:]
        for depth, pattern in enumerate(patterns):
            last = depth == len(patterns) - 1
            rx = glob_regex(pattern)
            nxt: list[Comps] = []
            for parent in level:
                for name in tree.listdir(join(parent)):
                    if rx.fullmatch(name) is None:
                        continue
                    child = (*parent, name)
                    st = tree.lstat(join(child))
                    if st is None or not self.source.visible(child, stat.S_ISDIR(st.st_mode)):
                        continue  # an ignored file is not in the context: never matched
                    if last or stat.S_ISDIR(st.st_mode):
                        nxt.append(child)
            level = nxt
        return level

    # -- placing -------------------------------------------------------------------------------

    def place(self, found: _Source, src: str, dest_path: str, dest_is_dir: bool) -> None:
        tree = self.source.tree
        d = self.view.resolve(dest_path, follow_last=True)
        if stat.S_ISDIR(found.st.st_mode):
            # dest itself stands for the source directory: created 0755 (fsutil's
            # prepareTargetDir MkdirAll(dest, 0755); --chmod applies to what goes inside, as
            # buildah and Docker give it), with the source's mtime; an existing one keeps its own.
            self.dest_dir(d, DIR_MODE, found.st.st_mtime_ns)
            self.copy_dir(found.resolved, d)
            return
        if self.add and self.is_archive(found):
            staged = self.extract(found, src)
            self.dest_dir(d, DIR_MODE, self.now_ns)  # an archive always goes *into* dest
            self.copy_archive(staged, d)
            return
        entry = self.entry_for(tree, found.resolved, found.st)
        if entry is None:
            raise self.usage(f"{src}: a socket cannot be copied")
        self.place_file(entry, found.matched[-1], d, dest_is_dir)

    def place_file(self, entry: _Entry, name: str, d: Comps, dest_is_dir: bool) -> None:
        """A single file to ``d``, or into it when ``d`` is (or is to be) a directory; named by
        the source as written (a followed symlink's name, as Docker)."""
        if dest_is_dir or self.view.kind(d) == "d":
            self.dest_dir(d, DIR_MODE, self.now_ns)
            self.put((*d, name), entry, replace=False)
            return
        self.dest_dir(d[:-1], DIR_MODE, self.now_ns)
        self.put(d, entry, replace=False)

    def dest_dir(self, comps: Comps, mode: int, mtime_ns: int) -> None:
        """Make ``comps`` a directory of the new layer: missing parents are created (0755,
        root or the --chown owner, as fsutil's MkdirAll), existing ones repeated with the
        image's metadata; ``comps`` itself, if missing, gets ``mode`` and ``mtime_ns``.

        BuildKit gives created parents the --chmod mode too; we keep them 0755 (a 0644
        parent could not be entered)."""
        for k in range(1, len(comps) + 1):
            here = comps[:k]
            kind = self.view.kind(here)
            if kind is None:
                last = k == len(comps)
                self.view.planned[here] = _Entry(
                    "d",
                    mode if last else DIR_MODE,
                    self.created_owner(),
                    mtime_ns if last else self.now_ns,
                )
            elif kind != "d":
                raise self.usage(
                    f"cannot copy into {join(here)}: it is not a directory in the image",
                    "choose another destination",
                )
            elif here not in self.view.planned:
                self.view.planned[here] = self.view.existing_dir(here)

    def put(self, comps: Comps, entry: _Entry, *, replace: bool) -> None:
        """Plan ``entry`` at ``comps`` (its parent is a directory already). BuildKit's copier:
        directories merge, a non-directory replaces a non-directory (a symlink is replaced,
        never written through); a directory over a non-directory, or a file over a
        directory, is an error. ``replace`` (archive members, as BuildKit's unpack): those
        replace instead."""
        if comps[-1].startswith(WHITEOUT_PREFIX):
            raise self.usage(
                f"cannot add {join(comps)}: names starting with {WHITEOUT_PREFIX} mean"
                " whiteouts in a layer",
                "rename it, or leave it out with .containerignore",
            )
        kind = self.view.kind(comps)
        if kind is not None and (kind == "d") != (entry.kind == "d"):
            if not replace:
                if entry.kind == "d":
                    raise self.usage(f"cannot copy a directory over non-directory {join(comps)}")
                raise self.usage(f"cannot replace directory {join(comps)} with a file")
            n = len(comps)
            for key in [k for k in self.view.planned if len(k) > n and k[:n] == comps]:
                del self.view.planned[key]
        self.view.planned[comps] = entry

    def entry_for(self, tree: Tree, comps: Comps, st: os.stat_result) -> _Entry | None:
        """The entry copying ``comps`` of the source tree; None for a socket of a --from root
        (tar cannot hold one)."""
        path = join(comps)
        kind = _KINDS.get(stat.S_IFMT(st.st_mode))
        context = self.source.is_context
        if context and kind not in ("f", "d", "l"):
            # Docker sends device nodes and FIFOs of a context along; copying a host device
            # into an image is never what a build means, so the safe default is to refuse.
            raise self.usage(
                f"{path}: {_describe(st)} in the build context cannot be copied",
                "leave it out with .containerignore",
            )
        if kind is None:
            return None
        if self.owner is not None:
            owner = self.owner
        elif context:
            owner = (0, 0)
        else:
            owner = tree.owner(path)
        mode = LINK_MODE if kind == "l" else stat.S_IMODE(st.st_mode)  # setuid bits kept
        if self.mode is not None and kind != "l":
            mode = self.mode
        xattrs = tree.xattrs(path)
        if context:
            xattrs = _context_xattrs(xattrs)
        entry = _Entry(kind, mode, owner, st.st_mtime_ns, xattrs)
        self.fill(entry, tree, comps, st)
        return entry

    def fill(self, entry: _Entry, tree: Tree, comps: Comps, st: os.stat_result) -> None:
        """Kind-specific parts: a file's content (hashed now), a link's target, a device."""
        path = join(comps)
        if entry.kind == "f":
            entry.size = st.st_size
            entry.content = (tree, path, st)
            if st.st_nlink > 1:
                entry.inode = (self.sources_done, st.st_dev, st.st_ino)
                sha = self.hashes.get(entry.inode)
                if sha is None:
                    sha = self.hashes[entry.inode] = _hash_file(tree, path, st)
                entry.sha = sha
            else:
                entry.sha = _hash_file(tree, path, st)
        elif entry.kind == "l":
            entry.link = tree.readlink(path)
        elif entry.kind in ("c", "b"):
            entry.rdev = st.st_rdev

    def copy_dir(self, src: Comps, dest: Comps) -> None:
        """The contents of directory ``src`` into directory ``dest``, depth first. An ignored
        directory that may hold re-included entries is made only when one of them is (the
        context transfer creates it for them, with its own metadata)."""
        tree = self.source.tree
        ignore = self.source.ignore
        # (source dir, dest dir, ignored ancestors not yet planned: made when a child is)
        stack: list[tuple[Comps, Comps, tuple[tuple[Comps, _Entry], ...]]] = [(src, dest, ())]
        while stack:
            sdir, ddir, pending = stack.pop()
            for name in tree.listdir(join(sdir)):
                scomps, dcomps = (*sdir, name), (*ddir, name)
                st = tree.lstat(join(scomps))
                if st is None:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if not self.source.visible_child(scomps, is_dir):
                    continue
                entry = self.entry_for(tree, scomps, st)
                if entry is None:
                    continue
                if ignore is not None and ignore.ignored("/".join(scomps)):
                    stack.append((scomps, dcomps, (*pending, (dcomps, entry))))
                    continue
                for pcomps, pentry in pending:
                    if pcomps not in self.view.planned:
                        self.put(pcomps, pentry, replace=False)
                self.put(dcomps, entry, replace=False)
                if is_dir:
                    stack.append((scomps, dcomps, ()))

    # -- ADD: archives -------------------------------------------------------------------------

    def is_archive(self, found: _Source) -> bool:
        """Whether a source file is a tar archive, compressed or not (Docker's isArchivePath:
        decompress, read one tar header; any failure means "copy it as it is")."""
        import tarfile

        from tophan._internal import compression

        if not stat.S_ISREG(found.st.st_mode):
            return False
        fd = self.source.tree.open_file(join(found.resolved), found.st)
        with os.fdopen(fd, "rb") as f:
            try:
                block = compression.open_decompressed(f).read(tarexport.BLOCK)
                tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except Exception:  # a corrupt stream of any codec, or no tar header
                return False
        return True

    def extract(self, found: _Source, src: str) -> Tree:
        """The archive, extracted into our staging by tophan's own hardened extractor
        (``..`` members, members below the archive's own symlinks, hardlinks out of it and,
        unprivileged, device nodes are refused), as a tree to copy from."""
        from tophan._internal import compression
        from tophan._internal.root import is_privileged
        from tophan.layer import tarimport

        privileged = is_privileged()
        ns: Literal["trusted", "user"] = "trusted" if privileged else "user"
        dest = self.stage("archive")
        fd = self.source.tree.open_file(join(found.resolved), found.st)
        with os.fdopen(fd, "rb") as f:
            try:
                outer = compression.detect(f.peek(6)[:6])
                capped = io.BufferedReader(
                    _Capped(compression.open_decompressed(f), MAX_ARCHIVE_BYTES)
                )
                tar: IO[bytes] = capped
                if outer is not None and compression.detect(capped.peek(6)[:6]) is not None:
                    # The tar itself starts like a compressed stream (a first member named
                    # "BZh..."): the extractor would decompress it twice. It gets the original
                    # to decompress once, uncapped.
                    f.seek(0)
                    tar = f
                tarimport.extract(tar, dest, xattr_ns=ns, privileged=privileged)
            except ArchiveError as e:
                raise self.error(f"{src}: {e.message}", e.hint) from e
        _refuse_layer_markers(dest, f"{ns}.overlay.opaque", src, self.usage)
        return Tree([dest], xattr_ns=ns)

    def copy_archive(self, staged: Tree, dest: Comps) -> None:
        """The extracted archive into ``dest``. As BuildKit's unpack, each member's path is
        followed through symlinks (the image's and earlier sources'; a directory's own name
        too), inside the tree: ``bin/sh`` lands in /usr/bin on a merged-/usr image."""
        stack: list[Comps] = [()]
        while stack:
            sdir = stack.pop()
            for name in staged.listdir(join(sdir)):
                scomps = (*sdir, name)
                st = staged.lstat(join(scomps))
                entry = None if st is None else self.member(staged, scomps, st)
                if st is None or entry is None:
                    continue
                is_dir = entry.kind == "d"
                final = self.view.resolve(join((*dest, *scomps)), follow_last=is_dir)
                keep = is_dir and _implied(staged, scomps, st) and self.view.kind(final) == "d"
                if final and not keep:  # (a directory resolving to the root: only its contents)
                    self.dest_dir(final[:-1], DIR_MODE, self.now_ns)
                    self.put(final, entry, replace=True)
                if is_dir:
                    stack.append(scomps)

    def member(self, tree: Tree, comps: Comps, st: os.stat_result) -> _Entry | None:
        """An extracted member: the archive's owner (or --chown, as BuildKit's unpack), its
        mode (--chmod does not apply to extracted members there either), its mtime (part of
        the digest) and xattrs."""
        path = join(comps)
        kind = _KINDS.get(stat.S_IFMT(st.st_mode))
        if kind is None:
            return None
        owner = self.owner if self.owner is not None else tree.owner(path)
        mode = LINK_MODE if kind == "l" else stat.S_IMODE(st.st_mode)
        entry = _Entry(kind, mode, owner, st.st_mtime_ns, tree.xattrs(path))
        entry.hash_mtime = True
        self.fill(entry, tree, comps, st)
        return entry

    def stage(self, what: str) -> str:
        """A fresh private directory in the staging dir, removed by Plan.close."""
        path = os.path.join(self.staging_dir, f"copy-{what}-{os.urandom(6).hex()}")
        os.mkdir(path, 0o700)
        self.staged.append(path)
        return path

    # -- ADD: URLs -----------------------------------------------------------------------------

    def check_url(self, src: str) -> None:
        if not _is_http(src):
            raise self.usage(
                f"{_show_url(src)}: only http:// and https:// URLs can be fetched",
                "fetch it in a RUN step, or put the file in the build context",
            )
        if not self.add:
            raise self.usage(f"{_show_url(src)}: COPY does not fetch URLs", "use ADD")

    def place_url(self, url: str, dest_path: str, dest_is_dir: bool) -> None:
        """The download as one file, mode 0600 (--chmod applies), owned by root or --chown,
        with the server's Last-Modified as mtime (Docker); never extracted."""
        tree, comps, st, mtime = self.download(url)
        mode = self.mode if self.mode is not None else 0o600
        entry = _Entry("f", mode, self.created_owner(), mtime * 1_000_000_000)
        entry.hash_mtime = True
        self.fill(entry, tree, comps, st)
        d = self.view.resolve(dest_path, follow_last=True)
        self.place_file(entry, _url_name(url), d, dest_is_dir)
        self.sources_done += 1

    def download(self, url: str) -> tuple[Tree, Comps, os.stat_result, int]:
        """Fetch ``url`` into our staging: at most MAX_REDIRECTS redirects, to http(s) only,
        MAX_DOWNLOAD bytes, DOWNLOAD_TIMEOUT seconds of silence; checked against --checksum."""
        import email.utils
        import http.client
        import urllib.error

        shown = _show_url(url)
        folder = self.stage("download")
        path = os.path.join(folder, "content")
        try:
            with _opener(shown).open(_request(url), timeout=DOWNLOAD_TIMEOUT) as resp:
                if resp.status != 200:
                    raise self.error(f"{shown}: the server answered {resp.status} {resp.reason}")
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > MAX_DOWNLOAD:
                    raise self.too_big(shown)
                digest = self.save(resp, path, shown)
                modified = resp.headers.get("Last-Modified")
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400 and e.headers.get("Location"):
                raise self.error(f"{shown}: more than {MAX_REDIRECTS} redirects") from None
            raise self.error(f"{shown}: the server answered {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise self.error(f"cannot fetch {shown}: {e.reason}") from None
        except (OSError, http.client.HTTPException) as e:
            raise self.error(f"cannot fetch {shown}: {e}") from None
        if self.checksum is not None and digest != f"{self.checksum[0]}:{self.checksum[1]}":
            raise IntegrityError(
                self._prefix() + f"{shown}: checksum mismatch: expected"
                f" {self.checksum[0]}:{self.checksum[1]}, got {digest}",
                "the file changed on the server, or --checksum is wrong",
            )
        mtime = 0  # no Last-Modified: the epoch (the classic builder's zero time, clamped)
        if modified:
            try:
                mtime = max(0, int(email.utils.parsedate_to_datetime(modified).timestamp()))
            except (TypeError, ValueError):
                pass
        return Tree([folder], xattr_ns=None), ("content",), os.lstat(path), mtime

    def save(self, resp: BinaryIO, path: str, shown: str) -> str:
        """Write the body to ``path``; returns its digest in --checksum's algorithm."""
        h = hashlib.new(self.checksum[0] if self.checksum else "sha256")
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        with os.fdopen(fd, "wb") as out:
            total = 0
            while chunk := resp.read(CHUNK):
                total += len(chunk)
                if total > MAX_DOWNLOAD:
                    raise self.too_big(shown)
                h.update(chunk)
                out.write(chunk)
        return f"{h.name}:{h.hexdigest()}"

    def too_big(self, shown: str) -> TophanError:
        return self.error(
            f"{shown}: larger than {MAX_DOWNLOAD >> 30} GiB",
            "fetch it in a RUN step, where you can check and unpack it",
        )


def _implied(staged: Tree, comps: Comps, st: os.stat_result) -> bool:
    """Whether a staged directory looks made by the extractor for members that had no entry
    of their own (0755, root, mtime 0, no xattrs). BuildKit leaves an existing directory as it
    is there (its Mkdir finds it): without this, ``ADD x.tar /`` holding ``tmp/f`` but no
    ``tmp/`` would turn the image's 1777 /tmp into 0755. An explicit member with exactly those
    values is taken for implied too, which only keeps the image's own directory."""
    path = join(comps)
    return (
        stat.S_IMODE(st.st_mode) == DIR_MODE
        and st.st_mtime_ns == 0
        and staged.owner(path) == (0, 0)
        and not staged.xattrs(path)
    )


def _is_http(src: str) -> bool:
    return src[:8].lower().startswith(("http://", "https://"))


def _show_url(url: str) -> str:
    """``url`` without credentials (messages end up in logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _url_name(url: str) -> str:
    """The file name a download gets inside a directory: the URL path's last element (Go's
    path.Base, as BuildKit), else __unnamed__."""
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(url).path).rstrip("/")
    base = path.rpartition("/")[2]
    if base in ("", ".", "..") or "\0" in base:
        return UNNAMED
    return base


def _request(url: str) -> Request:
    import urllib.request

    return urllib.request.Request(url, headers={"User-Agent": "tophan"})


def _opener(shown: str) -> OpenerDirector:
    """An opener following at most MAX_REDIRECTS redirects, to http(s) only (urllib's own
    handler would follow to ftp:// too)."""
    import urllib.parse
    import urllib.request

    class Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = MAX_REDIRECTS

        def http_error_302(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
            location = headers.get("location") or headers.get("uri") or ""
            new = urllib.parse.urljoin(req.full_url, location)
            scheme = urllib.parse.urlsplit(new).scheme.lower()
            if location and scheme not in ("http", "https"):
                raise TophanError(
                    f"{shown}: redirected to a {scheme}:// URL", "only http(s) is followed"
                )
            return super().http_error_302(req, fp, code, msg, headers)

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    return urllib.request.build_opener(Redirects)


def _dest_path(dest: str, workdir: str) -> tuple[str, bool]:
    """The destination made absolute (relative to the WORKDIR), and whether it names a
    directory by its form: a trailing "/" or "/.", or "." itself (BuildKit's NormalizePath
    with keepSlash)."""
    is_dir = dest in ("", ".") or dest.endswith(("/", "/."))
    path = dest if dest.startswith("/") else (workdir or "/").rstrip("/") + "/" + dest
    return join(split(path)), is_dir


def _context_xattrs(xattrs: dict[str, bytes]) -> dict[str, bytes]:
    """The context's xattrs a layer takes: user.* and security.capability (the classic
    builder's context tar carries security.capability; BuildKit's transfer carries all, and
    applies what it may). Never trusted.* (overlayfs's and other privileged state) or
    security.selinux (the host's labels), nor our own user.tophan.* bookkeeping."""
    return {
        k: v
        for k, v in xattrs.items()
        if (k.startswith("user.") and not k.startswith("user.tophan."))
        or k == "security.capability"
    }


def _describe(st: os.stat_result) -> str:
    m = st.st_mode
    if stat.S_ISFIFO(m):
        return "a FIFO"
    if stat.S_ISSOCK(m):
        return "a socket"
    if stat.S_ISCHR(m):
        return "a character device"
    if stat.S_ISBLK(m):
        return "a block device"
    return "a file of unknown type"


def _refuse_layer_markers(
    root: str, opaque_key: str, src: str, usage: Callable[[str, str | None], UsageError]
) -> None:
    """An archive's whiteouts (.wh.*) and opaque markers became overlayfs markers in our
    staging: a layer cannot carry them as files (Docker writes them as plain files, which a
    later import of the image takes for whiteouts), so the archive is refused."""
    todo = [root]
    while todo:
        here = todo.pop()
        try:
            opaque = os.getxattr(here, opaque_key, follow_symlinks=False) == b"y"
        except OSError:
            opaque = False
        if opaque:
            raise usage(
                f"{src}: the archive marks {os.path.basename(here)}/ opaque (.wh..wh..opq)",
                "layers cannot carry that as a file: repack it without",
            )
        with os.scandir(here) as it:
            entries = list(it)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                todo.append(e.path)
            elif not (e.is_file(follow_symlinks=False) or e.is_symlink()):
                st = e.stat(follow_symlinks=False)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    raise usage(
                        f"{src}: the archive holds a whiteout for {e.name} ({WHITEOUT_PREFIX}*)",
                        "layers cannot carry that as a file: repack it without",
                    )


class _Capped(io.RawIOBase):
    """A stream that fails once more than ``cap`` bytes came through it."""

    def __init__(self, src: IO[bytes], cap: int) -> None:
        self.src = src
        self.cap = cap
        self.left = cap

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.src.read(min(len(b), self.left + 1))
        if len(data) > self.left:
            raise ArchiveError(
                f"decompresses to more than {self.cap >> 20} MiB",
                "unpack it in a RUN step instead",
            )
        self.left -= len(data)
        b[: len(data)] = data
        return len(data)


# -- the entry point --------------------------------------------------------------------------


def plan(
    srcs: list[str],
    dest: str,
    *,
    source: CopySource,
    target: Tree,
    workdir: str,
    chown: str | None = None,
    chmod: str | None = None,
    add: bool = False,
    checksum: str | None = None,
    where: str = "",
    staging_dir: str,
) -> Plan:
    """Plan COPY (or ADD) ``srcs`` ``dest`` from ``source`` onto ``target``: every source read,
    every download made, the digest known. ``where`` ("Containerfile:7") starts every error.
    The plan holds staged files until closed; nothing is left behind when planning fails."""
    planner = _Planner(source, target, add=add, where=where, staging_dir=staging_dir)
    try:
        planner.configure(srcs, chown, chmod, checksum)
        planner.run(srcs, dest, workdir)
        return Plan(planner.view.planned, planner.staged)
    except OSError as e:  # unreadable context entries and the like: one line, no traceback
        Plan({}, planner.staged).close()
        raise planner.error(f"cannot read {_filename(e)}: {e.strerror}") from e
    except BaseException:
        Plan({}, planner.staged).close()
        raise


def _filename(e: OSError) -> str:
    name = e.filename
    return os.fsdecode(name) if isinstance(name, (str, bytes)) else "a source"
