"""Which packages OSV records say are affected, by OSV's evaluation rules.

A version is affected by an ``affected[]`` entry when it is in its ``versions`` list or inside
one of its ``ECOSYSTEM``/``SEMVER`` ranges (``GIT`` ranges name commits, not versions: ignored).
A range's events are sorted by version first — real records list segments in any order — then
walked: ``introduced`` (``0`` = from the start) opens, ``fixed`` closes at that version,
``last_affected`` closes after it; ``limit`` events, when present, bound the whole range from
above. Withdrawn records are skipped. Records that are aliases of one another (``aliases``, and
Debian's ``upstream``) fold into one finding per package, its other ids listed.

Severity comes from CVSS vectors (the ``cvss`` library computes the base score; the highest of
the record's and the entry's vectors counts), else from the severity a database states.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from tophan.scan import versions
from tophan.scan.osv import name_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from tophan.scan.model import Package
    from tophan.scan.osv import Affected, Database, Record

SEVERITIES = ("UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL")
_RANK = {s: n for n, s in enumerate(SEVERITIES)}
# What databases write besides the four: GHSA's MODERATE, Debian's and Ubuntu's words.
_WORDS = {"MODERATE": "MEDIUM", "IMPORTANT": "HIGH", "NEGLIGIBLE": "LOW", "UNIMPORTANT": "LOW"}


def rank(severity: str) -> int:
    return _RANK.get(severity.upper(), 0)


def check_severity(text: str) -> str:
    """A severity name as a user gives it (any case), checked."""
    from tophan.errors import UsageError

    up = text.strip().upper()
    if up not in _RANK:
        raise UsageError(f"unknown severity: {text!r}", "one of " + ", ".join(SEVERITIES))
    return up


@dataclass(slots=True)
class Finding:
    id: str
    aliases: list[str]
    package: str
    version: str
    ecosystem: str
    fixed: str
    severity: str
    layer: str
    score: float | None = None
    type: str = ""
    purl: str = ""
    path: str = ""
    source: str = ""
    summary: str = ""
    records: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "aliases": self.aliases,
            "package": self.package,
            "version": self.version,
            "ecosystem": self.ecosystem,
            "fixed": self.fixed,
            "severity": self.severity,
            "score": self.score,
            "layer": self.layer,
            "type": self.type,
            "purl": self.purl,
            "path": self.path,
            "source": self.source,
            "summary": self.summary,
        }


# -- versions and ranges -----------------------------------------------------------------------


def _in_range(kind: str, v: Any, events: list[tuple[str, str]]) -> tuple[bool, str] | None:
    """(affected, the fix above ``v``) by one range's events; None if a bound is not a valid
    version of ``kind`` (the range then decides nothing)."""
    parsed: list[tuple[Any, str, str]] = []  # (key or None for "0", event, raw)
    limits: list[Any] = []
    for event, raw in events:
        if event == "introduced" and raw == "0":
            parsed.append((None, event, raw))
            continue
        if event == "limit" and raw == "*":
            limits.append(None)
            continue
        if event not in ("introduced", "fixed", "last_affected", "limit"):
            continue
        k = versions.parse(kind, raw)
        if k is None:
            return None
        if event == "limit":
            limits.append(k)
        else:
            parsed.append((k, event, raw))

    def by_version(a: int, b: int) -> int:
        return _cmp(parsed[a][0], parsed[b][0]) or a - b  # equal versions: file order

    order = sorted(range(len(parsed)), key=functools.cmp_to_key(by_version))
    affected = False
    for i in order:
        k, event, _ = parsed[i]
        if event == "introduced" and (k is None or k <= v):
            affected = True
        elif k is not None and (
            (event == "fixed" and k <= v) or (event == "last_affected" and k < v)
        ):
            affected = False
    if affected and limits and not any(lim is None or v < lim for lim in limits):
        affected = False
    fix, best = "", None
    for k, event, raw in parsed:
        if event == "fixed" and k is not None and v < k and (best is None or k < best):
            fix, best = raw, k
    return affected, (fix if affected else "")


def _cmp(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return -1 if a < b else (1 if b < a else 0)


def affects(entry: Affected, version: str) -> tuple[bool, str]:
    """Whether ``entry`` says ``version`` is affected, and the version that fixes it (if any)."""
    hit, fix = False, ""
    for rtype, events in entry.ranges:
        kind = versions.SEMVER if rtype == "SEMVER" else versions.family(entry.ecosystem)
        if rtype not in ("ECOSYSTEM", "SEMVER") or kind is None:
            continue
        v = versions.parse(kind, version)
        if v is None:
            continue
        got = _in_range(kind, v, events)
        if got is not None and got[0]:
            hit = True
            fix = _lowest(kind, fix, got[1])
    if not hit and version in entry.versions:
        hit = True
    return hit, fix


def _lowest(kind: str, a: str, b: str) -> str:
    if not a or not b:
        return a or b
    ka, kb = versions.parse(kind, a), versions.parse(kind, b)
    return b if ka is not None and kb is not None and kb < ka else a


# -- severity ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16384)
def cvss_score(kind: str, vector: str) -> float | None:
    """The base score of a CVSS vector (``CVSS_V2``/``V3``/``V4``), None if invalid."""
    try:
        import cvss
    except ImportError:
        return None
    try:
        if kind == "CVSS_V3":
            return float(cvss.CVSS3(vector).base_score)
        if kind == "CVSS_V4":
            return float(cvss.CVSS4(vector).base_score)
        if kind == "CVSS_V2":
            return float(cvss.CVSS2(vector).base_score)
    except Exception:  # cvss raises its own errors, and others on garbage: never fatal
        return None
    return None


def level(score: float) -> str:
    """CVSS's qualitative rating of a base score (v3 and v4 share the bands)."""
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    if score > 0.0:
        return "LOW"
    return "UNKNOWN"


def severity(record: Record, entry: Affected | None) -> tuple[str, float | None]:
    """(level, score) of a record for one affected entry."""
    scores = [
        s
        for kind, vec in [*record.severity, *(entry.severity if entry else [])]
        if (s := cvss_score(kind, vec)) is not None
    ]
    if scores:
        best = max(scores)
        return level(best), best
    for word in (record.db_severity, entry.extra_severity if entry else ""):
        up = word.strip().upper()
        up = _WORDS.get(up, up)
        if up in _RANK:
            return up, None
    return "UNKNOWN", None


# -- matching ----------------------------------------------------------------------------------


def _entry_for(record: Record, pkg: Package) -> tuple[Affected, str] | None:
    """The first of ``record``'s entries affecting ``pkg``, with its fix."""
    eco = pkg.ecosystem
    base = eco.split(":", 1)[0]
    want = name_key(eco, pkg.match_name)
    for entry in record.affected:
        if entry.ecosystem not in (eco, base) or name_key(entry.ecosystem, entry.name) != want:
            continue
        hit, fix = affects(entry, pkg.match_version)
        if hit:
            return entry, fix
    return None


def _ids(record: Record) -> set[str]:
    return {record.id, *record.aliases, *record.upstream}


def _fold(hits: list[tuple[Record, Affected, str]]) -> list[list[tuple[Record, Affected, str]]]:
    """Group records that share an id (one is an alias of another): one vulnerability each."""
    groups: list[tuple[set[str], list[tuple[Record, Affected, str]]]] = []
    for hit in hits:
        ids = _ids(hit[0])
        joined = [g for g in groups if g[0] & ids]
        merged_ids, merged = set(ids), [hit]
        for g in joined:
            merged_ids |= g[0]
            merged += g[1]
            groups.remove(g)
        groups.append((merged_ids, merged))
    return [sorted(g[1], key=lambda h: h[0].id) for g in groups]


def match_package(pkg: Package, db: Database) -> list[Finding]:
    """The findings for one package (one per vulnerability). Remembered by ``db`` for the
    package as found in its layer: images sharing a layer share its packages, so re-matching
    many images against one database evaluates each shared package once."""
    if not pkg.ecosystem or not pkg.match_version:
        return []
    key = (pkg.layer, pkg.path, pkg.type, pkg.name, pkg.version, pkg.arch, pkg.source,
           pkg.source_version, pkg.ecosystem, pkg.distro)  # fmt: skip
    known = db.matches.get(key)
    if known is None:
        known = db.matches[key] = _match_package(pkg, db)
    return list(known)


def _match_package(pkg: Package, db: Database) -> list[Finding]:
    hits = []
    for record in db.records(pkg.ecosystem, pkg.match_name):
        if record.withdrawn:
            continue
        got = _entry_for(record, pkg)
        if got is not None:
            hits.append((record, got[0], got[1]))
    out: list[Finding] = []
    purl = pkg.purl if hits else ""  # one packageurl per package, not per finding
    for group in _fold(hits):
        primary = group[0][0]
        ids = set().union(*(_ids(r) for r, _, _ in group)) - {primary.id}
        sevs = [severity(r, e) for r, e, _ in group]
        sev, score = max(sevs, key=lambda s: (rank(s[0]), s[1] or 0.0))
        kind = versions.family(pkg.ecosystem) or versions.SEMVER
        fix = ""
        for _, _, f in group:
            fix = _lowest(kind, fix, f)
        out.append(
            Finding(
                id=primary.id,
                aliases=sorted(ids),
                package=pkg.name,
                version=pkg.version,
                ecosystem=pkg.ecosystem,
                fixed=fix,
                severity=sev,
                layer=pkg.layer,
                score=score,
                type=pkg.type,
                purl=purl,
                path=pkg.path,
                source=pkg.match_name if pkg.match_name != pkg.name else "",
                summary=primary.summary,
                records=[r.id for r, _, _ in group],
            )
        )
    return out


def match(packages: Iterable[Package], db: Database) -> list[Finding]:
    """Every finding for ``packages``, most severe first."""
    out: list[Finding] = []
    for pkg in packages:
        out += match_package(pkg, db)
    out.sort(key=lambda f: (-rank(f.severity), -(f.score or 0.0), f.package, f.id))
    return out
