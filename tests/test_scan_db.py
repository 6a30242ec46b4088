"""`tophan db update|status` against a local HTTP server serving zips made from the real OSV
records: a download cut off mid-way resumes with Range, hostile exports are refused and
nothing is swapped in, and the indexed database serves `scan`."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from scanlib import DEBIAN_9_OS_RELEASE, OSV, files, image, layer, stanza, status
from tophan.store import Store


def export(folder: str) -> bytes:
    """An all.zip as osv.dev publishes it: one <ID>.json per record, at the top."""
    import yaml

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((OSV / folder).iterdir()):
            if p.suffix == ".json":
                zf.writestr(p.name, p.read_bytes())
            elif p.suffix == ".yaml":
                doc = yaml.safe_load(p.read_text())
                zf.writestr(p.stem + ".json", json.dumps(doc, default=str))
    return buf.getvalue()


class Server:
    """Serves ``files`` (path -> bytes) with Range support; ``cut`` cuts the next full
    response after that many bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: int | None = None
        self.ranges: list[str] = []
        self.md5: bytes | None = None  # what the MD5 header is computed over (None: the file)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import unquote

                data = owner.files.get(unquote(self.path))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    owner.ranges.append(rng)
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
                md5 = hashlib.md5(data if owner.md5 is None else owner.md5).digest()
                digest = base64.b64encode(md5).decode()
                self.send_header("x-goog-hash", f"crc32c=AAAAAA==,md5={digest}")
                self.end_headers()
                body = data[start:]
                if owner.cut is not None and not rng:
                    body, owner.cut = body[: owner.cut], None
                self.wfile.write(body)
                self.wfile.flush()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(str(tmp_path / "store"))


def db(store: Store, *args: str) -> tuple[int, str, str]:
    r = run_cli("db", *args, root=Path(store.root))
    assert "Traceback" not in r.err
    return r.rc, r.out, r.err


def test_update_status_and_scan_with_the_store_db(store: Store, server: Server) -> None:
    server.files["/Debian/all.zip"] = export("Debian")
    server.files["/PyPI/all.zip"] = export("PyPI")
    rc, out, err = db(store, "update", "--ecosystems", "Debian,PyPI", "--url", server.url)
    assert rc == 0, err
    assert out == "Debian\t4 records\nPyPI\t34 records\n"
    rc, out, _ = db(store, "status", "--json")
    doc = json.loads(out)
    assert doc["records"] == 38
    assert (
        doc["ecosystems"]["Debian"]["records"] == 4
        and doc["ecosystems"]["PyPI"]["age_seconds"] < 60
    )
    assert db(store, "status")[1].startswith("ECOSYSTEM\tRECORDS")
    deb = status(stanza("libssl1.1", "1.1.0l-1~deb9u5", source="openssl"))
    layer(
        store, "base", files({"/var/lib/dpkg/status": deb, "/etc/os-release": DEBIAN_9_OS_RELEASE})
    )
    image(store, "img", ["base"])
    r = run_cli("scan", "img", "--json", root=Path(store.root))
    assert r.rc == 0, r.err
    assert [v["id"] for v in json.loads(r.out)["vulnerabilities"]] == ["DLA-3008-1"]
    assert not list((Path(store.root) / "scan" / "db-staging").iterdir())
    # A second update: the old database's index is dropped, the new one kept.
    assert db(store, "update", "--ecosystems", "PyPI", "--url", server.url)[0] == 0
    assert len(list((Path(store.root) / "scan" / "dbindex").iterdir())) == 1


def test_interrupted_download_resumes_with_range(store: Store, server: Server) -> None:
    data = export("npm")
    server.files["/npm/all.zip"] = data
    server.cut = len(data) // 2
    rc, _, err = db(store, "update", "--ecosystems", "npm", "--url", server.url)
    assert rc == 1 and "interrupted" in err and "resumes" in err and err.count("\n") == 1
    part = Path(store.root) / "scan" / "db-staging" / "npm.zip.part"
    assert part.stat().st_size == len(data) // 2
    assert not (Path(store.root) / "scan" / "db" / "npm.zip").exists()  # nothing swapped in
    rc, out, err = db(store, "update", "--ecosystems", "npm", "--url", server.url)
    assert rc == 0, err
    assert server.ranges == [f"bytes={len(data) // 2}-"]
    assert (Path(store.root) / "scan" / "db" / "npm.zip").read_bytes() == data
    assert out == "npm\t14 records\n"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


RECORD = (OSV / "npm" / "GHSA-8hc4-vh64-cxmj.json").read_bytes()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_zip({"../../etc/evil.json": RECORD}), "not a record name"),
        (_zip({"/abs.json": RECORD}), "not a record name"),
        (_zip({"dir/x.json": RECORD}), "not a record name"),
        (_zip({"bomb.json": b"\0" * (17 << 20)}), "larger than"),
        (b"this is not a zip at all" * 100, "not a readable zip"),
        (_zip({"GHSA-1.json": RECORD})[:-30], "not a readable zip"),
    ],
)
def test_hostile_exports_are_refused_and_the_old_db_kept(
    store: Store, server: Server, body: bytes, words: str
) -> None:
    first = server.files["/npm/all.zip"] = export("npm")
    assert db(store, "update", "--ecosystems", "npm", "--url", server.url)[0] == 0
    server.files["/npm/all.zip"] = body
    rc, out, err = db(store, "update", "--ecosystems", "npm", "--url", server.url)
    assert rc == 1 and out == "" and words in err and err.count("\n") == 1
    assert (Path(store.root) / "scan" / "db" / "npm.zip").read_bytes() == first
    assert not list((Path(store.root) / "scan" / "db-staging").iterdir())
    assert not (Path(store.root).parent / "etc").exists()


def test_md5_mismatch_refused(store: Store, server: Server) -> None:
    """A resumed file whose start no longer fits the server's (a changed file served without
    an ETag check): the stated MD5 of the whole tells, and the partial file is dropped."""
    server.files["/npm/all.zip"] = export("npm")
    server.md5 = b"another file"
    rc, _, err = db(store, "update", "--ecosystems", "npm", "--url", server.url)
    assert rc == 1 and "MD5" in err and err.count("\n") == 1
    assert not (Path(store.root) / "scan" / "db" / "npm.zip").exists()
    assert not list((Path(store.root) / "scan" / "db-staging").iterdir())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--url", "http://example.com"], "https"),
        (["--url", "ftp://127.0.0.1/x"], "https"),
        (["--ecosystems", "../etc"], "bad ecosystem"),
        (["--ecosystems", ","], "bad ecosystem"),
    ],
)
def test_bad_arguments(store: Store, args: list[str], words: str) -> None:
    rc, out, err = db(store, "update", *args)
    assert rc != 0 and out == "" and words in err and err.count("\n") == 1


def test_env_url_and_status_without_db(store: Store, server: Server) -> None:
    import os

    assert db(store, "status")[1] == "no database: run `tophan db update`\n"
    server.files["/Alpine/all.zip"] = export("Alpine")
    r = run_cli("db", "update", "--ecosystems", "Alpine", root=Path(store.root),
                env={**os.environ, "TOPHAN_OSV_URL": server.url})  # fmt: skip
    assert r.rc == 0 and r.out == "Alpine\t1 records\n", r.err
