"""The store's vulnerability database: osv.dev's per-ecosystem exports (``<BASE>/<ECO>/all.zip``),
downloaded into ``<root>/scan/db-staging/`` (resumable: an interrupted download goes on from
where it stopped, with HTTP Range and If-Range on the ETag so a changed file starts over),
verified, swapped into ``<root>/scan/db/<ECO>.zip`` by one rename each, then indexed once
((ecosystem, name) -> records: ``osv.Database``'s index in ``<root>/scan/dbindex``), so that a
scan parses only the records naming its packages. ``<root>/scan/db.json`` says when each
ecosystem was last updated, from where, and how many records it holds.

An export is untrusted until verified: a readable zip, every member a plain ``NAME.json`` (no
directory, no ``..``), each at most ``osv.MAX_RECORD`` bytes, at most ``MAX_MEMBERS`` of them and
``MAX_TOTAL`` bytes in all (a zip bomb is refused before anything is inflated), every member's
CRC right, and the MD5 the server states (``x-goog-hash``, as Google Cloud Storage sends it)
matching when given.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import zipfile

from tophan._internal.fs import atomic_write
from tophan.scan.osv import MAX_RECORD, Database, DatabaseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from tophan._internal.root import StoreRoot

DEFAULT_URL = "https://osv-vulnerabilities.storage.googleapis.com"
DEFAULT_ECOSYSTEMS = ("Debian", "Ubuntu", "Alpine", "PyPI", "npm")
MAX_DOWNLOAD = 4 << 30  # bytes: the largest export (all of Debian) is a few hundred MiB
MAX_MEMBERS = 2_000_000
MAX_TOTAL = 32 << 30  # bytes inflated, all members together
_ECOSYSTEM = re.compile(r"[A-Za-z][A-Za-z0-9 ._:+-]{0,63}")
_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,200}\.json")
_CHUNK = 1 << 20
_TIMEOUT = 60.0


def base_url(given: str | None) -> str:
    """``--url``, else ``$TOPHAN_OSV_URL``, else osv.dev's bucket; https only (plain http only
    to this machine, for mirrors and tests)."""
    from urllib.parse import urlsplit

    url = (given or os.environ.get("TOPHAN_OSV_URL") or DEFAULT_URL).rstrip("/")
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise DatabaseError(
            f"refusing database URL {url}", "use https:// (plain http only to 127.0.0.1)"
        )
    return url


def ecosystems(text: str | None) -> list[str]:
    if text is None:
        return list(DEFAULT_ECOSYSTEMS)
    out = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in out if not _ECOSYSTEM.fullmatch(e) or ".." in e]
    if bad or not out:
        raise DatabaseError(
            f"bad ecosystem name {bad[0] if bad else text!r}", "e.g. --ecosystems Debian,PyPI"
        )
    return out


def db_dir(store: StoreRoot) -> str:
    return store.path("scan", "db")


def _meta_path(store: StoreRoot) -> str:
    return store.path("scan", "db.json")


def read_meta(store: StoreRoot) -> dict[str, Any]:
    try:
        with open(_meta_path(store), "rb") as f:
            doc = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


# -- download ----------------------------------------------------------------------------------


def _goog_md5(headers: Any) -> str | None:
    for value in headers.get_all("x-goog-hash") or []:
        for part in value.split(","):
            k, _, v = part.strip().partition("=")
            if k == "md5":
                return base64.b64decode(v + "==").hex()
    return None


def download(url: str, part: str, log: Callable[[str], None]) -> str | None:
    """``url`` into ``part``, going on from what ``part`` already holds; returns the MD5 the
    server stated for the whole file (or None)."""
    import urllib.error
    import urllib.request

    have = os.path.getsize(part) if os.path.exists(part) else 0
    etag_file = part + ".etag"
    req = urllib.request.Request(url, headers={"User-Agent": "tophan"})
    if have:
        req.add_header("Range", f"bytes={have}-")
        try:
            with open(etag_file) as f:
                req.add_header("If-Range", f.read(1024).strip())
        except OSError:
            pass
    try:
        resp = urllib.request.urlopen(req, timeout=_TIMEOUT)  # its scheme checked by base_url
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return None  # nothing left to fetch: verification decides
        raise DatabaseError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (OSError, ValueError) as e:
        raise DatabaseError(f"{url}: {e}", "check the network or --url") from None
    with resp:
        resumed = resp.status == 206
        if have and not resumed:
            have = 0  # the server sent it all again (changed, or no Range support)
        log(f"{url}: {'resuming at ' + str(have) if resumed else 'downloading'}")
        if etag := resp.headers.get("ETag"):
            atomic_write(etag_file, etag.encode())
        md5 = _goog_md5(resp.headers)
        _copy(resp, part, have, url)
    return md5


def _copy(resp: Any, part: str, have: int, url: str) -> None:
    import http.client

    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(part, flags | (0 if have else os.O_TRUNC), 0o644)
    try:
        os.lseek(fd, have, os.SEEK_SET)
        os.ftruncate(fd, have)
        got = have
        while True:
            try:
                chunk = resp.read(_CHUNK)
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise DatabaseError(
                    f"{url}: download interrupted at {got} bytes ({type(e).__name__})",
                    "run `tophan db update` again: it resumes",
                ) from None
            if not chunk:
                break
            got += len(chunk)
            if got > MAX_DOWNLOAD:
                raise DatabaseError(f"{url}: larger than {MAX_DOWNLOAD} bytes, refused")
            view = memoryview(chunk)
            while view:  # a short write is not an error: go on from where it stopped
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit() and got - have < int(length):
        raise DatabaseError(
            f"{url}: download interrupted at {got} bytes",
            "run `tophan db update` again: it resumes",
        )


# -- verification ------------------------------------------------------------------------------


def verify(path: str, md5: str | None) -> int:
    """Refuse anything but a sane OSV export (see the module's doc); returns its member count."""
    if md5 is not None:
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != md5:
            raise DatabaseError(f"{path}: MD5 differs from the server's", "run the update again")
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DatabaseError(f"downloaded export is not a readable zip ({e})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise DatabaseError(f"export has {len(infos)} members, more than {MAX_MEMBERS}")
        total = 0
        for info in infos:
            if not _MEMBER.fullmatch(info.filename):
                raise DatabaseError(f"export member {info.filename[:100]!r}: not a record name")
            if info.file_size > MAX_RECORD:
                raise DatabaseError(f"export member {info.filename}: larger than {MAX_RECORD}")
            total += info.file_size
        if total > MAX_TOTAL:
            raise DatabaseError(f"export inflates to {total} bytes, more than {MAX_TOTAL}")
        try:
            bad = zf.testzip()  # every member inflated (each bounded above) and its CRC checked
        except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
            raise DatabaseError(f"export is corrupt ({e})") from None
        if bad is not None:
            raise DatabaseError(f"export member {bad}: CRC mismatch")
    return len(infos)


# -- update and status -------------------------------------------------------------------------


def update(
    store: StoreRoot,
    names: list[str],
    url: str,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Download, verify and swap in each ecosystem's export, then index the database."""
    from urllib.parse import quote

    staging = store.path("scan", "db-staging")
    final = db_dir(store)
    os.makedirs(staging, 0o755, exist_ok=True)
    os.makedirs(final, 0o755, exist_ok=True)
    meta = read_meta(store)
    for eco in names:
        part = os.path.join(staging, eco + ".zip.part")
        source = f"{url}/{quote(eco)}/all.zip"
        md5 = download(source, part, log)
        try:
            members = verify(part, md5)
        except DatabaseError:
            _unlink(part, part + ".etag")  # never resumed from: fetched whole next time
            raise
        os.rename(part, os.path.join(final, eco + ".zip"))  # the swap: old or new, never half
        _unlink(part + ".etag")
        meta[eco] = {"updated": _now(), "url": source, "files": members}
        atomic_write(_meta_path(store), json.dumps(meta, sort_keys=True).encode())
    db = Database(final, index_dir=store.path("scan", "dbindex"))  # indexed now, not at scan
    db.close()
    _prune_indexes(os.path.dirname(db.index_file), keep=db.index_file)
    return status(store, db)


def _prune_indexes(top: str, keep: str) -> None:
    """Drop the indexes of databases that are gone (each update makes a new one; one for a
    `--db PATH` is only built again when next used)."""
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        path = os.path.join(top, name)
        if path != keep and name.endswith(".json"):
            _unlink(path)


def status(store: StoreRoot, db: Database | None = None) -> dict[str, Any]:
    """What the store's database holds: per downloaded ecosystem, when and how many records."""
    meta = read_meta(store)
    if db is None and os.path.isdir(db_dir(store)):
        db = Database(db_dir(store), index_dir=store.path("scan", "dbindex"))
        db.close()
    # Distinct records per base ecosystem: one Alpine record names every release branch.
    per_base: dict[str, set[tuple[int, str]]] = {}
    for key, where in (db.index if db is not None else {}).items():
        per_base.setdefault(key.split("\t", 1)[0].split(":", 1)[0], set()).update(where)
    now = datetime.datetime.now(datetime.UTC)
    out: dict[str, Any] = {"path": db_dir(store), "ecosystems": {}}
    for eco, info in sorted(meta.items()):
        if not isinstance(info, dict):
            continue
        updated = str(info.get("updated", ""))
        try:
            age = int((now - datetime.datetime.fromisoformat(updated)).total_seconds())
        except ValueError:
            age = None
        records = len(per_base.get(eco.split(":", 1)[0], ()))
        out["ecosystems"][eco] = {"updated": updated, "age_seconds": age, "records": records}
    out["records"] = db.total if db is not None else 0
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _unlink(*paths: str) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
