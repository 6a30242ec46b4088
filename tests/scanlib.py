"""Helpers for the scanner's tests: layers made from tar members (OCI whiteouts included), images
over them, and the real package files kept in tests/data (see tests/data/scan/SOURCES.md)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from tarbuild import d, f, sym, tar_bytes
from tophan.store import Store

DATA = Path(__file__).resolve().parent / "data"
OSV = DATA / "osv"
SCAN = DATA / "scan"

Member = tuple[tarfile.TarInfo, bytes | None]

DEBIAN_9_OS_RELEASE = (
    b'PRETTY_NAME="Debian GNU/Linux 9 (stretch)"\nNAME="Debian GNU/Linux"\nVERSION_ID="9"\n'
    b'VERSION="9 (stretch)"\nVERSION_CODENAME=stretch\nID=debian\n'
    b'HOME_URL="https://www.debian.org/"\n'
)
ALPINE_318_OS_RELEASE = (
    b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.18.4\n'
    b'PRETTY_NAME="Alpine Linux v3.18"\nHOME_URL="https://alpinelinux.org/"\n'
)


def stanza(
    name: str,
    version: str,
    *,
    source: str = "",
    status: str = "install ok installed",
    arch: str = "amd64",
) -> str:
    lines = [f"Package: {name}"]
    if status:
        lines.append(f"Status: {status}")
    lines += ["Priority: optional", "Section: libs", "Installed-Size: 100", f"Architecture: {arch}"]
    if source:
        lines.append(f"Source: {source}")
    lines += [f"Version: {version}", "Description: a package", " with a long description", " ."]
    return "\n".join(lines) + "\n"


def status(*stanzas: str) -> bytes:
    return "\n".join(stanzas).encode()


def dirs_for(paths: list[str]) -> list[Member]:
    """Directory members for every parent of ``paths`` (tar order: parents first)."""
    seen: list[str] = []
    for p in paths:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dname = "/".join(parts[:i])
            if dname not in seen:
                seen.append(dname)
    return [d(x) for x in seen]


def files(entries: dict[str, bytes]) -> list[Member]:
    return dirs_for(list(entries)) + [f(p.strip("/"), data) for p, data in entries.items()]


def whiteout(path: str) -> Member:
    parent, _, name = path.strip("/").rpartition("/")
    return f(f"{parent}/.wh.{name}" if parent else f".wh.{name}")


def opaque(path: str) -> Member:
    return f(path.strip("/") + "/.wh..wh..opq")


def layer(store: Store, name: str, members: list[Member]) -> str:
    """A layer ``name`` from tar members; its digest."""
    return store.layers.import_tar(io.BytesIO(tar_bytes(members)), name).digest


def image(store: Store, name: str, layers: list[str]) -> str:
    """An image over named layers, bottom to top."""
    return store.images.create(name, layers, compression=None).digest


def real_tree(kind: str, dest: str) -> dict[str, bytes]:
    """The real package files of tests/data/scan/<kind>/, placed under ``dest`` in a layer."""
    out = {}
    top = SCAN / kind
    for p in sorted(top.rglob("*")):
        if p.is_file():
            out[f"{dest}/{p.relative_to(top)}"] = p.read_bytes()
    return out


__all__ = ["d", "f", "sym"]
