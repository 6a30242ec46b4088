"""Version ordering by each ecosystem's own rules: dpkg (python-debian), PEP 440 (packaging),
SemVer 2.0 (semver, for npm and OSV ``SEMVER`` ranges) and apk.

apk has no maintained Python library that reads the versions Alpine really ships
(``univers``' AlpineLinuxVersion rejects ``1.2.4_git20230717-r5``), so its comparison is the
algorithm of apk-tools' ``version.c`` (apk_version_compare_blob), re-implemented here token for
token: a wrong order would silently hide or invent findings.

``key(ecosystem, version)`` turns a version string into something ordered, or None when the
string is not a valid version of that ecosystem (the caller then falls back to exact string
matches, as OSV's ``versions`` lists allow).
"""

from __future__ import annotations

import functools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# OSV ecosystems (the part before any ":release") -> the ordering they use.
DPKG = "dpkg"
APK = "apk"
PEP440 = "pep440"
SEMVER = "semver"
_FAMILY = {"Debian": DPKG, "Ubuntu": DPKG, "Alpine": APK, "PyPI": PEP440, "npm": SEMVER}


def family(ecosystem: str) -> str | None:
    """The ordering an OSV ecosystem (``Debian:12``, ``PyPI``…) uses; None if unsupported."""
    return _FAMILY.get(ecosystem.split(":", 1)[0])


# -- the parsers, imported on first use (the CLI's start-up path never pays for them) ----------


def _dpkg(v: str) -> Any:
    from debian.debian_support import Version

    try:
        parsed = Version(v)
    except ValueError:
        return None
    # python-debian accepts almost anything; dpkg itself requires a digit first in upstream.
    if not parsed.upstream_version or not parsed.upstream_version[0].isdigit():
        return None
    return parsed


def _pep440(v: str) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(v)
    except InvalidVersion:
        return None


def _semver(v: str) -> Any:
    import semver

    text = v[1:] if v[:1] in ("v", "=") else v
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        return None


def _apk(v: str) -> Any:
    return ApkVersion(v) if apk_valid(v) else None


_PARSERS: dict[str, Callable[[str], Any]] = {
    DPKG: _dpkg,
    PEP440: _pep440,
    SEMVER: _semver,
    APK: _apk,
}


@functools.lru_cache(maxsize=65536)
def parse(kind: str, version: str) -> Any:
    """``version`` as an ordered value of ordering ``kind`` (DPKG…), None if invalid. Cached:
    a database names the same bounds over and over."""
    if len(version) > 256:
        return None  # no real version is this long; a hostile record's is not worth parsing
    return _PARSERS[kind](version)


def key(ecosystem: str, version: str) -> Any:
    kind = family(ecosystem)
    return None if kind is None else parse(kind, version)


# -- apk (apk-tools version.c) -----------------------------------------------------------------

# Token types, in apk-tools' order: the comparison of what follows equal prefixes uses it.
_INVALID, _DIGIT_OR_ZERO, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _REVISION_NO, _END = range(-1, 7)
_PRE_SUFFIXES = ("alpha", "beta", "pre", "rc")
_POST_SUFFIXES = ("cvs", "svn", "git", "hg", "p")


class _Cursor:
    __slots__ = ("pos", "text", "type")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.type = _DIGIT

    @property
    def left(self) -> int:
        return len(self.text) - self.pos

    def next_type(self) -> None:
        """What kind of token starts here (apk-tools' next_token)."""
        t, c = self.type, self.text[self.pos] if self.left else ""
        if not c:
            n = _END
        elif t in (_DIGIT, _DIGIT_OR_ZERO) and c.islower() and c.isascii():
            n = _LETTER
        elif t == _LETTER and c.isdigit() and c.isascii():
            n = _DIGIT
        elif t == _SUFFIX and c.isdigit() and c.isascii():
            n = _SUFFIX_NO
        else:
            n = _INVALID
            if c == ".":
                n = _DIGIT_OR_ZERO
            elif c == "_":
                n = _SUFFIX
            elif c == "-" and self.left > 1 and self.text[self.pos + 1] == "r":
                n = _REVISION_NO
                self.pos += 1
            self.pos += 1
        allowed = (
            (n == _DIGIT_OR_ZERO and t == _DIGIT)
            or (n == _SUFFIX and t == _SUFFIX_NO)
            or (n == _DIGIT and t == _LETTER)
        )
        if n < t and not allowed:
            n = _INVALID
        self.type = n

    def get(self) -> int:
        """The value of the token at the cursor; advances past it (apk-tools' get_token)."""
        if self.left <= 0:
            self.type = _END
            return 0
        text, i, v, nt = self.text[self.pos :], 0, 0, _INVALID
        t = self.type
        if t == _DIGIT_OR_ZERO and text[0] == "0":
            while i < len(text) and text[i] == "0":
                i += 1
            nt, v = _DIGIT, -i  # leading zeros: "1.01" < "1.1"
        elif t in (_DIGIT_OR_ZERO, _DIGIT, _SUFFIX_NO, _REVISION_NO):
            while i < len(text) and text[i].isdigit() and text[i].isascii():
                v = v * 10 + ord(text[i]) - 48
                i += 1
        elif t == _LETTER:
            v, i = ord(text[0]), 1
        elif t == _SUFFIX:
            found = _suffix(text)
            if found is None:
                self.type = _INVALID
                return -1
            v, i = found
        else:
            self.type = _INVALID
            return -1
        self.pos += i
        if self.left == 0:
            self.type = _END
        elif nt != _INVALID:
            self.type = nt
        else:
            self.next_type()
        return v


def _suffix(text: str) -> tuple[int, int] | None:
    """(value, length) of a suffix: pre-release ones are negative (``_rc1`` < release)."""
    for n, s in enumerate(_PRE_SUFFIXES):
        if text.startswith(s):
            return n - len(_PRE_SUFFIXES), len(s)
    for n, s in enumerate(_POST_SUFFIXES):
        if text.startswith(s):
            return n, len(s)
    return None


def apk_valid(v: str) -> bool:
    """apk_version_validate: the version tokenises to its end."""
    if not v:
        return False
    c = _Cursor(v)
    while c.type not in (_END, _INVALID):
        c.get()
    return c.type == _END


def apk_compare(a: str, b: str) -> int:
    """-1, 0 or 1 as apk orders ``a`` and ``b``."""
    ca, cb = _Cursor(a), _Cursor(b)
    av = bv = 0
    while ca.type == cb.type and ca.type not in (_END, _INVALID) and av == bv:
        av, bv = ca.get(), cb.get()
    if av != bv:
        return -1 if av < bv else 1
    if ca.type == cb.type:
        return 0
    # Equal so far: the longer one is greater, unless what it goes on with is a pre-release
    # suffix.
    if ca.type == _SUFFIX and _peek_suffix(ca) < 0:
        return -1
    if cb.type == _SUFFIX and _peek_suffix(cb) < 0:
        return 1
    if ca.type > cb.type:
        return -1
    if cb.type > ca.type:
        return 1
    return 0


def _peek_suffix(c: _Cursor) -> int:
    found = _suffix(c.text[c.pos :])
    return -1 if found is None else found[0]


@functools.total_ordering
class ApkVersion:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"ApkVersion({self.text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ApkVersion):
            return apk_compare(self.text, other.text) == 0
        return NotImplemented

    def __hash__(self) -> int:
        return 0  # "1.0" == "1.00": equal versions must hash alike, and nothing hashes these

    def __lt__(self, other: object) -> bool:
        if isinstance(other, ApkVersion):
            return apk_compare(self.text, other.text) < 0
        return NotImplemented
