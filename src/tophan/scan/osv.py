"""OSV records and the databases they come in: a directory of records (JSON, or YAML as the PyPA
advisory database publishes them), osv.dev's per-ecosystem exports (``all.zip``), or a directory
holding any of these.

Opening a database indexes it once — (ecosystem, package name) -> where each record is — and
keeps the index beside the store's database (``<root>/scan/dbindex/``), keyed by the sources'
size and mtime: a scan then parses only the records naming the packages it has. Records are
untrusted input: each is read bounded (a zip member's declared and real size), parsed without
recursion blow-ups, and skipped with a warning when it is not a record.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field

from tophan._internal.fs import atomic_write
from tophan.errors import TophanError
from tophan.scan.model import pep503

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

INDEX_FORMAT = 1
MAX_RECORD = 16 << 20  # bytes: the largest real records are well under 1 MiB
_RECORD_SUFFIXES = (".json", ".yaml", ".yml")


class DatabaseError(TophanError):
    """A vulnerability database that cannot be read (absent, not OSV, corrupt)."""


@dataclass(slots=True)
class Affected:
    """One ``affected[]`` entry: a package in an ecosystem, its ranges and explicit versions."""

    ecosystem: str
    name: str
    ranges: list[tuple[str, list[tuple[str, str]]]]  # (type, [(event, version)…]) in file order
    versions: list[str]
    severity: list[tuple[str, str]]
    extra_severity: str  # ecosystem_specific / database_specific "severity", if any


@dataclass(slots=True)
class Record:
    id: str
    aliases: list[str]
    upstream: list[str]
    summary: str
    modified: str
    withdrawn: bool
    severity: list[tuple[str, str]]  # (type, score): CVSS vectors
    db_severity: str  # database_specific.severity (GHSA's LOW/MODERATE/HIGH/CRITICAL)
    affected: list[Affected] = field(default_factory=list)


def name_key(ecosystem: str, name: str) -> str:
    """How a package name is compared in an ecosystem: PEP 503 for PyPI, as written elsewhere."""
    return pep503(name) if ecosystem.split(":", 1)[0] == "PyPI" else name


def _str(v: object) -> str:
    return v if isinstance(v, str) else ""


def _strs(v: object) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def _severity(v: object) -> list[tuple[str, str]]:
    out = []
    for s in v if isinstance(v, list) else []:
        if (
            isinstance(s, dict)
            and isinstance(s.get("type"), str)
            and isinstance(s.get("score"), str)
        ):
            out.append((s["type"], s["score"]))
    return out


def _specific_severity(a: dict[str, Any]) -> str:
    for key in ("ecosystem_specific", "database_specific"):
        spec = a.get(key)
        if isinstance(spec, dict) and isinstance(spec.get("severity"), str):
            return str(spec["severity"])
    return ""


def _ranges(v: object) -> list[tuple[str, list[tuple[str, str]]]]:
    out = []
    for r in v if isinstance(v, list) else []:
        if not isinstance(r, dict) or not isinstance(r.get("type"), str):
            continue
        events = []
        for e in r.get("events") or []:
            if isinstance(e, dict):
                events += [(k, str(val)) for k, val in e.items() if isinstance(val, (str, int))]
        out.append((r["type"], events))
    return out


def parse_record(doc: object) -> Record | None:
    """The parts of an OSV record a scan uses; None if ``doc`` is not a record."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        return None
    affected = []
    for a in doc.get("affected") or []:
        pkg = a.get("package") if isinstance(a, dict) else None
        if not isinstance(pkg, dict):
            continue
        eco, name = _str(pkg.get("ecosystem")), _str(pkg.get("name"))
        if not eco or not name:
            continue
        affected.append(
            Affected(
                eco,
                name,
                _ranges(a.get("ranges")),
                [str(v) for v in a.get("versions") or [] if isinstance(v, (str, int, float))],
                _severity(a.get("severity")),
                _specific_severity(a),
            )
        )
    dbs = doc.get("database_specific")
    return Record(
        id=doc["id"],
        aliases=_strs(doc.get("aliases")),
        upstream=_strs(doc.get("upstream")),
        summary=_str(doc.get("summary")) or _str(doc.get("details")).split("\n", 1)[0][:200],
        modified=str(doc.get("modified") or ""),
        withdrawn=bool(doc.get("withdrawn")),
        severity=_severity(doc.get("severity")),
        db_severity=_str(dbs.get("severity")) if isinstance(dbs, dict) else "",
        affected=affected,
    )


def _yaml(data: bytes) -> object:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(data, Loader=loader)  # CSafeLoader or SafeLoader: never arbitrary objects


def decode(data: bytes, name: str) -> object:
    """A record file's document: YAML for ``.yaml``/``.yml``, JSON otherwise."""
    try:
        if name.endswith((".yaml", ".yml")):
            return _yaml(data)
        return json.loads(data)
    except Exception as e:  # json's ValueError, RecursionError, yaml's YAMLError tree
        raise DatabaseError(f"{name}: not a record ({type(e).__name__})") from None


# -- sources -----------------------------------------------------------------------------------


def _sources(path: str) -> list[str]:
    """The files a database path stands for: itself (a record or a zip), or every record and
    zip below a directory (symlinks not followed, sorted: the index is deterministic)."""
    if os.path.isfile(path):
        return [os.path.abspath(path)]
    if not os.path.isdir(path):
        raise DatabaseError(f"no vulnerability database at {path}", "run `tophan db update`")
    out = []
    todo = [os.path.abspath(path)]
    while todo:
        top = todo.pop()
        try:
            with os.scandir(top) as it:
                entries = list(it)
        except OSError as err:
            raise DatabaseError(f"cannot read {top}: {err.strerror}") from err
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                todo.append(e.path)
            elif e.is_file(follow_symlinks=False) and e.name.endswith((*_RECORD_SUFFIXES, ".zip")):
                out.append(e.path)
    return sorted(out)


def _fingerprint(sources: list[str]) -> str:
    h = hashlib.sha256(f"osv-index {INDEX_FORMAT}\n".encode())
    for s in sources:
        st = os.stat(s)
        h.update(f"{s}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_RECORD:
        raise DatabaseError(f"{info.filename}: larger than {MAX_RECORD} bytes")
    with zf.open(info) as f:
        data = f.read(MAX_RECORD + 1)  # the declared size may lie: bounded all the same
    if len(data) > MAX_RECORD:
        raise DatabaseError(f"{info.filename}: larger than {MAX_RECORD} bytes")
    return data


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_RECORD + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_RECORD:
        raise DatabaseError(f"{path}: larger than {MAX_RECORD} bytes")
    return data


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DatabaseError(f"{path}: not a readable zip ({e})") from e


class Database:
    """An OSV database opened for matching: ``records(ecosystem, name)`` gives the records
    naming that package (withdrawn ones included: the matcher skips them)."""

    def __init__(self, path: str, *, index_dir: str | None = None) -> None:
        self.path = path
        self.sources = _sources(path)
        self.warnings: list[str] = []
        self._zips: dict[int, zipfile.ZipFile] = {}
        self._parsed: dict[tuple[int, str], Record | None] = {}
        self.index: dict[str, list[tuple[int, str]]] = {}
        self.counts: dict[str, int] = {}
        # match.match_package's memory: a package (as found in its layer) -> its findings.
        self.matches: dict[tuple[str, ...], list[Any]] = {}
        self.index_file = ""  # where the index is kept, if it is
        self._load_index(index_dir)

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()

    # -- the index ---------------------------------------------------------------------------

    def _load_index(self, index_dir: str | None) -> None:
        cache = None
        if index_dir is not None:
            cache = os.path.join(index_dir, _fingerprint(self.sources) + ".json")
            self.index_file = cache
            try:
                with open(cache, "rb") as f:
                    doc = json.loads(f.read())
                self.index = {k: [(int(s), str(m)) for s, m in v] for k, v in doc["index"].items()}
                self.counts = {str(k): int(v) for k, v in doc["counts"].items()}
                self.warnings = [str(w) for w in doc.get("warnings", [])]
                return
            except (OSError, ValueError, KeyError, TypeError):
                pass
        self._build_index()
        if cache is not None:
            doc = {"index": self.index, "counts": self.counts, "warnings": self.warnings}
            try:
                os.makedirs(os.path.dirname(cache), 0o755, exist_ok=True)
                atomic_write(cache, json.dumps(doc).encode())
            except OSError:
                pass  # indexed again next time

    def _entries(self) -> Iterator[tuple[int, str, bytes | None, str]]:
        """(source, member, data, error) for every record file of every source."""
        for n, src in enumerate(self.sources):
            if not src.endswith(".zip"):
                try:
                    yield n, "", _read_file(src), ""
                except (OSError, DatabaseError) as e:
                    yield n, "", None, str(e)
                continue
            zf = self._zip(n)
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(_RECORD_SUFFIXES):
                    continue
                try:
                    yield n, info.filename, _read_member(zf, info), ""
                except (OSError, DatabaseError, zipfile.BadZipFile) as e:
                    yield n, info.filename, None, f"{src}:{info.filename}: {e}"

    def _build_index(self) -> None:
        for n, member, data, error in self._entries():
            where = member or self.sources[n]
            if data is None:
                self.warnings.append(error)
                continue
            try:
                rec = parse_record(decode(data, where))
            except DatabaseError as e:
                self.warnings.append(str(e))
                continue
            if rec is None:
                self.warnings.append(f"{where}: not an OSV record")
                continue
            self._parsed[(n, member)] = rec
            for eco in {a.ecosystem for a in rec.affected}:
                self.counts[eco] = self.counts.get(eco, 0) + 1
            for key in {f"{a.ecosystem}\t{name_key(a.ecosystem, a.name)}" for a in rec.affected}:
                self.index.setdefault(key, []).append((n, member))

    def _zip(self, n: int) -> zipfile.ZipFile:
        zf = self._zips.get(n)
        if zf is None:
            zf = self._zips[n] = _open_zip(self.sources[n])
        return zf

    # -- lookups -------------------------------------------------------------------------------

    def _record(self, n: int, member: str) -> Record | None:
        key = (n, member)
        if key not in self._parsed:
            rec = None
            try:
                if member:
                    zf = self._zip(n)
                    data = _read_member(zf, zf.getinfo(member))
                else:
                    data = _read_file(self.sources[n])
                rec = parse_record(decode(data, member or self.sources[n]))
            except (OSError, KeyError, DatabaseError, zipfile.BadZipFile) as e:
                self.warnings.append(f"{member or self.sources[n]}: {e}")
            self._parsed[key] = rec
        return self._parsed[key]

    def records(self, ecosystem: str, name: str) -> list[Record]:
        """Records with an ``affected`` entry for ``name`` in ``ecosystem`` or in its base
        (a ``Debian`` record covers every ``Debian:N``)."""
        ecos = [ecosystem]
        base = ecosystem.split(":", 1)[0]
        if base != ecosystem:
            ecos.append(base)
        out: list[Record] = []
        seen: set[tuple[int, str]] = set()
        for eco in ecos:
            for where in self.index.get(f"{eco}\t{name_key(eco, name)}", []):
                if where in seen:
                    continue
                seen.add(where)
                rec = self._record(*where)
                if rec is not None:
                    out.append(rec)
        return out

    @property
    def total(self) -> int:
        return len({w for ws in self.index.values() for w in ws})
