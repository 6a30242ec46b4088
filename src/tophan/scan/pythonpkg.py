"""Python distributions: ``*.dist-info/METADATA`` and ``*.egg-info/PKG-INFO`` (or an
``*.egg-info`` file, as old setuptools and Debian's python3-* packages write it), wherever they
are: site-packages, dist-packages, a virtualenv under /app or /opt.

Only the header block is read (``Name``, ``Version``): a METADATA's body is the project's whole
README, and nothing in it is trusted."""

from __future__ import annotations

from tophan.scan.model import PYPI, Package


def read(text: str, path: str) -> list[Package]:
    name = version = ""
    for line in text.splitlines():
        if not line.strip():
            break  # the end of the headers
        key, sep, value = line.partition(":")
        if not sep or line[0] in " \t":
            continue
        key = key.strip().lower()
        if key == "name" and not name:
            name = value.strip()
        elif key == "version" and not version:
            version = value.strip()
    if not name or not version:
        return []
    return [Package(type=PYPI, name=name, version=version, path=path)]


def is_metadata(parent: str, name: str) -> bool:
    """Whether file ``name`` in directory ``parent`` (base names) describes a distribution."""
    if parent.endswith(".dist-info"):
        return name == "METADATA"
    if parent.endswith(".egg-info"):
        return name == "PKG-INFO"
    return False
