"""Which distribution an image is: ``etc/os-release`` (or ``usr/lib/os-release``), and
``etc/alpine-release``, ``etc/debian_version`` where os-release says too little. Gives the OSV
ecosystem (``Debian:12``, ``Ubuntu:22.04:LTS``, ``Alpine:v3.18``) and purl's ``distro``."""

from __future__ import annotations

import shlex

# Files read for the distribution, most telling first.
PATHS = ("/etc/os-release", "/usr/lib/os-release", "/etc/alpine-release", "/etc/debian_version")


def parse(text: str) -> dict[str, str]:
    """os-release's ``KEY=value`` lines, shell quoting undone."""
    out: dict[str, str] = {}
    for line in text.splitlines()[:200]:
        key, sep, value = line.strip().partition("=")
        if not sep or not key.isidentifier():
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip("\"'")]
        out[key] = " ".join(words)
    return out


def distribution(files: dict[str, str]) -> tuple[str, str, str]:
    """(id, release, ecosystem) from the distribution files found (path -> content)."""
    rel = parse(files.get("/etc/os-release") or files.get("/usr/lib/os-release") or "")
    distro = rel.get("ID", "").lower()
    version = rel.get("VERSION_ID", "")
    alpine = files.get("/etc/alpine-release", "").strip()
    debian = files.get("/etc/debian_version", "").strip()
    if not distro and alpine:
        distro = "alpine"
    if not distro and debian:
        distro = "debian"
    if distro == "alpine":
        version = version or alpine
        major_minor = ".".join(version.split(".")[:2])
        return distro, major_minor, f"Alpine:v{major_minor}" if major_minor else "Alpine"
    if distro == "debian":
        if not version and debian[:1].isdigit():
            version = debian.split(".")[0]  # "12.5" -> 12; testing ("trixie/sid") has none
        return distro, version, f"Debian:{version}" if version else "Debian"
    if distro == "ubuntu":
        lts = ":LTS" if "LTS" in rel.get("VERSION", "") else ""
        return distro, version, f"Ubuntu:{version}{lts}" if version else "Ubuntu"
    return distro, version, ""
