"""Containerfiles (Dockerfiles): parsing, and Docker's variable substitution.

:func:`parse` reads the text the way BuildKit does (``frontend/dockerfile/parser`` and
``instructions``): parser directives, comments, line continuations, heredocs, exec (JSON) and
shell forms, ``--flags``, stages. Nothing is substituted then: :func:`expand`,
:func:`expand_words` and :func:`key_values` do that once the builder knows the step's ARG and
ENV values, with the rules of BuildKit's ``shell/lex.go``.

Every mistake in a Containerfile is a :class:`~tophan.errors.UsageError` whose message begins
with ``path:line:``. Hostile text (huge lines, NUL bytes, deep nesting) is refused the same
way, quickly: nothing here recurses without a bound or backtracks without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tophan.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

# Limits on what a Containerfile may hold, far beyond any real one, so that absurd input is
# refused in about a second rather than parsed for a minute. Docker refuses a physical line
# over 64 KiB; an instruction of 1 MiB keeps every later use of its text (history, cache
# keys, argv) small; and no image can stack anywhere near 10,000 layers.
MAX_FILE = 4 << 20
MAX_INSTRUCTION = 1 << 20
MAX_INSTRUCTIONS = 10_000
# `${A:-${B:-...}}` nests; past this depth the expression is refused (Python's own recursion
# limit is far away: a level costs four frames).
MAX_NESTING = 64

KEYWORDS = frozenset(
    [
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ]
)
# The flags tophan supports, all of the --name=value kind.
FLAGS: dict[str, tuple[str, ...]] = {
    "FROM": ("platform",),
    "COPY": ("from", "chown", "chmod"),
    "ADD": ("chown", "chmod", "checksum"),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "start-interval", "retries"),
}
# Flags Docker has and tophan refuses, with what to do instead.
_REFUSED_FLAGS = {
    ("RUN", "mount"): "copy what the step needs into the image with COPY instead",
    ("RUN", "network"): "choose the network for the whole build with tophan build --network",
    ("RUN", "security"): "RUN steps run with tophan's default isolation",
    ("RUN", "device"): "RUN steps get no extra devices",
    ("COPY", "link"): "remove --link: the files are copied the same without it",
    ("ADD", "link"): "remove --link: the files are added the same without it",
    ("COPY", "parents"): "copy each directory to its destination in a COPY of its own",
    ("COPY", "exclude"): "name the files to copy, or list the others in .containerignore",
    ("ADD", "exclude"): "name the files to add, or list the others in .containerignore",
    ("ADD", "keep-git-dir"): "git sources are not supported: clone in a RUN step instead",
    ("ADD", "unpack"): "ADD unpacks a local archive by itself; COPY copies it as it is",
}
_JSON_FORMS = frozenset({"CMD", "ENTRYPOINT", "RUN", "SHELL", "COPY", "ADD", "VOLUME"})
_HEREDOC_FORMS = frozenset({"RUN", "COPY", "ADD"})
_SPLIT_FORMS = frozenset({"FROM", "EXPOSE", "COPY", "ADD", "VOLUME"})
_DIRECTIVES = frozenset({"escape", "syntax", "check"})

# Go's unicode.IsSpace, the whitespace of BuildKit's trimming and word splitting.
_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
_SPACE += "\u2028\u2029\u202f\u205f\u3000"
_SPACE_CLASS = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# BuildKit splits an instruction from its arguments (and the old `ENV k v` form) on these.
_BLANKS = r"[\t\v\f\r ]+"

_REGEX: dict[str, re.Pattern[str]] = {}


def _re(pattern: str) -> re.Pattern[str]:
    """Compile on first use, so importing this module compiles nothing."""
    rx = _REGEX.get(pattern)
    if rx is None:
        rx = _REGEX[pattern] = re.compile(pattern, re.DOTALL)
    return rx


# --- The parsed file --------------------------------------------------------------------------


@dataclass
class Heredoc:
    """A here-document of a RUN, COPY or ADD: ``<<EOF`` … ``EOF``."""

    name: str  # the delimiter word, quotes removed
    content: str  # the body lines, each ending with "\n"
    expand: bool  # the delimiter was unquoted: variables in the body are expanded
    chomp: bool  # "<<-": leading tabs were stripped from the body lines (already done)


@dataclass
class Instruction:
    keyword: str  # upper case
    flags: list[tuple[str, str]]  # leading --name=value flags, in order, name without "--"
    rest: str  # the arguments after the flags, continuation lines joined, not substituted
    json: list[str] | None  # the exec form's strings (HEALTHCHECK: those after CMD)
    heredocs: list[Heredoc]
    line: int  # 1-based, where the instruction starts
    path: str

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def flag(self, name: str) -> str | None:
        value = None
        for key, v in self.flags:
            if key == name:
                value = v
        return value

    def text(self) -> str:
        """The instruction on one line, as ``STEP n/m:`` and the history show it."""
        parts = [self.keyword, *(f"--{k}={v}" for k, v in self.flags)]
        if self.rest:
            parts.append(self.rest)
        return " ".join(parts)

    def heredoc(self, word: str) -> Heredoc | None:
        """The heredoc a word such as ``<<EOF`` or ``<<-"EOF"`` of ``rest`` introduces.

        For ``COPY <<EOF /dest``: the builder finds the source's content this way.
        """
        spec = _heredoc_spec(word)
        if spec is None:
            return None
        # By name, the last of that name winning, as BuildKit looks them up.
        return next((h for h in reversed(self.heredocs) if h.name == spec[0]), None)


@dataclass
class Stage:
    index: int
    name: str | None  # lower case, as Docker compares stage names
    base: str  # the FROM image word, not substituted
    platform: str | None
    instructions: list[Instruction]
    line: int
    source: Instruction  # the FROM itself


@dataclass
class Containerfile:
    path: str
    meta_args: list[Instruction]  # the ARGs before the first FROM
    stages: list[Stage]
    escape: str  # "\\" or "`"

    def stage(self, ref: str) -> Stage | None:
        """A stage by name (any case) or by its decimal index, as ``--from``/``--target`` say."""
        if ref.isascii() and ref.isdigit():
            index = int(ref)
            return self.stages[index] if index < len(self.stages) else None
        return next((s for s in self.stages if s.name == ref.lower()), None)


# --- Parsing ----------------------------------------------------------------------------------


def parse(text: str, path: str = "Containerfile") -> Containerfile:
    """Parse a Containerfile's text; ``path`` names it in errors."""
    _check_text(text, path)
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    escape = _directives(lines, path)
    instructions = _Reader(lines, escape, path).read()
    return _assemble(instructions, escape, path)


def _check_text(text: str, path: str) -> None:
    if len(text) > MAX_FILE:
        raise UsageError(
            f"{path}:1: the Containerfile is larger than {MAX_FILE >> 20} MiB",
            "keep data in the build context and COPY it",
        )
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise UsageError(f"{path}:{line}: a NUL byte in the Containerfile", "is it a text file?")
    try:
        text.encode()
    except UnicodeEncodeError as e:
        line = text.count("\n", 0, e.start) + 1
        raise UsageError(f"{path}:{line}: the Containerfile is not valid UTF-8", None) from None


def _directives(lines: list[str], path: str) -> str:
    """The escape character, from the parser directives at the top of the file.

    Directives are comments of the form ``# key=value`` before anything else; the first line
    that is not one (a comment, a blank line, an instruction, an unknown key) ends them.
    """
    escape = "\\"
    seen: set[str] = set()
    rx = _re(r"#[\t\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\f\r ]*=[\t\f\r ]*(.+?)[\t\f\r ]*")
    for number, line in enumerate(lines, 1):
        m = rx.fullmatch(line.rstrip("\r\n").lstrip(_SPACE))
        key = m.group(1).lower() if m else ""
        if key not in _DIRECTIVES:
            break
        if key in seen:
            raise UsageError(f"{path}:{number}: a second '{key}' parser directive", "keep one")
        seen.add(key)
        if key == "escape":
            escape = m.group(2) if m else escape
            if escape not in ("\\", "`"):
                raise UsageError(
                    f"{path}:{number}: invalid escape character {escape!r}",
                    "write '# escape=\\' or '# escape=`'",
                )
    return escape


def _ends_continued(line: str, escape: str) -> tuple[str, bool]:
    """``line`` without a trailing escape character (and blanks after it), and whether it had one.

    As BuildKit: an escape character preceded by another one is not a continuation.
    """
    t = line.rstrip(" \t")
    if t.endswith(escape) and (len(t) == 1 or t[-2] != escape):
        return t[:-1], True
    return line, False


class _Reader:
    """Walks the physical lines, producing instructions with their heredoc bodies."""

    def __init__(self, lines: list[str], escape: str, path: str) -> None:
        self.lines = lines
        self.escape = escape
        self.path = path
        self.i = 0

    def read(self) -> list[Instruction]:
        out: list[Instruction] = []
        while True:
            logical = self._logical()
            if logical is None:
                return out
            text, line = logical
            if len(out) == MAX_INSTRUCTIONS:
                raise UsageError(
                    f"{self.path}:{line}: more than {MAX_INSTRUCTIONS} instructions",
                    "split the build into several images",
                )
            inst = _instruction(text, line, self.path, self.escape)
            if inst.keyword in _HEREDOC_FORMS and inst.json is None:
                for name, chomp, expand in _heredoc_specs(inst.rest):
                    inst.heredocs.append(self._heredoc(name, chomp, expand, line))
            out.append(inst)

    def _logical(self) -> tuple[str, int] | None:
        """The next instruction's text with continuations joined, and its first line."""
        lines = self.lines
        while self.i < len(lines):
            start = self.i + 1
            first = lines[self.i]
            self.i += 1
            if not first or first[0] == "#":
                continue  # the common blank and comment lines, quickly
            first = first.rstrip("\r").lstrip(_SPACE)
            if first.startswith("#"):
                continue  # a comment, or a parser directive already read
            body, more = _ends_continued(first, self.escape)
            if more or body:
                return self._join(body, more, start), start
        return None

    def _join(self, body: str, more: bool, start: int) -> str:
        parts = [body]
        size = len(body)
        while more and self.i < len(self.lines):
            raw = self.lines[self.i].rstrip("\r")
            self.i += 1
            stripped = raw.lstrip(_SPACE)
            # Docker drops comment lines and (with a warning) empty lines inside a continuation.
            if not stripped or stripped.startswith("#"):
                continue
            body, more = _ends_continued(raw, self.escape)
            parts.append(body)
            size += len(body)
            if size > MAX_INSTRUCTION:
                break
        if size > MAX_INSTRUCTION:
            raise UsageError(
                f"{self.path}:{start}: the instruction is longer than {MAX_INSTRUCTION >> 20} MiB",
                "keep data in the build context and COPY it",
            )
        return "".join(parts)

    def _heredoc(self, name: str, chomp: bool, expand: bool, start: int) -> Heredoc:
        body: list[str] = []
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            self.i += 1
            line = raw.lstrip("\t") if chomp else raw
            if line.rstrip("\r") == name:
                return Heredoc(name, "".join(body), expand, chomp)
            body.append(line + "\n")
        raise UsageError(
            f"{self.path}:{start}: the here-document <<{name} has no end",
            f"end it with a line holding just {name}",
        )


def _instruction(text: str, line: int, path: str, escape: str) -> Instruction:
    s = text.strip(_SPACE)
    m = _re(_BLANKS).search(s)
    word, rest = (s[: m.start()], s[m.end() :]) if m else (s, "")
    keyword = word.upper() if word.isascii() else word
    where = f"{path}:{line}"
    if keyword not in KEYWORDS:
        raise UsageError(
            f"{where}: unknown instruction {_excerpt(word)}",
            "is the line before missing its line continuation?"
            if word.islower()
            else "instructions are FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, CMD, …",
        )
    if keyword == "ONBUILD":
        raise UsageError(
            f"{where}: ONBUILD is not supported by tophan",
            "put those instructions in the Containerfiles that build FROM this image",
        )
    words, rest = _split_flags(rest)
    inst = Instruction(
        keyword, _flags(keyword, words, where), rest.strip(_SPACE), None, [], line, path
    )
    _CHECKS.get(keyword, _needs_arguments)(inst, escape)
    return inst


# --- Flags ------------------------------------------------------------------------------------


def _split_flags(line: str) -> tuple[list[str], str]:
    """The leading ``--flag`` words (quotes removed) and the text after them.

    BuildKit's extractBuilderFlags: flags end at the first word not starting with ``--``, or
    after a ``--`` word; ``\\`` escapes and quotes work inside a flag word.
    """
    words: list[str] = []
    i = 0
    while True:
        i = _skip(line, i, " \t\n\v\f\r")
        if not line.startswith("--", i):
            return words, line[i:]
        word, i = _flag_word(line, i)
        if word == "--":
            return words, line[i:]
        words.append(word)


def _skip(s: str, i: int, chars: str) -> int:
    while i < len(s) and s[i] in chars:
        i += 1
    return i


def _flag_word(line: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    special = _re(r"[\t\n\v\f\r '\"\\]")
    while i < len(line):
        m = special.search(line, i)
        j = m.start() if m else len(line)
        out.append(line[i:j])
        i = j
        if i == len(line) or line[i] in " \t\n\v\f\r":
            break
        if line[i] == "\\":
            out.append(line[i + 1 : i + 2])
            i += 2
        else:
            i = _flag_quoted(line, i + 1, line[i], out)
    return "".join(out), min(i, len(line))


def _flag_quoted(line: str, i: int, quote: str, out: list[str]) -> int:
    """Append the quoted text from ``i`` (``\\`` escapes even in '...'); return where it ends."""
    special = _re("['\\\\]" if quote == "'" else '["\\\\]')
    while True:
        m = special.search(line, i)
        if m is None:
            out.append(line[i:])
            return len(line)
        out.append(line[i : m.start()])
        if line[m.start()] == quote:
            return m.end()
        out.append(line[m.end() : m.end() + 1])
        i = m.end() + 1


def _flags(keyword: str, words: list[str], where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    allowed = FLAGS.get(keyword, ())
    for word in words:
        name, eq, value = word[2:].partition("=")
        refused = _REFUSED_FLAGS.get((keyword, name))
        if refused:
            raise UsageError(f"{where}: {keyword} --{name} is not supported by tophan", refused)
        if name not in allowed:
            takes = ", ".join(f"--{f}" for f in allowed) if allowed else "no flags"
            if keyword in ("RUN", "CMD", "ENTRYPOINT"):
                takes += "; a command starting with -- needs the JSON form"
            shown = name if len(name) <= 40 else name[:40] + "…"
            raise UsageError(
                f"{where}: unknown flag --{shown} for {keyword}", f"{keyword} takes {takes}"
            )
        if not eq:
            raise UsageError(f"{where}: the flag --{name} needs a value", f"write --{name}=VALUE")
        if any(n == name for n, _ in out):
            raise UsageError(f"{where}: the flag --{name} is given twice", "keep one")
        out.append((name, value))
    return out


# --- Per-instruction checks -------------------------------------------------------------------


def _fail(inst: Instruction, what: str, hint: str | None = None) -> UsageError:
    return UsageError(f"{inst.where()}: {what}", hint)


def _needs_arguments(inst: Instruction, escape: str) -> None:
    if not inst.rest:
        raise _fail(inst, f"{inst.keyword} needs an argument", _USAGE.get(inst.keyword))


def _check_from(inst: Instruction, escape: str) -> None:
    from_parts(inst)


def from_parts(inst: Instruction) -> tuple[str, str | None]:
    """A FROM's image word and stage name (lower case), checked as Docker checks them."""
    args = _re(_BLANKS).split(inst.rest) if inst.rest else []
    if len(args) == 1:
        return args[0], None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _re(r"[a-z][a-z0-9_.-]*").fullmatch(name):
            raise _fail(
                inst,
                f"invalid stage name {_excerpt(args[2])}",
                "a stage name starts with a letter, then letters, digits, '-', '_' or '.'",
            )
        return args[0], name
    if not args:
        raise _fail(inst, "FROM needs an image", _USAGE["FROM"])
    if len(args) == 2 and args[1].lower() == "as":
        raise _fail(inst, "FROM … AS needs a stage name", _USAGE["FROM"])
    raise _fail(inst, "FROM takes an image and an optional AS name", _USAGE["FROM"])


def _check_arg(inst: Instruction, escape: str) -> None:
    words = _raw_words(inst.rest, escape)
    if not words:
        raise _fail(inst, "ARG needs a name", _USAGE["ARG"])
    for word in words:
        if word.startswith("="):
            raise _fail(inst, f"ARG {_excerpt(word)} has no name", _USAGE["ARG"])


def _check_key_values(inst: Instruction, escape: str) -> None:
    _raw_pairs(inst, escape)


def _check_exec(inst: Instruction, escape: str) -> None:
    inst.json = _maybe_json(inst, inst.rest)
    if inst.keyword == "RUN" and not (inst.json if inst.json is not None else inst.rest):
        raise _fail(inst, "RUN needs a command", _USAGE["RUN"])


def _check_shell(inst: Instruction, escape: str) -> None:
    inst.json = _maybe_json(inst, inst.rest)
    if not inst.json:
        raise _fail(inst, "SHELL takes the JSON form with at least one string", _USAGE["SHELL"])


def _check_copy(inst: Instruction, escape: str) -> None:
    inst.json = _maybe_json(inst, inst.rest)
    args = arguments(inst)
    if len(args) < 2:
        raise _fail(inst, f"{inst.keyword} needs a source and a destination", _USAGE[inst.keyword])
    if inst.json is None and _heredoc_spec(args[-1]):
        raise _fail(inst, f"a here-document cannot be the destination of {inst.keyword}")
    if inst.keyword == "ADD":
        for src in args[:-1]:
            if is_git_url(src):
                raise _fail(
                    inst,
                    f"ADD of a git repository ({_excerpt(src)}) is not supported by tophan",
                    "clone it in a RUN step, or COPY a checkout from the context",
                )


def _check_volume(inst: Instruction, escape: str) -> None:
    inst.json = _maybe_json(inst, inst.rest)
    args = arguments(inst)
    if not args:
        raise _fail(inst, "VOLUME needs a path", _USAGE["VOLUME"])
    if any(not a.strip(_SPACE) for a in args):
        raise _fail(inst, "VOLUME cannot be an empty string", _USAGE["VOLUME"])


def _check_healthcheck(inst: Instruction, escape: str) -> None:
    kind, command = _healthcheck_split(inst)
    if kind == "NONE":
        if command:
            raise _fail(inst, "HEALTHCHECK NONE takes no arguments")
        return
    if kind != "CMD":
        raise _fail(inst, f"unknown HEALTHCHECK type {_excerpt(kind)}", _USAGE["HEALTHCHECK"])
    inst.json = _maybe_json(inst, command)
    if not (inst.json if inst.json is not None else command):
        raise _fail(inst, "HEALTHCHECK CMD needs a command", _USAGE["HEALTHCHECK"])
    for name, value in inst.flags:
        if name == "retries":
            if not _re(r"[+-]?[0-9]{1,10}").fullmatch(value) or not 1 <= int(value) < 1 << 31:
                raise _fail(inst, f"--retries={_excerpt(value)} is not a count of 1 or more")
        else:
            duration_ns(value, where=f"{inst.where()}: --{name}")


def _healthcheck_split(inst: Instruction) -> tuple[str, str]:
    if not inst.rest:
        raise _fail(inst, "HEALTHCHECK needs CMD or NONE", _USAGE["HEALTHCHECK"])
    m = _re(r"[" + _SPACE_CLASS + "]+").search(inst.rest)
    kind, command = (inst.rest[: m.start()], inst.rest[m.end() :]) if m else (inst.rest, "")
    return kind.upper(), command


def _needs_nothing(inst: Instruction, escape: str) -> None:
    inst.json = _maybe_json(inst, inst.rest)


_USAGE = {
    "FROM": "write FROM IMAGE [AS NAME]",
    "ARG": "write ARG NAME or ARG NAME=DEFAULT",
    "ENV": "write ENV NAME=VALUE …",
    "LABEL": "write LABEL KEY=VALUE …",
    "RUN": 'write RUN COMMAND, RUN ["EXE", "ARG"] or RUN <<EOF',
    "SHELL": 'write SHELL ["/bin/sh", "-c"]',
    "COPY": "write COPY SRC… DEST",
    "ADD": "write ADD SRC… DEST",
    "VOLUME": "write VOLUME /PATH …",
    "HEALTHCHECK": "write HEALTHCHECK [--interval=…] CMD COMMAND, or HEALTHCHECK NONE",
    "WORKDIR": "write WORKDIR /PATH",
    "USER": "write USER NAME[:GROUP]",
    "EXPOSE": "write EXPOSE PORT[/PROTO] …",
    "STOPSIGNAL": "write STOPSIGNAL SIGTERM (or a number)",
    "MAINTAINER": "write MAINTAINER NAME (or better, LABEL maintainer=NAME)",
}

_CHECKS = {
    "FROM": _check_from,
    "ARG": _check_arg,
    "ENV": _check_key_values,
    "LABEL": _check_key_values,
    "RUN": _check_exec,
    "CMD": _needs_nothing,
    "ENTRYPOINT": _needs_nothing,
    "SHELL": _check_shell,
    "COPY": _check_copy,
    "ADD": _check_copy,
    "VOLUME": _check_volume,
    "HEALTHCHECK": _check_healthcheck,
}


def _maybe_json(inst: Instruction, text: str) -> list[str] | None:
    """The exec form's strings, or None for the shell form.

    As Docker: text that starts with ``[`` but is not valid JSON is the shell form; a valid
    JSON array of anything but strings is an error.
    """
    text = text.lstrip(_SPACE)
    if not text.startswith("["):
        return None
    import json

    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(inst, "the JSON form must be an array of strings", _USAGE.get(inst.keyword))
    if any("\0" in v for v in value):
        raise _fail(inst, "a NUL character in the JSON form")
    # Go's decoder makes a lone UTF-16 surrogate (\ud800) U+FFFD; keep argv encodable.
    return [v if v.isascii() else _re("[\ud800-\udfff]").sub("\ufffd", v) for v in value]


def _no_constant(name: str) -> None:
    raise ValueError(name)  # NaN and Infinity are not JSON to Go either


def arguments(inst: Instruction) -> list[str]:
    """The instruction's argument words, not substituted.

    The exec form's strings; for FROM, EXPOSE, COPY, ADD and VOLUME the rest split on blanks
    (as Docker does, quotes do not group: a path with a space needs the JSON form); otherwise
    the whole rest as one word (none if empty). Expand each with :func:`expand` (EXPOSE:
    :func:`expand_words`).
    """
    if inst.json is not None:
        return list(inst.json)
    if not inst.rest:
        return []
    if inst.keyword in _SPLIT_FORMS:
        return _re(_BLANKS).split(inst.rest)
    return [inst.rest]


def is_git_url(source: str) -> bool:
    """Whether an ADD source names a git repository (which tophan refuses), as Docker tells."""
    if source.startswith(("git://", "git@", "ssh://", "github.com/")):
        return True
    if source.startswith(("http://", "https://")):
        path = source.split("#", 1)[0].split("?", 1)[0]
        return path.endswith(".git")
    return False


# --- Heredocs ---------------------------------------------------------------------------------


def _heredoc_specs(rest: str) -> list[tuple[str, bool, bool]]:
    """(name, chomp, expand) of each heredoc word (``<<EOF``, ``<<-'EOF'``) in ``rest``.

    As BuildKit's lexer: ``<<`` (or ``<<-``) and blanks after it join the next word
    (``<< EOF``); a line whose quotes do not close has no heredocs.
    """
    words = _raw_words(rest, "\\")
    if words and not _unquote(words[-1])[2]:
        return []
    specs = []
    joined = ""
    for word in words:
        word = f"{joined} {word}" if joined else word
        joined = word if _re(r"[0-9]*<<-?").fullmatch(word) else ""
        spec = None if joined else _heredoc_spec(word)
        if spec:
            specs.append(spec)
    return specs


def _heredoc_spec(word: str) -> tuple[str, bool, bool] | None:
    # As BuildKit: an optional fd number, <<, an optional -, blanks, then one non-empty word.
    m = _re(r"([0-9]*)<<(-?)[\t\n\v\f\r ]*([^<]*)").fullmatch(word)
    if not m or len(_raw_words(m.group(3), "\\")) != 1:
        return None
    name, quoted, _ = _unquote(m.group(3))
    if not name:
        return None
    return name, m.group(2) == "-", not quoted


def _unquote(word: str) -> tuple[str, bool, bool]:
    """A raw word with quotes removed and ``\\`` escapes resolved; whether it had quotes, and
    whether they all closed."""
    out = []
    quoted = False
    i = 0
    while i < len(word):
        c = word[i]
        if c == "\\":
            out.append(word[i + 1 : i + 2])
            i += 2
        elif c == "'" or c == '"':
            quoted = True
            j = _quote_end(word, i, "\\")
            if j is None:
                return "", True, False
            inner = word[i + 1 : j - 1]
            out.append(inner if c == "'" else _re(r'\\(["$\\])').sub(r"\1", inner))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out), quoted, True


# --- Stages -----------------------------------------------------------------------------------


def _assemble(instructions: list[Instruction], escape: str, path: str) -> Containerfile:
    cf = Containerfile(path, [], [], escape)
    names: dict[str, Stage] = {}
    for inst in instructions:
        if inst.keyword == "FROM":
            _add_stage(cf, inst, names)
        elif cf.stages:
            cf.stages[-1].instructions.append(inst)
        elif inst.keyword == "ARG":
            cf.meta_args.append(inst)
        else:
            raise _fail(
                inst, f"{inst.keyword} before the first FROM", "only ARG may come before FROM"
            )
    if not cf.stages:
        line = instructions[-1].line if instructions else 1
        raise UsageError(
            f"{path}:{line}: no FROM instruction", "a Containerfile builds FROM an image"
        )
    return cf


def _add_stage(cf: Containerfile, inst: Instruction, names: dict[str, Stage]) -> None:
    base, name = from_parts(inst)
    if name is not None and name in names:
        first = names[name].line
        raise _fail(
            inst, f"a second stage named {name!r} (the first is at line {first})", "rename one"
        )
    stage = Stage(len(cf.stages), name, base, inst.flag("platform"), [], inst.line, inst)
    cf.stages.append(stage)
    if name is not None:
        names[name] = stage


# --- Words, keys and values -------------------------------------------------------------------


def _raw_words(text: str, escape: str) -> list[str]:
    """``text`` split on unquoted whitespace, quotes and escapes kept (BuildKit's parseWords)."""
    words = []
    cur: list[str] = []
    blank_ok = False  # a word that was "" still counts
    special = _re(f"[{_SPACE_CLASS}'\"{re.escape(escape)}]")
    i, n = 0, len(text)
    while i < n:
        m = special.search(text, i)
        j = m.start() if m else n
        cur.append(text[i:j])
        i = j
        if i == n:
            break
        c = text[i]
        if c == escape:
            cur.append(text[i : i + 2] if i + 1 < n else "")
            i += 2
        elif c == "'" or c == '"':
            j = _closing_quote(text, i, escape)
            cur.append(text[i:j])
            blank_ok = True
            i = j
        else:
            if blank_ok or any(cur):
                words.append("".join(cur))
            cur, blank_ok = [], False
            blanks = _re(f"[{_SPACE_CLASS}]+").match(text, i)
            i = blanks.end() if blanks else i + 1
    if blank_ok or any(cur):
        words.append("".join(cur))
    return words


def _closing_quote(text: str, i: int, escape: str) -> int:
    """The index just past the quote closing the one at ``i`` (or the end of ``text``)."""
    end = _quote_end(text, i, escape)
    return len(text) if end is None else end


def _quote_end(text: str, i: int, escape: str) -> int | None:
    """The index just past the quote closing the one at ``i``; None if it never closes.

    The escape character escapes inside double quotes, not inside single ones.
    """
    quote = text[i]
    if quote == "'":
        j = text.find("'", i + 1)
        return None if j < 0 else j + 1
    special = _re(f'["{re.escape(escape)}]')
    i += 1
    while True:
        m = special.search(text, i)
        if m is None:
            return None
        if text[m.start()] == '"':
            return m.end()
        i = m.start() + 2


def _raw_pairs(inst: Instruction, escape: str) -> list[tuple[str, str]]:
    """ENV's and LABEL's (key, value) words before substitution, checked as Docker does."""
    kw = inst.keyword
    words = _raw_words(inst.rest, escape)
    if not words:
        raise _fail(inst, f"{kw} needs a name=value", _USAGE[kw])
    if "=" not in words[0]:
        # The old "ENV name value …" form: one pair, the value is the rest of the line.
        parts = _re(_BLANKS).split(inst.rest, maxsplit=1)
        if len(parts) < 2:
            raise _fail(inst, f"{kw} {_excerpt(parts[0])} needs a value", _USAGE[kw])
        return [(parts[0], parts[1])]
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise _fail(
                inst,
                f"{kw}: {_excerpt(word)} has no '='",
                "write NAME=VALUE; quote a value with spaces",
            )
        if not key:
            raise _fail(inst, f"{kw}: a name is empty in {_excerpt(word)}", _USAGE[kw])
        pairs.append((key, value))
    return pairs


def key_values(
    inst: Instruction, env: Mapping[str, str], escape: str = "\\"
) -> list[tuple[str, str | None]]:
    """The (name, value) pairs of an ENV, LABEL, ARG or MAINTAINER, substituted from ``env``.

    Every pair sees ``env`` as it was before the instruction (``ENV a=1 b=$a`` takes the old
    ``a``). ARG gives ``None`` for a name without a default. MAINTAINER (deprecated) gives
    ``("maintainer", text)``, unsubstituted as in Docker, where it sets the image's author.
    """
    where = inst.where()
    if inst.keyword == "MAINTAINER":
        return [("maintainer", inst.rest)]
    out: list[tuple[str, str | None]] = []
    if inst.keyword == "ARG":
        for word in _raw_words(inst.rest, escape):
            key, eq, value = word.partition("=")
            out.append(
                (
                    expand(key, env, escape, where=where),
                    expand(value, env, escape, where=where) if eq else None,
                )
            )
    elif inst.keyword in ("ENV", "LABEL"):
        for key, value in _raw_pairs(inst, escape):
            out.append(
                (expand(key, env, escape, where=where), expand(value, env, escape, where=where))
            )
    else:
        raise ValueError(f"key_values of {inst.keyword}")
    for key, _ in out:
        if not key or (inst.keyword != "LABEL" and "=" in key):
            raise _fail(inst, f"invalid {inst.keyword} name {_excerpt(key)}", _USAGE[inst.keyword])
    return out


# --- Commands ---------------------------------------------------------------------------------


def shell_or_exec(inst: Instruction, shell: list[str]) -> list[str]:
    """The argv a RUN, CMD or ENTRYPOINT runs, ``shell`` being the stage's SHELL.

    The exec form is its strings; the shell form is ``shell + [rest]`` (the shell substitutes).
    A RUN with heredocs, as BuildKit does it:

    - ``RUN <<EOF`` alone runs the body as the shell's script, ``shell + [body]``; a body
      starting with ``#!`` is run by its interpreter instead, fed through ``/dev/fd/3`` (Docker
      writes it to a file under ``/dev/pipes``: the script sees another path, nothing else
      differs);
    - a command with heredocs (``RUN python3 <<EOF``, several, ``<<-``, quoted delimiters)
      hands the shell the command followed by each body and delimiter, so the shell's own
      heredoc rules apply: an unquoted delimiter expands the body, a quoted one does not.
    """
    if inst.json is not None:
        return list(inst.json)
    if inst.keyword == "RUN" and inst.heredocs:
        if _heredoc_spec(inst.rest):
            body = inst.heredocs[0].content
            return [*shell, _shebang_script(body) if body.startswith("#!") else body]
        script = inst.rest + "".join(f"\n{h.content}{h.name}" for h in inst.heredocs)
        return [*shell, script + "\n"]
    return [*shell, inst.rest]


def _shebang_script(body: str) -> str:
    """A shell script running ``body`` with its ``#!`` interpreter, as the kernel would."""
    # Linux: the interpreter is the first word after #!, the rest of the line one argument.
    first = body.split("\n", 1)[0][2:].strip(" \t\r")
    words = _re(r"[ \t]+").split(first, maxsplit=1)
    lines = set(body.split("\n"))
    end = "TOPHAN_SCRIPT_END"
    while end in lines:
        end += "_"
    argv = " ".join(_shell_quote(w) for w in words)
    return f"exec {argv} /dev/fd/3 3<<'{end}'\n{body}{end}\n"


def _shell_quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def healthcheck_test(inst: Instruction) -> list[str]:
    """A HEALTHCHECK's test as the image config holds it: NONE, CMD … or CMD-SHELL …."""
    kind, command = _healthcheck_split(inst)
    if kind == "NONE":
        return ["NONE"]
    if inst.json is not None:
        return ["CMD", *inst.json]
    return ["CMD-SHELL", command]


def duration_ns(text: str, *, where: str = "") -> int:
    """Nanoseconds of a HEALTHCHECK duration (Go's ParseDuration: ``30s``, ``1m30s``), ≥ 1ms."""
    from tophan._internal.units import parse_duration_ns

    prefix = f"{where}: " if where else ""
    hint = "write a duration of 1ms or more, with its unit: 30s, 1m30s, 500ms"
    if not _re(r"[+-]?[0-9.]*[a-zµμ]+(?:[0-9.]+[a-zµμ]+)*").fullmatch(text):
        raise UsageError(f"{prefix}invalid duration {_excerpt(text)}", hint)
    try:
        ns = parse_duration_ns(text.lstrip("+"), "duration")
    except UsageError:
        raise UsageError(f"{prefix}invalid duration {_excerpt(text)}", hint) from None
    if ns < 10**6:
        raise UsageError(f"{prefix}duration {_excerpt(text)} is shorter than 1ms", hint)
    return ns


def _excerpt(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error message, cut short: hostile input can be a megabyte."""
    if len(text) > limit:
        return repr(text[:limit]) + "…"
    return repr(text)


# --- Substitution (BuildKit's shell/lex.go) ---------------------------------------------------


def expand(word: str, env: Mapping[str, str], escape: str = "\\", *, where: str = "") -> str:
    """``word`` with variables substituted, quotes removed and escapes resolved (ProcessWord).

    ``$V``, ``${V}``, ``${V:-w}``, ``${V-w}``, ``${V:+w}``, ``${V+w}``, ``${V:?msg}``,
    ``${V?msg}``, ``${V#pat}``, ``${V##pat}``, ``${V%pat}``, ``${V%%pat}``, ``${V/pat/r}``,
    ``${V//pat/r}``; an unset variable is empty; single quotes are literal. ``where``
    (``path:line``) begins error messages.
    """
    special = _SPECIAL.get(escape)
    if special and not _re(special).search(word):
        return word  # nothing to substitute, unquote or unescape: the common case, quickly
    return _Lexer(word, env, escape, where).run(None)


def expand_words(
    text: str, env: Mapping[str, str], escape: str = "\\", *, where: str = ""
) -> list[str]:
    """``text`` substituted and split on unquoted whitespace (ProcessWords).

    Whitespace in an unquoted variable's value splits too, and a word left empty disappears.
    """
    words = _Words()
    _Lexer(text, env, escape, where).run(words)
    return words.done()


def expand_heredoc(
    content: str, env: Mapping[str, str], escape: str = "\\", *, where: str = ""
) -> str:
    """A heredoc body with variables substituted, as Docker does for ``COPY <<EOF``.

    Quotes stay as they are; escapes are resolved. BuildKit uses ``\\`` here whatever the
    escape directive says, so the default is the faithful choice.
    """
    return _Lexer(content, env, escape, where, skip_quotes=True).run(None)


_SPECIAL = {"\\": r"[$'\"\\]", "`": "[$'\"`]"}


class _LexError(Exception):
    pass


class _Words:
    """ProcessWords' word building: whitespace from the text or an unquoted value splits."""

    __slots__ = ("cur", "words")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.cur: list[str] = []

    def text(self, text: str) -> None:
        parts = _re(f"[{_SPACE_CLASS}]+").split(text)
        self.cur.append(parts[0])
        if len(parts) > 1:
            self._flush()
            self.words.extend(p for p in parts[1:-1] if p)
            self.cur.append(parts[-1])

    def raw(self, text: str) -> None:
        self.cur.append(text)

    def _flush(self) -> None:
        word = "".join(self.cur)
        if word:
            self.words.append(word)
        self.cur = []

    def done(self) -> list[str]:
        self._flush()
        return self.words


class _Lexer:
    """One pass over a word: the state of lex.go's shellWord."""

    def __init__(
        self, s: str, env: Mapping[str, str], escape: str, where: str, *, skip_quotes: bool = False
    ) -> None:
        if escape not in ("\\", "`"):
            raise ValueError(f"escape character {escape!r}")
        self.s = s
        self.i = 0
        self.env = env
        self.escape = escape
        self.where = where
        self.skip_quotes = skip_quotes
        self.raw = False  # keep escape characters (in ${V#pattern} and ${V/pattern/r})
        self.depth = 0

    def run(self, words: _Words | None) -> str:
        try:
            return self._process(None, False, words)
        except _LexError as e:
            prefix = f"{self.where}: " if self.where else ""
            raise UsageError(
                f"{prefix}cannot substitute {_excerpt(self.s)}: {e}", _LEX_HINT
            ) from None

    def _plain(self, stop: str | None) -> re.Pattern[str]:
        quotes = "" if self.skip_quotes else "'\""
        return _re("[^$" + quotes + re.escape(self.escape + (stop or "")) + "]+")

    def _process(self, stop: str | None, raw: bool, words: _Words | None) -> str:
        """Up to ``stop`` (consumed) or the end: lex.go's processStopOn."""
        saved, self.raw = self.raw, raw
        try:
            return self._scan(stop, words)
        finally:
            self.raw = saved

    def _scan(self, stop: str | None, words: _Words | None) -> str:
        s, out, plain = self.s, [], self._plain(stop)
        while self.i < len(s):
            m = plain.match(s, self.i)
            if m:
                out.append(m.group())
                if words is not None:
                    words.text(m.group())
                self.i = m.end()
                if self.i == len(s):
                    break
            c = s[self.i]
            if c == stop:
                self.i += 1
                return "".join(out)
            if c == "$":
                value = self._dollar()
                if words is not None:
                    words.text(value)
            elif c == self.escape:
                value = self._escaped()
                if words is not None:
                    words.raw(value)
            else:
                value = self._single() if c == "'" else self._double()
                if words is not None:
                    words.raw(value)
            out.append(value)
        if stop is not None:
            raise _LexError(f"missing '{stop}'")
        return "".join(out)

    def _escaped(self) -> str:
        # The escape character takes the next one literally (and vanishes at the end).
        self.i += 2
        kept = self.escape if self.raw else ""
        return kept + self.s[self.i - 1 : self.i]

    def _single(self) -> str:
        end = self.s.find("'", self.i + 1)
        if end < 0:
            raise _LexError("a single quote is not closed")
        value = self.s[self.i + 1 : end]
        self.i = end + 1
        return value

    def _double(self) -> str:
        s, out = self.s, []
        plain = _re('[^"$' + re.escape(self.escape) + "]+")
        self.i += 1
        while True:
            m = plain.match(s, self.i)
            if m:
                out.append(m.group())
                self.i = m.end()
            if self.i >= len(s):
                raise _LexError("a double quote is not closed")
            c = s[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "$":
                out.append(self._dollar())
                continue
            # Inside double quotes the escape character escapes only " $ and itself.
            self.i += 1
            nxt = s[self.i : self.i + 1]
            if self.raw or nxt not in ('"', "$", self.escape):
                out.append(c)
            if nxt and nxt in ('"', "$", self.escape):
                out.append(nxt)
                self.i += 1

    def _dollar(self) -> str:
        s = self.s
        self.i += 1
        if s[self.i : self.i + 1] != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.i += 1
        if self.i >= len(s):
            raise _LexError("missing '}'")
        if s[self.i] in "{}:":
            raise _LexError("bad substitution")
        name = self._name()
        op = s[self.i : self.i + 1]
        self.i += 1
        if op == "}":
            return self.env.get(name, "")
        if op == "/":
            return self._replace(name)
        colon = op == ":"
        if colon:
            op = s[self.i : self.i + 1]
            self.i += 1
        if not op:
            raise _LexError("missing '}'")
        if op not in "+-?#%":
            raise _LexError(f"unsupported modifier ({':' if colon else ''}{op}) in ${{{name}…}}")
        word = self._nested("}", op in "#%")
        return self._modify(name, op, word, colon)

    def _name(self) -> str:
        s, i = self.s, self.i
        c = s[i : i + 1]
        if not c:
            return ""
        if c.isdecimal():
            m = _re(r"\d+").match(s, i)
        elif c in "@*#?-$!0":
            self.i += 1
            return c  # a special parameter: never set here, so empty
        else:
            m = _re(r"\w+").match(s, i)
        if not m:
            return ""
        name = m.group()
        if not name.isascii():
            # \w also takes numerics such as '²', which Go's IsLetter/IsDigit do not.
            cut = next((k for k, ch in enumerate(name) if not _name_char(ch)), len(name))
            name = name[:cut]
        self.i = i + len(name)
        return name

    def _nested(self, stop: str, raw: bool) -> str:
        if self.depth >= MAX_NESTING:
            raise _LexError(f"substitutions nested more than {MAX_NESTING} deep")
        self.depth += 1
        try:
            return self._process(stop, raw, None)
        finally:
            self.depth -= 1

    def _modify(self, name: str, op: str, word: str, colon: bool) -> str:
        value = self.env.get(name)
        unset = value is None or (colon and value == "")
        if op == "-":
            return word if unset else value or ""
        if op == "+":
            return "" if unset else word
        if op == "?":
            if value is None:
                raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
            if unset:
                raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        greedy = word.startswith(op)
        pattern = _Glob(word[1:] if greedy else word)
        return (
            pattern.trim_suffix(value or "", greedy)
            if op == "%"
            else pattern.trim_prefix(value or "", greedy)
        )

    def _replace(self, name: str) -> str:
        every = self.s[self.i : self.i + 1] == "/"
        if every:
            self.i += 1
        pattern = self._nested("/", True)
        replacement = self._nested("}", True)
        return _Glob(pattern).replace(self.env.get(name, ""), replacement, every)


_LEX_HINT = "see 'Environment replacement' in the Dockerfile reference; write \\$ for a plain $"


def _name_char(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal() or ch == "_"


class _Segment:
    """A run of a glob between two ``*``: literal characters and ``?`` (None)."""

    def __init__(self, tokens: list[str | None]) -> None:
        self.tokens = tokens
        self.size = len(tokens)
        self.text = "".join(t for t in tokens if t is not None)
        self.rx = None
        if None in tokens:
            self.rx = re.compile(
                "".join("." if t is None else re.escape(t) for t in tokens), re.DOTALL
            )

    def reversed(self) -> _Segment:
        return _Segment(self.tokens[::-1])

    def at(self, value: str, pos: int) -> bool:
        if self.rx is None:
            return value.startswith(self.text, pos)
        return self.rx.match(value, pos) is not None

    def find(self, value: str, pos: int) -> int:
        if self.rx is None:
            return value.find(self.text, pos)
        m = self.rx.search(value, pos)
        return m.start() if m else -1

    def rfind(self, value: str, pos: int) -> int:
        if self.rx is None:
            return value.rfind(self.text, pos)
        last, found = -1, self.find(value, pos)
        while found >= 0:
            last, found = found, self.find(value, found + 1)
        return last


class _Glob:
    """The pattern of ``${V#…}``, ``${V%…}``, ``${V/…/…}``: ``*``, ``?``, ``\\`` escapes.

    Matched by placing its ``*``-separated segments (find/rfind), never by a backtracking
    regular expression, so that no pattern takes more than about linear time. ``*`` and
    ``?`` match any character, newline included (as a shell's do; BuildKit's regexp stops at
    a newline).
    """

    def __init__(self, pattern: str) -> None:
        self.segments = [_Segment(tokens) for tokens in _glob_tokens(pattern)]

    def trim_prefix(self, value: str, greedy: bool) -> str:
        end = _anchored_end(self.segments, value, 0, greedy)
        return value if end is None else value[end:]

    def trim_suffix(self, value: str, greedy: bool) -> str:
        # The shortest (or longest) suffix is the prefix of the reversed value and pattern.
        segments = [s.reversed() for s in reversed(self.segments)]
        end = _anchored_end(segments, value[::-1], 0, greedy)
        return value if end is None else value[: len(value) - end]

    def replace(self, value: str, replacement: str, every: bool) -> str:
        if all(s.size == 0 for s in self.segments):
            if len(self.segments) == 1:  # the empty pattern matches between all characters
                return (
                    replacement + replacement.join(value) + replacement
                    if every
                    else replacement + value
                )
            return replacement  # only stars: the first match is the whole value
        out, pos = [], 0
        while True:
            match = self._first(value, pos)
            if match is None:
                break
            out += [value[pos : match[0]], replacement]
            pos = match[1]
            if not every:
                break
        out.append(value[pos:])
        return "".join(out)

    def _first(self, value: str, pos: int) -> tuple[int, int] | None:
        # The leftmost start is the first place the first segment fits: if the rest cannot be
        # placed after it, it cannot be placed after any later one either.
        start = self.segments[0].find(value, pos)
        if start < 0:
            return None
        end = _anchored_end(self.segments, value, start, True)
        return None if end is None else (start, end)


def _glob_tokens(pattern: str) -> list[list[str | None]]:
    segments: list[list[str | None]] = [[]]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        i += 1
        if c == "*":
            segments.append([])
        elif c == "?":
            segments[-1].append(None)
        elif c == "\\" and pattern[i : i + 1] in ("}", "/"):
            continue  # escaped only for the ${…} around it
        elif c == "\\":
            nxt = pattern[i : i + 1]
            if nxt not in ("*", "?", "\\"):
                raise _LexError(f"invalid escape '\\{nxt}' in the pattern {_excerpt(pattern)}")
            segments[-1].append(nxt)
            i += 1
        else:
            segments[-1].append(c)
    return segments


def _anchored_end(segments: list[_Segment], value: str, start: int, greedy: bool) -> int | None:
    """Where the shortest (longest) match of the glob starting at ``start`` ends, if any."""
    first = segments[0]
    if not first.at(value, start):
        return None
    pos = start + first.size
    if len(segments) == 1:
        return pos
    for segment in segments[1:-1]:
        found = segment.find(value, pos)
        if found < 0:
            return None
        pos = found + segment.size
    last = segments[-1]
    found = last.rfind(value, pos) if greedy else last.find(value, pos)
    return None if found < 0 else found + last.size
