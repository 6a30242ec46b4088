"""dpkg's database: ``var/lib/dpkg/status`` and distroless images' ``var/lib/dpkg/status.d/*``.

Only installed packages count (the third word of ``Status`` is ``installed``: what
``dpkg-query -W -f '${db:Status-Status}'`` reports so; ``config-files`` and half-installed ones
are not on the disk as a package). A binary package's ``Source`` is kept, with its own version
when given (``Source: openssl (1.1.1n-0+deb11u5)``): Debian's advisories name source packages.
"""

from __future__ import annotations

from tophan.scan.model import Package

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """The RFC 822-style paragraphs of a dpkg (or apk-like) database: ``Field: value`` lines,
    continuation lines starting with a space or tab, paragraphs separated by blank lines. Only
    the first line of a multi-line field is kept (the fields read here are single-line)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
                fields = {}
            continue
        if line[0] in " \t":
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    if fields:
        yield fields


def parse_source(field: str, binary: str, version: str) -> tuple[str, str]:
    """``Source: name`` or ``Source: name (version)`` -> (name, version); absent: the binary's."""
    if not field:
        return binary, version
    name, _, rest = field.partition(" ")
    rest = rest.strip()
    if rest.startswith("(") and rest.endswith(")"):
        return name, rest[1:-1].strip()
    return name, version


def read(text: str, path: str) -> list[Package]:
    """The installed packages of one status file (or one ``status.d`` entry)."""
    out = []
    for f in stanzas(text):
        name, version = f.get("package", ""), f.get("version", "")
        status = f.get("status", "").split()
        # status.d entries (distroless) carry no Status: each one is an installed package.
        installed = status[2:3] == ["installed"] if status else "/status.d/" in path
        if not name or not version or not installed:
            continue
        src, src_version = parse_source(f.get("source", ""), name, version)
        out.append(
            Package(
                type="deb",
                name=name,
                version=version,
                arch=f.get("architecture", ""),
                source=src,
                source_version=src_version,
                path=path,
            )
        )
    return out
