"""A hostile registry (issue 8 #6, #12, #13): real HTTP servers on 127.0.0.1 that answer what an
attacker would, against `tophan pull` and `tophan image tags` as a user runs them.

Each answer must be one line naming what is wrong (never a traceback), bounded in requests,
and credentials must never reach a token realm on another host without verified TLS.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

Answer = tuple[int, dict[str, str], bytes]


class Hostile:
    """An HTTP(S) server whose every GET is answered by ``route(path, headers)``; it records
    each request's path and Authorization header."""

    def __init__(self, route: Callable[[str, dict[str, str]], Answer], tls: Path | None = None):
        self.route = route
        self.requests: list[tuple[str, str | None]] = []
        hostile = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hostile.requests.append((self.path, self.headers.get("Authorization")))
                status, headers, body = hostile.route(self.path, dict(self.headers))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls / "cert.pem", tls / "key.pem")
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Hostile]]:
    servers: list[Hostile] = []

    def make(route: Callable[[str, dict[str, str]], Answer], tls: Path | None = None) -> Hostile:
        servers.append(Hostile(route, tls))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def tophan(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(BIN / "tophan"), "--root", str(root), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def registry_serving(manifests: dict[str, tuple[str, bytes]], blobs: dict[str, bytes]) -> Any:
    """A route: /v2/ answers 200; manifests by tag or digest; blobs by digest."""

    def route(path: str, headers: dict[str, str]) -> Answer:
        if path == "/v2/":
            return 200, {}, b"{}"
        if "/manifests/" in path:
            ref = path.rsplit("/", 1)[1]
            if ref in manifests:
                mt, body = manifests[ref]
                return 200, {"Content-Type": mt, "Docker-Content-Digest": _digest(body)}, body
        if "/blobs/" in path:
            ref = path.rsplit("/", 1)[1]
            if ref in blobs:
                return 200, {}, blobs[ref]
        return 404, {}, b'{"errors":[{"code":"NOT_FOUND"}]}'

    return route


# -- #12: absurd JSON ----------------------------------------------------------------------------


def test_deeply_nested_manifest(root: Path, serve: Callable[..., Hostile]) -> None:
    body = b'{"schemaVersion": 2, "layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    s = serve(registry_serving({"t": (OCI_MANIFEST, body)}, {}))
    r = tophan(root, "pull", f"{s.host}/r:t")
    one_line_error(r, "nested")


def _image(
    config: dict[str, Any], layers: Any = None
) -> tuple[dict[str, tuple[str, bytes]], dict[str, bytes]]:
    cfg = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _digest(cfg), "size": len(cfg)},
        "layers": [] if layers is None else layers,
    }
    return {"t": (OCI_MANIFEST, _json(manifest))}, {_digest(cfg): cfg}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"rootfs": {"type": "layers", "diff_ids": 5}}, "diff_ids"),
        ({"rootfs": 5}, "rootfs"),
        ({"rootfs": {"diff_ids": []}, "config": {"Env": 5}}, "Env"),
        ({"rootfs": {"diff_ids": []}, "config": {"Cmd": {"a": 1}}}, "Cmd"),
    ],
)
def test_config_fields_of_the_wrong_type(
    root: Path, serve: Callable[..., Hostile], config: dict[str, Any], field: str
) -> None:
    manifests, blobs = _image(config)
    s = serve(registry_serving(manifests, blobs))
    r = tophan(root, "pull", f"{s.host}/r:t")
    one_line_error(r, field)
    assert not list((root / "refs/images").iterdir()), "a bad image was stored"


def test_index_with_manifests_not_a_list(root: Path, serve: Callable[..., Hostile]) -> None:
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": 5})
    s = serve(registry_serving({"t": (OCI_INDEX, index)}, {}))
    one_line_error(tophan(root, "pull", f"{s.host}/r:t"), "manifests")


def test_manifest_with_layers_not_a_list(root: Path, serve: Callable[..., Hostile]) -> None:
    manifests, blobs = _image({"rootfs": {"diff_ids": []}}, layers=5)
    s = serve(registry_serving(manifests, blobs))
    one_line_error(tophan(root, "pull", f"{s.host}/r:t"), "layers")


def test_endless_chain_of_indexes(root: Path, serve: Callable[..., Hostile]) -> None:
    """Each index points at another index (1500 deep): refused after a few levels."""
    chain: dict[str, tuple[str, bytes]] = {}
    body = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    for _ in range(1500):
        chain[_digest(body)] = (OCI_INDEX, body)
        entry = {
            "mediaType": OCI_INDEX,
            "digest": _digest(body),
            "size": len(body),
            "platform": {"os": "linux", "architecture": "amd64"},
        }
        body = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
    chain["t"] = (OCI_INDEX, body)
    s = serve(registry_serving(chain, {}))
    one_line_error(tophan(root, "pull", f"{s.host}/r:t"), "index")
    assert len(s.requests) < 20, f"{len(s.requests)} requests for one pull"


# -- #13: tags ------------------------------------------------------------------------------------


def test_tags_not_a_list(root: Path, serve: Callable[..., Hostile]) -> None:
    def route(path: str, headers: dict[str, str]) -> Answer:
        if path == "/v2/":
            return 200, {}, b"{}"
        return 200, {"Content-Type": "application/json"}, _json({"name": "r", "tags": 5})

    s = serve(route)
    one_line_error(tophan(root, "image", "tags", f"{s.host}/r"), "tags")


def test_tag_pages_that_never_end(root: Path, serve: Callable[..., Hostile]) -> None:
    """A `Link: rel="next"` to itself forever, then to ever new pages: bounded either way."""
    counter = iter(range(10**9))

    def route(path: str, headers: dict[str, str]) -> Answer:
        if path == "/v2/":
            return 200, {}, b"{}"
        link = {"Link": f'<{path}>; rel="next"'}
        if "fresh" in path:
            link = {"Link": f'</v2/r/tags/list?fresh={next(counter)}>; rel="next"'}
        return 200, {"Content-Type": "application/json", **link}, _json({"tags": ["a"]})

    s = serve(route)
    one_line_error(tophan(root, "image", "tags", f"{s.host}/r"), "page")
    assert len(s.requests) < 5
    s2 = serve(lambda p, h: route(p.replace("n=", "fresh=0&n=") if "fresh" not in p else p, h))
    r = tophan(root, "image", "tags", f"{s2.host}/r")
    one_line_error(r, "pages")
    assert len(s2.requests) <= 1002


# -- #6: credentials and token realms -------------------------------------------------------------


def _challenging(realm: str) -> Any:
    def route(path: str, headers: dict[str, str]) -> Answer:
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'}, b"{}"

    return route


def _token_server(serve: Callable[..., Hostile], tls: Path | None = None) -> Hostile:
    return serve(lambda p, h: (200, {}, _json({"token": "t0ken"})), tls)


def test_credentials_never_go_to_a_plain_http_realm_on_another_host(
    root: Path, serve: Callable[..., Hostile]
) -> None:
    token = _token_server(serve)
    reg = serve(_challenging(f"http://{token.host}/token"))
    r = tophan(root, "pull", "--creds", "alice:s3cret", f"{reg.host}/r:t")
    one_line_error(r, "credentials")
    assert all(auth is None for _, auth in token.requests), token.requests


@pytest.fixture
def self_signed(tmp_path: Path) -> Path:
    d = tmp_path / "tls"
    d.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return d


def test_credentials_never_go_to_an_unverified_tls_realm(
    root: Path, serve: Callable[..., Hostile], self_signed: Path
) -> None:
    """The registry is on loopback (trusted-insecure); its realm on another port has a
    certificate nobody verified: the insecure TLS context must not carry over to it."""
    token = _token_server(serve, self_signed)
    reg = serve(_challenging(f"https://{token.host}/token"))
    r = tophan(root, "pull", "--creds", "alice:s3cret", f"{reg.host}/r:t")
    one_line_error(r, "not trusted")
    assert token.requests == [], token.requests  # the handshake failed: no request was made


def test_credentials_go_to_a_realm_on_the_same_insecure_host(
    root: Path, serve: Callable[..., Hostile]
) -> None:
    """The control: a realm on the very host:port the user allowed gets the credentials."""
    seen: list[str | None] = []

    def route(path: str, headers: dict[str, str]) -> Answer:
        if path.startswith("/token"):
            seen.append(headers.get("Authorization"))
            return 200, {}, _json({"token": "t0ken"})
        if headers.get("Authorization") != "Bearer t0ken":
            return 401, {"WWW-Authenticate": f'Bearer realm="http://{host}/token"'}, b"{}"
        return 404, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'

    s = serve(route)
    host = s.host
    r = tophan(root, "pull", "--creds", "alice:s3cret", f"{host}/r:t")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert seen and seen[0] is not None and seen[0].startswith("Basic "), seen
