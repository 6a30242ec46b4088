"""apk's database, ``lib/apk/db/installed``: one paragraph per package of ``X:value`` lines
(``P`` name, ``V`` version, ``A`` arch, ``o`` origin: the source package Alpine's advisories
name)."""

from __future__ import annotations

from tophan.scan.model import APK, Package


def read(text: str, path: str) -> list[Package]:
    out: list[Package] = []
    fields: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if line.strip():
            if len(line) > 1 and line[1] == ":":
                fields.setdefault(line[0], line[2:].strip())
            continue
        name, version = fields.get("P", ""), fields.get("V", "")
        if name and version:
            out.append(
                Package(
                    type=APK,
                    name=name,
                    version=version,
                    arch=fields.get("A", ""),
                    source=fields.get("o", "") or name,
                    source_version=version,
                    path=path,
                )
            )
        fields = {}
    return out
