"""What the scanner talks about: a ``Package`` found in a layer, with the OSV ecosystem and
purl it gets once its image's distribution is known."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Package types, as purl names them.
DEB, APK, PYPI, NPM = "deb", "apk", "pypi", "npm"
TYPES = (DEB, APK, PYPI, NPM)
_PEP503 = re.compile(r"[-_.]+")


def pep503(name: str) -> str:
    """A Python project name as PEP 503 normalises it (``PyYAML`` -> ``pyyaml``)."""
    return _PEP503.sub("-", name).lower()


@dataclass(slots=True)
class Package:
    """One installed package. ``path`` is the file it was read from (inside the image), the
    key under which upper layers replace or remove it; ``source``/``source_version`` name the
    source package (dpkg's ``Source``, apk's origin), which distribution advisories name."""

    type: str
    name: str
    version: str
    path: str
    arch: str = ""
    source: str = ""
    source_version: str = ""
    # Set when an image's inventory is merged: which layer it came from, and its distribution.
    layer: str = ""
    ecosystem: str = ""
    distro: str = ""  # purl's distro qualifier: debian-12, alpine-3.18
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            del d["extra"]
        return {k: v for k, v in d.items() if v != ""}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Package:
        return cls(**{k: d[k] for k in _FIELDS if k in d})

    @property
    def match_name(self) -> str:
        """The name advisories use: the source package for distributions, the PEP 503 name for
        Python."""
        if self.type in (DEB, APK):
            return self.source or self.name
        if self.type == PYPI:
            return pep503(self.name)
        return self.name

    @property
    def match_version(self) -> str:
        if self.type in (DEB, APK):
            return self.source_version or self.version
        return self.version

    @property
    def purl(self) -> str:
        from packageurl import PackageURL

        quals: dict[str, str] = {}
        namespace: str | None = None
        name = self.name
        if self.type in (DEB, APK):
            namespace = self.distro.split("-", 1)[0] if self.distro else None
            if self.arch:
                quals["arch"] = self.arch
            if self.distro:
                quals["distro"] = self.distro
            if self.source and self.source != self.name:
                upstream = self.source
                if self.source_version and self.source_version != self.version:
                    upstream += "@" + self.source_version
                quals["upstream"] = upstream
        elif self.type == PYPI:
            name = pep503(self.name)
        elif self.type == NPM and name.startswith("@") and "/" in name:
            namespace, name = name.split("/", 1)
        return str(
            PackageURL(
                type=self.type,
                namespace=namespace,
                name=name,
                version=self.version,
                qualifiers=quals or None,
            ).to_string()
        )


_FIELDS = tuple(Package.__dataclass_fields__)
