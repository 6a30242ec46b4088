"""Scans and what is made of them: a target's findings against a database, filtered by severity
and an ignore file, rendered as a table, JSON or SARIF 2.1.0, and stored per image
(``<root>/scan/results/<hex>.json``) so that ``app ps`` and deploy policies read the last scan
without matching again.

The ignore file follows ``.trivyignore``: one id per line (a record's id or any of its aliases),
``#`` comments, and an optional ``exp:YYYY-MM-DD`` after the id: past that day the entry no
longer applies (an accepted risk gets looked at again).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass

from tophan._internal.fs import atomic_write
from tophan.errors import TophanError, UsageError
from tophan.scan.match import SEVERITIES, Finding, match, rank

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from tophan._internal.root import StoreRoot
    from tophan.scan.inventory import Inventories
    from tophan.scan.osv import Database
    from tophan.scan.targets import Target

RESULT_FORMAT = 1
MAX_IGNORE_FILE = 1 << 20
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note"}


@dataclass(slots=True)
class Scan:
    """One target's findings (every one: filters apply when shown) and what was skipped."""

    target: Target
    findings: list[Finding]
    warnings: list[str]
    ecosystem: str
    packages: int


def default_db(store: StoreRoot) -> str:
    """Where ``tophan db update`` keeps the database."""
    return store.path("scan", "db")


def open_db(store: StoreRoot, path: str | None = None) -> Database:
    """The database at ``path`` (a directory or zip of OSV records), else the store's."""
    from tophan.scan.osv import Database, DatabaseError

    where = path or default_db(store)
    if path is None and not os.path.isdir(where):
        raise DatabaseError(
            "no vulnerability database in the store",
            "run `tophan db update`, or give --db PATH (a directory or zip of OSV records)",
        )
    return Database(where, index_dir=store.path("scan", "dbindex"))


def scan(inventories: Inventories, target: Target, db: Database) -> Scan:
    """Match ``target``'s merged inventory (cached per layer) against ``db``."""
    inv = inventories.image(target.stack)
    found = match(inv.packages, db)
    return Scan(target, found, inv.warnings, inv.ecosystem, len(inv.packages))


# -- filters -----------------------------------------------------------------------------------


def severities(text: str) -> set[str]:
    """``LOW,MEDIUM`` as a set of severity names, checked."""
    from tophan.scan.match import check_severity

    out = {check_severity(s) for s in text.split(",") if s.strip()}
    if not out:
        raise UsageError("--severity: no severity given", "e.g. --severity HIGH,CRITICAL")
    return out


def load_ignore(path: str, today: datetime.date | None = None) -> set[str]:
    """The ids an ignore file names, without those whose ``exp:`` date has passed."""
    today = today or datetime.datetime.now(datetime.UTC).date()
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IGNORE_FILE + 1)
    except OSError as e:
        raise UsageError(f"cannot read ignore file {path}: {e.strerror}") from e
    if len(data) > MAX_IGNORE_FILE:
        raise UsageError(f"ignore file {path}: larger than {MAX_IGNORE_FILE} bytes")
    out: set[str] = set()
    for n, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if _expired(words[1:], today, f"{path}:{n}"):
            continue
        out.add(words[0])
    return out


def _expired(words: list[str], today: datetime.date, where: str) -> bool:
    for w in words:
        if w.startswith("exp:"):
            try:
                return datetime.date.fromisoformat(w[4:]) < today
            except ValueError:
                raise UsageError(f"{where}: bad date {w!r}", "write exp:YYYY-MM-DD") from None
        raise UsageError(f"{where}: unexpected {w!r}", "one id per line, then exp:YYYY-MM-DD")
    return False


def ignored(f: Finding, ids: set[str]) -> bool:
    return f.id in ids or any(a in ids for a in f.aliases)


def select(
    findings: Iterable[Finding],
    levels: set[str] | None = None,
    ignore: set[str] | frozenset[str] = frozenset(),
) -> list[Finding]:
    return [
        f
        for f in findings
        if (levels is None or f.severity in levels) and not ignored(f, set(ignore))
    ]


def at_or_above(findings: Iterable[Finding], level: str) -> list[Finding]:
    return [f for f in findings if rank(f.severity) >= rank(level)]


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    out = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        out[f.severity] = out.get(f.severity, 0) + 1
    return out


# -- output ------------------------------------------------------------------------------------


def as_json(findings: Iterable[Finding]) -> dict[str, Any]:
    keys = ("id", "aliases", "package", "version", "ecosystem", "fixed", "severity", "layer")
    return {"vulnerabilities": [{k: f.as_dict()[k] for k in keys} for f in findings]}


def table(findings: list[Finding]) -> str:
    rows = [("PACKAGE", "INSTALLED", "FIXED IN", "ID", "SEVERITY", "LAYER")]
    for f in findings:
        layer = f.layer.split(":", 1)[-1][:12]
        rows.append((f.package, f.version, f.fixed or "-", f.id, f.severity, layer))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] + "\n"
        for r in rows
    )


def sarif(findings: list[Finding], target: str) -> dict[str, Any]:
    """SARIF 2.1.0: one rule per vulnerability, one result per (vulnerability, package)."""
    from tophan import __version__

    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in findings:
        level = _SARIF_LEVEL.get(f.severity, "warning")
        rules.setdefault(
            f.id,
            {
                "id": f.id,
                "shortDescription": {"text": f.summary or f.id},
                "helpUri": f"https://osv.dev/vulnerability/{f.id}",
                "defaultConfiguration": {"level": level},
                "properties": {"security-severity": str(f.score or 0.0), "tags": ["security"]},
            },
        )
        fix = f"; fixed in {f.fixed}" if f.fixed else "; no fix known"
        results.append(
            {
                "ruleId": f.id,
                "level": level,
                "message": {"text": f"{f.package} {f.version} ({f.ecosystem}): {f.id}{fix}"},
                "locations": [
                    {
                        "physicalLocation": {"artifactLocation": {"uri": f.path.lstrip("/")}},
                        "message": {"text": f"{target} layer {f.layer}"},
                    }
                ],
                "properties": {"aliases": f.aliases, "purl": f.purl, "layer": f.layer},
            }
        )
    driver = {
        "name": "tophan",
        "version": __version__,
        "informationUri": "https://osv.dev",
        "rules": list(rules.values()),
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{"tool": {"driver": driver}, "results": results}],
    }


# -- stored results ----------------------------------------------------------------------------


def _result_path(store: StoreRoot, key: str) -> str:
    return store.path("scan", "results", key.split(":", 1)[-1] + ".json")


def save(store: StoreRoot, result: Scan, db: Database) -> str:
    """Store ``result`` under its image's digest (atomically); returns the path."""
    doc = {
        "format": RESULT_FORMAT,
        "target": result.target.name,
        "digest": result.target.key,
        "scanned": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "db": db.path,
        "counts": counts(result.findings),
        "findings": [f.as_dict() for f in result.findings],
    }
    path = _result_path(store, result.target.key)
    try:
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        atomic_write(path, json.dumps(doc, sort_keys=True).encode())
    except OSError as e:
        raise TophanError(f"cannot store the scan of {result.target.name}: {e.strerror}") from e
    return path


def last(store: StoreRoot, digest: str) -> dict[str, Any] | None:
    """The stored result of the last scan of ``digest``, None if never scanned (or unreadable)."""
    try:
        with open(_result_path(store, digest), "rb") as f:
            doc = json.loads(f.read(64 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        return None
    return doc


def last_of_image(store: StoreRoot, name: str) -> dict[str, Any] | None:
    """The last scan of image ``name`` as it is now (a re-tagged name is scanned anew)."""
    from tophan.image.images import Images

    try:
        return last(store, Images(store).get(name).digest)
    except TophanError:
        return None


def stored_findings(doc: dict[str, Any]) -> list[Finding]:
    out = []
    for d in doc.get("findings", []):
        try:
            out.append(Finding(**{k: d[k] for k in Finding.__dataclass_fields__ if k in d}))
        except TypeError:
            continue
    return out


def vulns_column(doc: dict[str, Any] | None) -> str:
    """``C:0 H:2 M:1 L:0`` from a stored result; ``-`` when never scanned."""
    if doc is None:
        return "-"
    c = doc.get("counts", {})
    return " ".join(f"{s[0]}:{int(c.get(s, 0))}" for s in ("CRITICAL", "HIGH", "MEDIUM", "LOW"))
