"""A build context's ``.containerignore`` (``.dockerignore``): the files COPY and ADD skip.

Docker's rules, from BuildKit's ``dockerignore.ReadAll`` and ``moby/patternmatcher``:

- a line starting with ``#`` is a comment; blank lines are skipped; others are trimmed;
- a pattern is cleaned like Go's ``filepath.Clean`` and loses a leading ``/``: the context is
  both the working and the root directory;
- ``*`` is any run of characters but ``/``, ``?`` one of them, ``[...]`` a class (``[^...]``
  negated), ``\\`` escapes; ``**`` is any number of directories, ``dir/**`` what is under dir;
- a pattern that matches a directory matches everything under it;
- ``!pattern`` makes an exception, and the last pattern that matches a path decides.

Matching is all this module does: the caller decides what it means for the Containerfile and
the ignore file themselves (Docker still reads them, and COPY skips them if they match).
"""

from __future__ import annotations

import os

from tophan._internal.fs import read_bounded
from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterable

MAX_SIZE = 1 << 20
_HINT = "patterns are globs such as *.log, build/, **/*.tmp, !keep.txt"

# How a pattern matches, as patternmatcher decides it: the plain ones need no regex.
_EXACT, _PREFIX, _SUFFIX, _REGEX = range(4)


def clean(path: str) -> str:
    """Go's ``filepath.Clean`` of a ``/`` path (``//a`` is ``/a``, unlike with normpath)."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            parts.append(part)
        elif parts and parts[-1] != "..":
            parts.pop()
        elif not rooted:
            parts.append("..")
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


class _Pattern:
    """One cleaned pattern; compiled the first time it is matched."""

    __slots__ = ("depth", "exclusion", "kind", "rx", "text")

    def __init__(self, text: str, exclusion: bool, where: str) -> None:
        self.text = text
        self.exclusion = exclusion
        self.rx: re.Pattern[str] | None = None
        self.kind = _EXACT
        self._compile(where)
        # Without "**" (and "[^/]", "\\/", which could match a "/"), a pattern matches only
        # paths of as many components as it has: one parent to try, not all of them.
        fixed = self.kind in (_EXACT, _REGEX) and not any(s in text for s in ("**", "[", "\\"))
        self.depth = text.count("/") + 1 if fixed else 0

    def _compile(self, where: str) -> None:
        """Translate to a regex the way patternmatcher's compile does, checking the syntax."""
        p, out, kind, i, step = self.text, ["^"], _EXACT, 0, 0
        while i < len(p):
            c = p[i]
            i += 1
            if c == "*" and p[i : i + 1] == "*":
                i += 1
                if p[i : i + 1] == "/":
                    i += 1  # "**/" is "**"
                if i == len(p) and kind == _EXACT:
                    kind = _PREFIX
                else:
                    out.append(".*" if i == len(p) else "(.*/)?")
                    kind = _REGEX
                if step == 0:
                    kind = _SUFFIX
            elif c in "*?[\\":
                piece, i = _wildcard(p, i, c, where)
                out.append(piece)
                kind = _REGEX
            else:
                out.append(_escape(c))
            step += 1
        self.kind = kind
        if kind == _REGEX:
            import re

            self.rx = re.compile("".join(out) + "$", re.DOTALL)

    def match(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.rx is not None
        return self.rx.match(path) is not None

    def matches_or_parent(self, path: str, parents: list[str]) -> bool:
        """Whether the pattern matches the path or one of its parent directories."""
        if self.depth:
            if self.depth > len(parents):
                return self.depth == len(parents) + 1 and self.match(path)
            return self.match(parents[self.depth - 1])
        return self.match(path) or any(self.match(p) for p in parents)

    def may_match_below(self, directory: str) -> bool:
        """Whether some path under ``directory`` could match; True when unsure."""
        below = directory + "/"
        if self.kind == _EXACT:
            return self.text.startswith(below)
        if self.kind == _PREFIX:
            head = self.text[:-2]
            return below.startswith(head) or head.startswith(below)
        if any(c in self.text for c in "[\\"):
            return True
        # Walk the pattern's components along the directory's: "*" and "?" stay within one.
        parts, dirs = self.text.split("/"), directory.split("/")
        for k, name in enumerate(dirs):
            if k >= len(parts):
                return False
            if "**" in parts[k]:
                return True
            if not _component(parts[k]).match(name):
                return False
        return len(parts) > len(dirs)


def _escape(c: str) -> str:
    # A backslash makes any ASCII punctuation or blank literal, in a class or out of one.
    return "\\" + c if c.isascii() and not (c.isalnum() or c == "_") else c


def _wildcard(p: str, i: int, c: str, where: str) -> tuple[str, int]:
    """The regex of the wildcard ``c`` ending at ``i`` in ``p``, and where the pattern resumes."""
    if c == "*":
        return "[^/]*", i
    if c == "?":
        return "[^/]", i
    if c == "\\":
        if i == len(p):
            raise _bad(p, where, "it ends with a lone \\")
        return _escape(p[i]), i + 1
    return _char_class(p, i, where)


def _char_class(p: str, i: int, where: str) -> tuple[str, int]:
    """``[...]`` as Go's filepath.Match reads it (``^`` negates), as a regex class."""
    out = ["["]
    if p[i : i + 1] == "^":
        out.append("^")
        i += 1
    ranges = 0
    while True:
        if p[i : i + 1] == "]" and ranges:
            return "".join(out) + "]", i + 1
        lo, i = _class_char(p, i, where)
        hi = lo
        if p[i : i + 1] == "-":
            hi, i = _class_char(p, i + 1, where)
            if hi < lo:
                raise _bad(p, where, f"the range {lo}-{hi} is reversed")
        out.append(_escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}")
        ranges += 1


def _class_char(p: str, i: int, where: str) -> tuple[str, int]:
    c = p[i : i + 1]
    if c in ("", "-", "]"):
        raise _bad(p, where, "a [...] class is not closed or is empty")
    if c == "\\":
        i += 1
        c = p[i : i + 1]
    if not c or i + 1 >= len(p):
        raise _bad(p, where, "a [...] class is not closed")
    return c, i + 1


def _bad(pattern: str, where: str, why: str) -> UsageError:
    return UsageError(f"{where}invalid ignore pattern {pattern!r}: {why}", _HINT)


_COMPONENTS: dict[str, re.Pattern[str]] = {}


def _component(part: str) -> re.Pattern[str]:
    """A regex for one ``/``-free component holding only literals, ``*`` and ``?``."""
    rx = _COMPONENTS.get(part)
    if rx is None:
        import re

        body = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)
        rx = _COMPONENTS[part] = re.compile(body + "$", re.DOTALL)
    return rx


def _parents(path: str) -> list[str]:
    """``a``, ``a/b`` for ``a/b/c``: the directories whose match covers ``path``."""
    parts = path.split("/")
    return ["/".join(parts[:k]) for k in range(1, len(parts))]


def _normal(rel: str) -> str:
    path = clean(rel).lstrip("/")
    return "" if path == "." else path


class Ignore:
    """The patterns of one ignore file (or none)."""

    def __init__(self, patterns: list[_Pattern], source: str | None = None) -> None:
        self.patterns = patterns
        self.source = source  # the file the patterns came from, if any

    @classmethod
    def load(cls, context: str, containerfile: str | None = None) -> Ignore:
        """The ignore file of a build, as Docker and buildah pick it.

        ``<containerfile>.containerignore``, then ``<containerfile>.dockerignore`` beside the
        Containerfile; else ``.containerignore``, then ``.dockerignore`` in the context. None
        of them: an Ignore that ignores nothing.
        """
        candidates = []
        if containerfile:
            candidates += [containerfile + ".containerignore", containerfile + ".dockerignore"]
        candidates += [os.path.join(context, n) for n in (".containerignore", ".dockerignore")]
        for path in candidates:
            if os.path.lexists(path):
                return cls._read(path)
        return cls([])

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> Ignore:
        """Patterns as lines of an ignore file (comments and blank lines are skipped)."""
        return cls(_patterns(enumerate(patterns, 1), ""))

    @classmethod
    def _read(cls, path: str) -> Ignore:
        text = _read_text(path)
        if text.startswith("\ufeff"):
            text = text[1:]
        return cls(_patterns(enumerate(text.split("\n"), 1), path), path)

    @property
    def empty(self) -> bool:
        return not self.patterns

    def ignored(self, rel: str) -> bool:
        """Whether the path (``/``-separated, relative to the context) is excluded."""
        path = _normal(rel)
        if not path or not self.patterns:
            return False
        parents = _parents(path)
        matched = False
        for pattern in self.patterns:
            # Only a pattern that would change the outcome needs matching: the last one wins.
            if pattern.exclusion == matched and pattern.matches_or_parent(path, parents):
                matched = not pattern.exclusion
        return matched

    def may_include_under(self, rel_dir: str) -> bool:
        """False only when nothing below the directory can be included again by a ``!``.

        So a walker may skip an ignored directory for which this is False. What decides a path
        below it is the last pattern matching it; the directory's own last match excludes
        everything below, unless an exception after it matches something below.
        """
        path = _normal(rel_dir)
        if not path:
            return True
        parents = _parents(path)
        last = -1
        for k, pattern in enumerate(self.patterns):
            if pattern.matches_or_parent(path, parents):
                last = k
        if last < 0 or self.patterns[last].exclusion:
            return True  # not ignored itself
        later = self.patterns[last + 1 :]
        return any(p.exclusion and p.may_match_below(path) for p in later)


def _patterns(lines: Iterable[tuple[int, str]], source: str) -> list[_Pattern]:
    """Patterns from numbered lines, as ReadAll then patternmatcher.New prepare them."""
    out = []
    for number, line in lines:
        if line.startswith("#"):
            continue
        text = line.strip()
        if not text:
            continue
        where = f"{source}:{number}: " if source else ""
        exclusion = text.startswith("!")
        if exclusion:
            text = text[1:].strip()
            if not text:
                raise UsageError(f"{where}a '!' without a pattern", "write !PATTERN")
        text = clean(text)
        if len(text) > 1 and text.startswith("/"):
            text = text[1:]
        out.append(_Pattern(text, exclusion, where))
    return out


def _read_text(path: str) -> str:
    """An ignore file's text; refused if it is not a regular file, too large or binary."""
    try:
        # O_NONBLOCK: a FIFO named .dockerignore must not hang the build.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"{path}: cannot read the ignore file: {e.strerror}", None) from None
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{path}: the ignore file is not a regular file", "make it a file")
        data = read_bounded(fd, MAX_SIZE)
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise UsageError(f"{path}: the ignore file is larger than 1 MiB", "is it a text file?")
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise UsageError(f"{path}:{line}: a NUL byte in the ignore file", "is it a text file?")
    # Paths are bytes on Linux and os.fsdecode()d for matching; decode the patterns the same way.
    return data.decode("utf-8", "surrogateescape")
