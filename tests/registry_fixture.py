"""A real registry for tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

Each fixture writes its own config (storage in the test's tmp dir, a free port, a fixed http
secret so upload sessions survive a restart) and stops the process afterwards, even when the test
failed. Variants: open, Basic auth (bcrypt htpasswd), and Bearer tokens from a small token server
(RS256 JWTs signed with ``openssl``, trusted by the registry through ``rootcertbundle``).

Test modules import the fixtures they use: ``from registry_fixture import registry``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tophan import Store
from tophan.image.images import Image

with warnings.catch_warnings():
    # bcrypt for htpasswd: deprecated since 3.11, but still the standard library's only one
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

REGISTRY_BIN = shutil.which("docker-registry")
needs_registry = pytest.mark.skipif(REGISTRY_BIN is None, reason="docker-registry not installed")
USER, PASSWORD = "alice", "s3cret-pw"


def free_port(bind: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((bind, 0))
        return int(s.getsockname()[1])


class Registry:
    def __init__(
        self,
        root: Path,
        auth: str = "",
        *,
        basic: bool = False,
        bind: str = "127.0.0.1",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.root = root
        self.data = root / "data"
        self.config = root / "config.yml"
        self.log = root / "registry.log"
        self.port = free_port(bind)
        self.auth = auth
        self.basic = basic  # send Basic credentials on the fixture's own requests
        self.bind = bind
        self.tls = tls  # (certificate, key)
        self.restarts: list[threading.Thread] = []
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    def ref(self, path: str) -> str:
        return f"{self.host}/{path}"

    def write_config(self) -> None:
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.data}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: {self.bind}:{self.port}\n  secret: tophan-test-secret\n"
            + (
                f"  tls:\n    certificate: {self.tls[0]}\n    key: {self.tls[1]}\n"
                if self.tls
                else ""
            )
            + self.auth
        )

    def start(self) -> None:
        assert REGISTRY_BIN is not None
        self.write_config()
        with open(self.log, "ab") as log:
            proc = self.proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"registry exited: {self.log.read_text()[-2000:]}")
            try:
                conn = self._connection(2)
                conn.request("GET", "/v2/")
                status = conn.getresponse().status
                conn.close()
                if status in (200, 401):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("registry did not come up")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection(self.bind, self.port, timeout=timeout)
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.tls[0]))
        return http.client.HTTPSConnection(self.bind, self.port, timeout=timeout, context=ctx)

    def kill(self) -> None:
        """SIGKILL: the registry dies mid-whatever, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        for t in self.restarts:  # a restart still pending would start one after we stopped
            t.join()
        self.restarts = []
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart_later(self, delay: float) -> threading.Thread:
        def later() -> None:
            time.sleep(delay)
            self.start()

        t = threading.Thread(target=later, daemon=True)
        self.restarts.append(t)
        t.start()
        return t

    # -- looking behind the registry's back ----------------------------------------------------

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.data / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if self.basic:
            raw = f"{USER}:{PASSWORD}".encode()
            h.setdefault("Authorization", "Basic " + base64.b64encode(raw).decode())
        conn = self._connection(10)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            return resp.status, dict(resp.headers), resp.read()
        finally:
            conn.close()


@contextlib.contextmanager
def running(reg: Registry) -> Iterator[Registry]:
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry not installed")
    with running(Registry(tmp_path / "registry")) as reg:
        yield reg


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[Registry]:
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry not installed")
    root = tmp_path / "basic-registry"
    root.mkdir()
    htpasswd = root / "htpasswd"
    hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
    htpasswd.write_text(f"{USER}:{hashed}\n")
    auth = f"auth:\n  htpasswd:\n    realm: tophan-test\n    path: {htpasswd}\n"
    with running(Registry(root, auth, basic=True)) as reg:
        yield reg


def self_signed(root: Path, ip: str) -> tuple[Path, Path]:
    """A certificate for ``ip`` (its own CA), and its key."""
    cert, key = root / "tls.crt", root / "tls.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={ip}"),
            *("-addext", f"subjectAltName=IP:{ip}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# Not 127.0.0.1: tophan treats only localhost/127.0.0.1/::1 as trusted-insecure, so a registry
# here gets full TLS verification, like a remote one.
REMOTE_IP = "127.0.0.2"


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[Registry]:
    if REGISTRY_BIN is None or shutil.which("openssl") is None:
        pytest.skip("docker-registry or openssl not installed")
    root = tmp_path / "tls-registry"
    root.mkdir()
    with running(Registry(root, bind=REMOTE_IP, tls=self_signed(root, REMOTE_IP))) as reg:
        yield reg


@pytest.fixture
def plain_remote_registry(tmp_path: Path) -> Iterator[Registry]:
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry not installed")
    with running(Registry(tmp_path / "plain-registry", bind=REMOTE_IP)) as reg:
        yield reg


# -- Bearer tokens ----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issues registry tokens: ``alice`` gets what she asks for, anonymous users may only pull
    repositories under ``public/``. Counts the tokens it issued."""

    def __init__(self, root: Path, service: str = "tophan-test-registry") -> None:
        self.root = root
        self.service = service
        self.issuer = "tophan-test-issuer"
        self.key = root / "token.key"
        self.cert = root / "token.crt"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=tophan-token"),
                *("-addext", "subjectAltName=IP:127.0.0.1"),
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued: list[dict[str, object]] = []
        self.port = free_port()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                    if (name, pw) != (USER, PASSWORD):
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                token = server.token(user, query.get("scope", []), query.get("service", [""])[0])
                body = json.dumps({"token": token, "access_token": token, "expires_in": 300})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        # Over TLS, as a token server on another host must be (credentials go to it): clients
        # trust its self-signed certificate through cert_dir.
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self.cert, self.key)
        self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.cert_dir = root / "token-ca"
        self.cert_dir.mkdir(exist_ok=True)
        shutil.copy(self.cert, self.cert_dir / "token.crt")
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"https://127.0.0.1:{self.port}/token"

    def token(self, user: str, scopes: list[str], service: str) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = actions.split(",")
            if not user:
                granted = ["pull"] if name.startswith("public/") and "pull" in granted else []
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        self.issued.append({"user": user, "access": access})
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing}.{_b64url(sig)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[tuple[Registry, TokenServer]]:
    if REGISTRY_BIN is None or shutil.which("openssl") is None:
        pytest.skip("docker-registry or openssl not installed")
    root = tmp_path / "token-registry"
    root.mkdir()
    tokens = TokenServer(root)
    auth = (
        "auth:\n  token:\n"
        f"    realm: {tokens.realm}\n    service: {tokens.service}\n"
        f"    issuer: {tokens.issuer}\n    rootcertbundle: {tokens.cert}\n"
    )
    try:
        with running(Registry(root, auth)) as reg:
            yield reg, tokens
    finally:
        tokens.close()


# -- images to move around --------------------------------------------------------------------


def make_layer(store: Store, name: str, files: dict[str, bytes], work: Path) -> str:
    """A layer ``name`` holding ``files`` (path -> content); returns its digest."""
    d = work / f"layer-src-{name}"
    for rel, data in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    d.mkdir(parents=True, exist_ok=True)
    return store.layers.import_dir(str(d), name).digest


def busybox_layer(store: Store, name: str, work: Path) -> str:
    """A runnable base: busybox-static, its applets, /etc/passwd."""
    d = work / f"layer-src-{name}"
    (d / "bin").mkdir(parents=True)
    (d / "etc").mkdir()
    shutil.copy2("/bin/busybox", d / "bin/busybox")
    for applet in ("sh", "cat", "echo", "ls", "true"):
        (d / "bin" / applet).symlink_to("busybox")
    (d / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (d / "etc/motd").write_text("hello from tophan\n")
    return store.layers.import_dir(str(d), name).digest


def random_bytes(n: int, seed: int) -> bytes:
    """Incompressible but reproducible content."""
    import hashlib

    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += hashlib.shake_256(block).digest(65536)
    return bytes(out[:n])


def store_at(path: Path) -> Store:
    return Store.init(str(path))


def tree_file(store: Store, image: Image, rel: str) -> bytes:
    """``rel`` as the image's top-most layer holding it has it."""
    for tree in reversed(image.layer_paths):
        p = Path(tree) / rel
        if p.exists() or p.is_symlink():
            return p.read_bytes()
    raise FileNotFoundError(rel)


@contextlib.contextmanager
def podman(tmp: Path) -> Iterator[list[str]]:
    """A private podman (own storage, vfs, runc) whose state goes away afterwards. The run root
    must be short (podman refuses more than 50 characters), so it lives in /tmp."""
    import tempfile

    run = tempfile.mkdtemp(prefix="tph-pm-", dir="/tmp")
    argv = [
        *("podman", "--root", str(tmp / "pm-root"), "--runroot", run),
        *("--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"),
        *("--events-backend", "file", "--runtime", "runc"),
    ]
    try:
        yield argv
    finally:
        subprocess.run([*argv, "system", "reset", "--force"], capture_output=True, check=False)
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(tmp / "pm-root", ignore_errors=True)


PODMAN_RUN = ["--network=none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
