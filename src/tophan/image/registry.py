"""A client of the OCI distribution spec v1.1: push and pull images, tags, referrers.

Standard library only (``http.client``, ``ssl``, ``concurrent.futures``). What it does, and why:

- **Only missing blobs move.** Push asks ``HEAD /v2/<repo>/blobs/<digest>`` first and, for a blob
  this store has seen in another repository of the same registry, tries a cross-repository mount
  before uploading. Pull skips blobs (and unpacking) the store already has.
- **Verified while streaming, bounded memory.** Blobs are hashed as they arrive, written to the
  store's staging dir and unpacked in the same pass; a digest, size or DiffID mismatch aborts the
  transaction and nothing is stored. Manifests and configs are capped at 4 MiB.
- **Survives dropped connections.** Idempotent requests are retried with backoff; a download
  resumes with ``Range``; a chunked upload asks the registry where it stands and resumes there,
  a monolithic one starts a new session.
- **Auth** as registries challenge: none, Basic, or Bearer tokens from the realm in
  ``WWW-Authenticate`` (anonymous or with credentials). Credentials come from ``--creds``, then the
  containers ``auth.json`` files, then ``~/.docker/config.json`` (including credential helpers).
- **TLS** verified by default (plus ``/etc/containers/certs.d/<host>/*.crt``); loopback
  registries and ``tls_verify=False`` accept unverified TLS and fall back to plain http.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import io
import json
import os
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from tophan.errors import IntegrityError, NotFound, TophanError, UsageError
from tophan.image.blobs import (
    CHUNK,
    MAX_DOCUMENT,
    Aborted,
    check_digest,
    digest_of,
    dumps,
    is_digest,
    loads,
    read_verified,
)
from tophan.image.images import Images
from tophan.image.spec import (
    ACCEPT,
    DOCKER_CONFIG,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    Reference,
    config_diff_ids,
    is_distributable,
    is_index,
    json_list,
    normalize_name,
    parse_manifest,
    referrers_tag,
    remote_reference,
    select_platform,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from tophan._internal.root import StoreRoot

USER_AGENT = "tophan/0.1"
_TRANSIENT_STATUS = (429, 502, 503, 504)
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


class AuthError(TophanError):
    """The registry refused our credentials (or wants some we do not have)."""


class _Transient(Exception):
    """A failure worth retrying: the connection dropped, or the registry is briefly away."""


class _Cancelled(Aborted):
    """Another transfer of the same operation failed: stop this one early."""


# -- options and progress ---------------------------------------------------------------------


@dataclass
class Options:
    """How to talk to registries. ``creds`` is ``(user, password)``; ``chunk_size`` switches
    uploads from monolithic (one PUT) to chunked PATCHes of that many bytes."""

    tls_verify: bool = True
    creds: tuple[str, str] | None = None
    authfile: str | None = None
    jobs: int = 4
    retries: int = 6
    timeout: float = 120.0
    chunk_size: int | None = None
    mount: bool = True
    platform: Platform | None = None
    cert_dir: str | None = None  # CA certificates (*.crt) trusted for every host, as podman's


class Progress(Protocol):
    """What transfers report: one ``start`` per blob, ``update`` with the bytes done so far
    (absolute, so a retry can move it back), one ``finish`` with how it ended."""

    def start(self, key: str, label: str, total: int) -> None: ...

    def update(self, key: str, done: int) -> None: ...

    def finish(self, key: str, status: str) -> None: ...


class NoProgress:
    def start(self, key: str, label: str, total: int) -> None:
        pass

    def update(self, key: str, done: int) -> None:
        pass

    def finish(self, key: str, status: str) -> None:
        pass


@dataclass
class TransferReport:
    """What a push or pull did. ``blobs`` maps digest -> "exists", "mounted", "uploaded",
    "downloaded", "local" (unpacked from a blob already in the store)."""

    reference: str
    digest: str
    blobs: dict[str, str] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    name: str = ""


# -- credentials ------------------------------------------------------------------------------


def _auth_files(options: Options) -> list[str]:
    files = []
    if options.authfile:
        files.append(options.authfile)
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        files.append(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    files.append(os.path.join(runtime, "containers", "auth.json"))
    home = os.path.expanduser("~")
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files.append(os.path.join(config_home, "containers", "auth.json"))
    docker = os.environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    files.append(os.path.join(docker, "config.json"))
    return files


def _auth_keys(host: str, repository: str) -> list[str]:
    """Keys an auth file may use for ``host``/``repository``, most specific first."""
    keys = []
    parts = repository.split("/")
    for i in range(len(parts), 0, -1):
        keys.append(f"{host}/{'/'.join(parts[:i])}")
    keys += [
        host,
        f"https://{host}",
        f"http://{host}",
        f"https://{host}/v1/",
        f"https://{host}/v2/",
    ]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    return keys


def lookup_credentials(host: str, repository: str, options: Options) -> tuple[str, str] | None:
    """``(user, secret)`` for ``host`` from the first auth file that has an entry, else None."""
    if options.creds is not None:
        return options.creds
    for path in _auth_files(options):
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            if path == options.authfile:
                raise UsageError(f"cannot read auth file {path}: {e}") from e
            continue
        if not isinstance(doc, dict):
            continue
        auths = _dict(doc.get("auths"))
        for key in _auth_keys(host, repository):
            entry = auths.get(key)
            if isinstance(entry, dict):
                creds = _decode_entry(entry)
                if creds is not None:
                    return creds
        helpers = _dict(doc.get("credHelpers"))
        helper = helpers.get(host) or doc.get("credsStore")
        if isinstance(helper, str) and helper:
            creds = _credential_helper(helper, host)
            if creds is not None:
                return creds
    return None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _decode_entry(entry: dict[str, Any]) -> tuple[str, str] | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, secret = base64.b64decode(auth).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if sep:
            return user, secret
    name, password = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(password, str):
        return name, password
    return None


def _credential_helper(helper: str, host: str) -> tuple[str, str] | None:
    import subprocess

    try:
        p = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=host.encode(),
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    try:
        doc = json.loads(p.stdout)
        return str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError):
        return None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {...}). Quoted values may hold commas."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            end = i + 1
            value = []
            while end < len(rest) and rest[end] != '"':
                if rest[end] == "\\" and end + 1 < len(rest):
                    end += 1
                value.append(rest[end])
                end += 1
            params[key] = "".join(value)
            i = end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return scheme.lower(), params


# -- the HTTP client --------------------------------------------------------------------------


def _registry_error(resp_body: bytes) -> str:
    try:
        doc = json.loads(resp_body)
        errors = doc.get("errors") or []
        parts = []
        for e in errors[:3]:
            text = f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
            detail = e.get("detail")
            if isinstance(detail, dict) and detail.get("digest"):
                text += f" ({detail['digest']})"
            parts.append(text)
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError, TypeError):
        pass
    return resp_body[:200].decode("utf-8", "replace").strip()


class Client:
    """One registry host. Thread-safe: each thread keeps its own keep-alive connection."""

    def __init__(self, host: str, options: Options | None = None) -> None:
        self.host = host
        self.api_host = "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host
        self.options = options or Options()
        name = self.api_host.rsplit(":", 1)[0] if not self.api_host.startswith("[") else ""
        self.insecure = (
            not self.options.tls_verify or name in _LOOPBACK or (self.api_host.startswith("[::1]"))
        )
        self.scheme: str | None = None
        self._local = threading.local()
        self._all_conns: list[http.client.HTTPConnection] = []  # every thread's, for close()
        self._conns_lock = threading.Lock()
        self._lock = threading.Lock()
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[frozenset[str], str] = {}
        self._creds_cache: dict[str, tuple[str, str] | None] = {}
        self.bytes_sent = 0
        self.bytes_received = 0
        self.cancel = threading.Event()

    # -- connections -----------------------------------------------------------------------

    def _ssl_context(self, netloc: str) -> ssl.SSLContext:
        # Only the very host:port the user allowed (or a loopback registry) goes unverified:
        # a token realm or a redirect elsewhere is verified like any other host.
        if self.insecure and netloc == self.api_host:
            # No CA store to load: nothing will be verified.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        ctx = ssl.create_default_context()
        dirs = [os.path.join(b, netloc) for b in ("/etc/containers/certs.d", "/etc/docker/certs.d")]
        for d in [*dirs, *([self.options.cert_dir] if self.options.cert_dir else [])]:
            with contextlib.suppress(OSError):
                for entry in sorted(os.listdir(d)):
                    if entry.endswith(".crt"):
                        ctx.load_verify_locations(os.path.join(d, entry))
        return ctx

    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conns: dict[tuple[str, str], http.client.HTTPConnection] = (
            getattr(self._local, "conns", None) or {}
        )
        self._local.conns = conns
        conn = conns.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(
                    netloc,
                    timeout=self.options.timeout,
                    context=self._ssl_context(netloc),
                    blocksize=CHUNK,
                )
            else:
                conn = http.client.HTTPConnection(
                    netloc, timeout=self.options.timeout, blocksize=CHUNK
                )
            conns[(scheme, netloc)] = conn
            with self._conns_lock:
                self._all_conns.append(conn)
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        conns = getattr(self._local, "conns", {})
        conn = conns.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close every thread's connections (the worker threads are gone by now)."""
        with self._conns_lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            conn.close()
        self._local.conns = {}

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | IO[bytes] | None,
    ) -> http.client.HTTPResponse:
        """One request on this thread's connection; connection-level failures are transient."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._conn(parts.scheme, parts.netloc)
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn.getresponse()
        except ssl.SSLCertVerificationError as e:
            self._drop(parts.scheme, parts.netloc)
            raise TophanError(
                f"TLS certificate of {parts.netloc} not trusted: {e.verify_message}",
                "add its CA to /etc/containers/certs.d/HOST/ca.crt or pass --tls-verify=false",
            ) from e
        except (OSError, http.client.HTTPException) as e:
            self._drop(parts.scheme, parts.netloc)
            raise _Transient(f"{method} {parts.netloc}: {e or type(e).__name__}") from e

    # -- scheme and auth -------------------------------------------------------------------

    def base(self) -> str:
        self._ensure_ping()
        return f"{self.scheme}://{self.api_host}"

    def _ensure_ping(self) -> None:
        with self._lock:
            if self.scheme is not None:
                return
            schemes = ["https", "http"] if self.insecure else ["https"]
            last: Exception | None = None
            # Fewer tries than for a transfer: a host that never answered is more likely a
            # wrong address than a registry restarting.
            tries = min(self.options.retries, 2) + 1
            for attempt in range(tries):
                for scheme in schemes:
                    try:
                        resp = self._exchange(
                            "GET", f"{scheme}://{self.api_host}/v2/", self._base_headers(), None
                        )
                    except _Transient as e:
                        last = e
                        continue
                    body = resp.read()
                    if resp.status in (200, 401):
                        self.scheme = scheme
                        if resp.status == 401:
                            self._challenge = self._read_challenge(resp)
                        return
                    if resp.status in _TRANSIENT_STATUS:
                        last = _Transient(f"HTTP {resp.status}")
                        continue
                    raise TophanError(
                        f"{self.host} is not an OCI registry: GET /v2/ answered {resp.status}"
                        f" {_registry_error(body)}",
                        "check the host name and port",
                    )
                if attempt + 1 < tries:
                    time.sleep(_backoff(attempt))
            hint = "is it running and is the port right?"
            if not self.insecure:
                hint += " for a plain-http registry pass --tls-verify=false"
            raise TophanError(f"cannot reach registry {self.host}: {last}", hint)

    @staticmethod
    def _read_challenge(resp: http.client.HTTPResponse) -> tuple[str, dict[str, str]] | None:
        for value in resp.headers.get_all("WWW-Authenticate") or []:
            scheme, params = _parse_challenge(value)
            if scheme in ("bearer", "basic"):
                return scheme, params
        return None

    def _base_headers(self) -> dict[str, str]:
        return {"User-Agent": USER_AGENT}

    def _credentials(self, repository: str) -> tuple[str, str] | None:
        if repository not in self._creds_cache:
            self._creds_cache[repository] = lookup_credentials(self.host, repository, self.options)
        return self._creds_cache[repository]

    def _authorization(self, scopes: Iterable[str], repository: str) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        scheme, params = challenge
        creds = self._credentials(repository)
        if scheme == "basic":
            if creds is None:
                return None
            raw = f"{creds[0]}:{creds[1]}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        key = frozenset(scopes)
        with self._lock:
            token = self._tokens.get(key)
        if token is None:
            token = self._fetch_token(params, sorted(key), creds)
            with self._lock:
                self._tokens[key] = token
        return f"Bearer {token}"

    def _fetch_token(
        self, params: dict[str, str], scopes: list[str], creds: tuple[str, str] | None
    ) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"{self.host} sent a Bearer challenge without a realm")
        query = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query += [("scope", s) for s in scopes]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = self._base_headers()
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https"):
            raise AuthError(f"{self.host}: token realm {realm!r} is not an http(s) URL")
        if creds is not None:
            # Credentials travel over verified TLS (_ssl_context verifies every other host),
            # or to the very host:port the user allowed without it: never in plain text to a
            # host a registry named.
            if parts.scheme == "http" and parts.netloc != self.api_host:
                raise AuthError(
                    f"{self.host} sends credentials to token realm {parts.netloc} over plain"
                    " http: refused",
                    "a token server on another host must use https",
                )
            raw = f"{creds[0]}:{creds[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        resp = self._retrying(lambda: self._exchange("GET", url, headers, None), "token request")
        body = resp.read(MAX_DOCUMENT)
        if resp.status == 401:
            hint = "check the user name and password" if creds else "log in first (--creds)"
            raise AuthError(f"authentication to {self.host} failed", hint)
        if resp.status != 200:
            raise AuthError(
                f"token server {parts.netloc} answered {resp.status}: {_registry_error(body)}"
            )
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthError(f"token server {parts.netloc} sent no token")
        return token

    def _retrying(self, fn: Callable[[], Any], what: str) -> Any:
        last: _Transient | None = None
        for attempt in range(self.options.retries + 1):
            if self.cancel.is_set():
                raise _Cancelled()
            try:
                return fn()
            except _Transient as e:
                last = e
                if attempt < self.options.retries:
                    time.sleep(_backoff(attempt))
        raise TophanError(
            f"{what} failed after {self.options.retries + 1} tries: {last}",
            "the registry is unreachable or keeps dropping the connection",
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        repository: str,
        scopes: Iterable[str],
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], Any] | None = None,
        length: int | None = None,
        retry: bool = True,
        follow: bool = False,
    ) -> http.client.HTTPResponse:
        """An authenticated request. Transient failures are retried when ``retry`` (``body`` is
        bytes, or a factory giving a fresh stream of ``length`` bytes per call). A 401 takes the
        new challenge and tries once more. The caller reads (and so frees) the response."""
        if url.startswith("/"):
            url = self.base() + url
        wanted = list(scopes)
        for auth_round in range(2):
            attempt = functools.partial(
                self._attempt, method, url, repository, wanted, headers, body, length
            )
            resp: http.client.HTTPResponse = (
                self._retrying(attempt, f"{method} {self.host}") if retry else attempt()
            )
            if resp.status == 401 and auth_round == 0:
                challenge = self._read_challenge(resp)
                resp.read()
                if challenge is None:
                    break
                scheme, params = challenge
                with self._lock:
                    self._challenge = challenge
                    self._tokens.clear()
                if scheme == "bearer" and params.get("scope"):
                    wanted = sorted(set(wanted) | set(params["scope"].split(" ")))
                if scheme == "basic" and self._credentials(repository) is None:
                    break
                continue
            if follow and resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                resp.read()
                if not location:
                    raise TophanError(f"{self.host} redirected without a Location")
                return self._redirected(urllib.parse.urljoin(url, location), headers)
            return resp
        raise AuthError(
            f"{self.host} requires authentication for {repository}",
            "log in (podman login / skopeo login write auth.json) or pass --creds USER:PASS",
        )

    def _attempt(
        self,
        method: str,
        url: str,
        repository: str,
        scopes: list[str],
        headers: dict[str, str] | None,
        body: bytes | Callable[[], Any] | None,
        length: int | None,
    ) -> http.client.HTTPResponse:
        h = self._base_headers()
        # Credentials only ever go to the registry itself, not to a host a Location names.
        if urllib.parse.urlsplit(url).netloc == self.api_host:
            auth = self._authorization(scopes, repository)
            if auth:
                h["Authorization"] = auth
        h.update(headers or {})
        payload: Any
        if callable(body):
            payload = body()
            h["Content-Length"] = str(length or 0)
        else:
            payload = body
            if method in ("PUT", "POST", "PATCH") and "Content-Length" not in h:
                h["Content-Length"] = str(len(body or b""))
        resp = self._exchange(method, url, h, payload)
        if resp.status in _TRANSIENT_STATUS:
            resp.read()
            path = urllib.parse.urlsplit(url).path
            raise _Transient(f"{method} {path}: HTTP {resp.status}")
        return resp

    def _redirected(self, url: str, headers: dict[str, str] | None) -> http.client.HTTPResponse:
        # Blob storage behind a redirect (S3, a CDN) gets no registry credentials.
        h = self._base_headers()
        h.update(headers or {})
        for _ in range(5):
            get = functools.partial(self._exchange, "GET", url, h, None)
            resp: http.client.HTTPResponse = self._retrying(get, "blob download")
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("Location") or ""
            resp.read()
            url = urllib.parse.urljoin(url, location)
        raise TophanError(f"too many redirects fetching a blob from {self.host}")


def _backoff(attempt: int) -> float:
    return float(min(0.25 * (2**attempt), 4.0))


def _fail(resp: http.client.HTTPResponse, what: str) -> TophanError:
    body = resp.read(65536)
    detail = _registry_error(body)
    if resp.status == 401:
        return AuthError(f"{what}: not authorized ({detail})", "check your credentials")
    if resp.status == 403:
        return AuthError(f"{what}: denied ({detail})", "your account lacks access to it")
    if resp.status == 404:
        return NotFound(f"{what}: not found ({detail})")
    return TophanError(f"{what}: registry answered {resp.status} ({detail})")


# -- one repository ---------------------------------------------------------------------------


@dataclass
class Manifest:
    data: bytes
    media_type: str
    digest: str

    def doc(self) -> dict[str, Any]:
        return loads(self.data, f"manifest {self.digest}")


class Repository:
    """``/v2/<path>/…`` of one registry."""

    def __init__(self, client: Client, path: str) -> None:
        self.client = client
        self.path = path

    @property
    def pull_scope(self) -> list[str]:
        return [f"repository:{self.path}:pull"]

    @property
    def push_scope(self) -> list[str]:
        return [f"repository:{self.path}:pull,push"]

    def _req(self, method: str, url: str, scopes: list[str], **kw: Any) -> http.client.HTTPResponse:
        return self.client.request(method, url, repository=self.path, scopes=scopes, **kw)

    # -- manifests ---------------------------------------------------------------------------

    def get_manifest(self, reference: str, *, accept: Iterable[str] = ACCEPT) -> Manifest:
        """The manifest (or index) ``reference`` names, verified against its digest: the digest
        in the reference when it has one, else the registry's ``Docker-Content-Digest``."""
        what = f"{self.client.host}/{self.path}:{reference}"
        resp = self._req(
            "GET",
            f"/v2/{self.path}/manifests/{reference}",
            self.pull_scope,
            headers={"Accept": ", ".join(accept)},
        )
        if resp.status != 200:
            if resp.status == 404:
                resp.read()
                raise NotFound(f"no such image: {what}", "check the repository and tag")
            raise _fail(resp, f"manifest {what}")
        length = resp.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
        want = reference if is_digest(reference) else None
        data = read_verified(resp, want, size, f"manifest {what}")
        self.client.bytes_received += len(data)
        digest = want or digest_of(data)
        claimed = resp.headers.get("Docker-Content-Digest")
        if want is None and claimed and claimed.startswith("sha256:") and claimed != digest:
            raise IntegrityError(
                f"manifest {what} does not match the digest the registry gives"
                f" ({claimed}, content is {digest})",
                "the registry or something between us corrupted it",
            )
        media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        doc = loads(data, f"manifest {what}")
        media_type = str(doc.get("mediaType") or media_type or OCI_MANIFEST)
        return Manifest(data, media_type, digest)

    def head_manifest(self, reference: str) -> str | None:
        """The digest ``reference`` resolves to, or None when there is no such manifest."""
        resp = self._req(
            "HEAD",
            f"/v2/{self.path}/manifests/{reference}",
            self.pull_scope,
            headers={"Accept": ", ".join(ACCEPT)},
        )
        resp.read()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise _fail(resp, f"manifest {self.path}:{reference}")
        digest = resp.headers.get("Docker-Content-Digest")
        if digest and is_digest(digest):
            return digest
        return self.get_manifest(reference).digest

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> tuple[str, bool]:
        """Upload a manifest under a tag or digest. Returns (digest, whether the registry said
        ``OCI-Subject``, i.e. maintains referrers itself)."""
        what = f"{self.client.host}/{self.path}:{reference}"
        resp = self._req(
            "PUT",
            f"/v2/{self.path}/manifests/{reference}",
            self.push_scope,
            headers={"Content-Type": media_type},
            body=data,
        )
        if resp.status not in (200, 201, 202):
            body = resp.read(65536)
            detail = _registry_error(body)
            if "BLOB_UNKNOWN" in detail or "MANIFEST_BLOB_UNKNOWN" in detail:
                raise IntegrityError(f"registry refused manifest {what}: {detail}")
            if resp.status in (401, 403):
                raise AuthError(f"push of {what} denied ({detail})", "check your credentials")
            raise TophanError(f"registry refused manifest {what}: {resp.status} {detail}")
        resp.read()
        self.client.bytes_sent += len(data)
        digest = digest_of(data)
        claimed = resp.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise IntegrityError(f"registry stored manifest {what} as {claimed}, expected {digest}")
        return digest, resp.headers.get("OCI-Subject") is not None

    # -- blobs -------------------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        resp = self._req("HEAD", f"/v2/{self.path}/blobs/{digest}", self.pull_scope)
        resp.read()
        # A redirect to blob storage (S3, a CDN) means the registry has it.
        if resp.status in (200, 301, 302, 303, 307, 308):
            return True
        if resp.status == 404:
            return False
        raise _fail(resp, f"blob {digest}")

    def open_blob(
        self, digest: str, size: int, on_read: Callable[[int], None] | None = None
    ) -> BlobStream:
        return BlobStream(self, digest, size, on_read)

    def read_blob(self, digest: str, size: int, what: str) -> bytes:
        with self.open_blob(digest, size) as stream:
            data = read_verified(stream, digest, size, what)  # type: ignore[arg-type]
        return data

    def mount_blob(self, digest: str, source: str) -> str | None:
        """Cross-repository mount from ``source``; None when mounted, else the upload URL the
        registry opened instead (so a failed mount costs no extra round trip)."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        resp = self._req(
            "POST",
            f"/v2/{self.path}/blobs/uploads/?{query}",
            [*self.push_scope, f"repository:{source}:pull"],
        )
        resp.read()
        if resp.status == 201:
            return None
        if resp.status == 202:
            return self._location(resp)
        raise _fail(resp, f"mount of {digest} from {source}")

    def _location(self, resp: http.client.HTTPResponse) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise TophanError(f"{self.client.host} opened an upload without a Location")
        return urllib.parse.urljoin(self.client.base() + "/", location)

    def _start_upload(self) -> tuple[str, int]:
        resp = self._req("POST", f"/v2/{self.path}/blobs/uploads/", self.push_scope)
        resp.read()
        if resp.status != 202:
            raise _fail(resp, f"upload to {self.path}")
        min_chunk = resp.headers.get("OCI-Chunk-Min-Length")
        return self._location(resp), int(min_chunk) if min_chunk and min_chunk.isdigit() else 0

    def upload_blob(
        self,
        digest: str,
        size: int,
        opener: Callable[[], IO[bytes]],
        *,
        location: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload ``size`` bytes that ``opener()`` reads (from the start, each call).

        Monolithic (one PUT) unless ``Options.chunk_size`` asks for chunks. A dropped
        connection restarts a monolithic upload in a new session and resumes a chunked one
        where the registry says it stands."""
        chunk = self.client.options.chunk_size
        attempts = self.client.options.retries + 1
        last: Exception | None = None
        session = _Session(location, 0)
        for attempt in range(attempts):
            if self.client.cancel.is_set():
                raise _Cancelled()
            try:
                if session.location is None:
                    session.location, session.min_chunk = self._start_upload()  # retried inside
                if chunk:
                    # keeps session.location current: a resume must use the latest URL
                    self._upload_chunked(
                        digest, size, opener, session, max(chunk, session.min_chunk), on_progress
                    )
                else:
                    self._upload_monolithic(digest, size, opener, session.location, on_progress)
                return
            except _Transient as e:
                last = e
                if not chunk:
                    session.location = None
                if attempt + 1 < attempts:
                    time.sleep(_backoff(attempt))
            except _SessionLost as e:
                last = e
                session.location = None
        raise TophanError(
            f"upload of {digest} to {self.client.host}/{self.path} failed: {last}",
            "the registry is unreachable or keeps dropping the connection; retry",
        )

    def _put_url(self, location: str, digest: str) -> str:
        sep = "&" if "?" in location else "?"
        return f"{location}{sep}{urllib.parse.urlencode({'digest': digest})}"

    def _upload_monolithic(
        self,
        digest: str,
        size: int,
        opener: Callable[[], IO[bytes]],
        location: str,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        streams: list[_Counting] = []

        def fresh() -> _Counting:
            streams.append(_Counting(opener(), on_progress, self.client.cancel))
            return streams[-1]

        try:
            resp = self._req(
                "PUT",
                self._put_url(location, digest),
                self.push_scope,
                headers={"Content-Type": "application/octet-stream"},
                body=fresh,
                length=size,
                retry=False,
            )
            self._finish_upload(resp, digest, size)
        finally:
            for stream in streams:
                stream.close()
        self.client.bytes_sent += streams[-1].count if streams else 0

    def _finish_upload(self, resp: http.client.HTTPResponse, digest: str, size: int) -> None:
        if resp.status in (404,):
            resp.read()
            raise _SessionLost("the upload session expired")
        if resp.status != 201:
            body = resp.read(65536)
            detail = _registry_error(body)
            if "BLOB_UPLOAD_INVALID" in detail or "BLOB_UPLOAD_UNKNOWN" in detail:
                raise _SessionLost(detail)
            raise TophanError(f"registry refused blob {digest}: {resp.status} {detail}")
        resp.read()
        claimed = resp.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise IntegrityError(f"registry stored blob {digest} as {claimed}")

    def _upload_chunked(
        self,
        digest: str,
        size: int,
        opener: Callable[[], IO[bytes]],
        session: _Session,
        chunk: int,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        assert session.location is not None
        offset = self._upload_offset(session.location)
        with opener() as src:
            while offset < size:
                n = min(chunk, size - offset)
                src.seek(offset)
                part = _Counting(_Limited(src, n), None, self.client.cancel)
                base = offset
                if on_progress is not None:
                    on_progress(base)
                resp = self._req(
                    "PATCH",
                    session.location,
                    self.push_scope,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + n - 1}",
                    },
                    body=functools.partial(_same, part),
                    length=n,
                    retry=False,
                )
                if resp.status == 416:
                    resp.read()
                    offset = self._upload_offset(session.location)
                    continue
                if resp.status == 404:
                    resp.read()
                    raise _SessionLost("the upload session expired")
                if resp.status != 202:
                    raise _fail(resp, f"chunk of {digest}")
                resp.read()
                self.client.bytes_sent += n
                session.location = self._location(resp)
                offset = _range_end(resp.headers.get("Range"), offset + n)
                if on_progress is not None:
                    on_progress(offset)
        url = self._put_url(session.location, digest)
        resp = self._req("PUT", url, self.push_scope, retry=False)
        self._finish_upload(resp, digest, size)

    def _upload_offset(self, location: str) -> int:
        resp = self._req("GET", location, self.push_scope)
        resp.read()
        if resp.status == 404:
            raise _SessionLost("the upload session is gone")
        if resp.status not in (200, 204):
            raise _fail(resp, "upload status")
        return _range_end(resp.headers.get("Range"), 0)

    # -- tags and referrers ------------------------------------------------------------------

    def tags(self, page_size: int = 1000) -> list[str]:
        """Every tag, following ``Link`` pagination."""
        out: list[str] = []
        url = f"/v2/{self.path}/tags/list?n={page_size}"
        seen: set[str] = set()
        while url:
            if url in seen:
                raise IntegrityError(f"{self.client.host}: the tag list's next page is a page seen")
            if len(seen) >= MAX_TAG_PAGES:
                raise IntegrityError(
                    f"{self.client.host}: the tag list goes on past {MAX_TAG_PAGES} pages",
                    "the registry's pagination is broken (or hostile)",
                )
            seen.add(url)
            resp = self._req("GET", url, self.pull_scope)
            if resp.status == 404:
                resp.read()
                raise NotFound(f"no such repository: {self.client.host}/{self.path}")
            if resp.status != 200:
                raise _fail(resp, f"tags of {self.path}")
            doc = loads(read_verified(resp, None, None, "tag list"), "tag list")
            out += [str(t) for t in json_list(doc, "tags", f"tag list of {self.path}")]
            url = _next_link(resp.headers.get("Link"), url)
        return out

    def referrers(self, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose ``subject`` is ``digest``: the referrers API, or
        (when the registry has none: 404) the ``<alg>-<hex>`` tag schema's index."""
        check_digest(digest)
        query = (
            f"?{urllib.parse.urlencode({'artifactType': artifact_type})}" if artifact_type else ""
        )
        url: str | None = f"/v2/{self.path}/referrers/{digest}{query}"
        out: list[dict[str, Any]] = []
        filtered = False
        while url:
            resp = self._req("GET", url, self.pull_scope, headers={"Accept": OCI_INDEX})
            if resp.status == 404 and not out:
                resp.read()
                return self._referrers_by_tag(digest, artifact_type)
            if resp.status != 200:
                raise _fail(resp, f"referrers of {digest}")
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            doc = loads(read_verified(resp, None, None, "referrers"), "referrers")
            if ctype and ctype != OCI_INDEX and "manifests" not in doc:
                # something answered that is not a referrers API (a proxy's HTML page)
                return self._referrers_by_tag(digest, artifact_type)
            filtered = "artifactType" in (resp.headers.get("OCI-Filters-Applied") or "")
            out += [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
            url = _next_link(resp.headers.get("Link"), url)
        if artifact_type and not filtered:
            out = [m for m in out if m.get("artifactType") == artifact_type]
        return out

    def _referrers_by_tag(self, digest: str, artifact_type: str | None) -> list[dict[str, Any]]:
        try:
            index = self.get_manifest(referrers_tag(digest), accept=[OCI_INDEX]).doc()
        except NotFound:
            return []
        out = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
        if artifact_type:
            out = [m for m in out if m.get("artifactType") == artifact_type]
        return out

    def push_referrer(self, data: bytes, media_type: str, reference: str | None = None) -> str:
        """Push a manifest that has a ``subject``; when the registry does not maintain referrers
        itself (no ``OCI-Subject`` in its answer), add it to the tag schema's index."""
        doc = loads(data, "manifest")
        subject = Descriptor.parse(doc.get("subject"), "subject")
        digest = digest_of(data)
        _, handled = self.put_manifest(reference or digest, data, media_type)
        if handled:
            return digest
        tag = referrers_tag(subject.digest)
        try:
            index = self.get_manifest(tag, accept=[OCI_INDEX]).doc()
        except NotFound:
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
        config = _dict(doc.get("config"))
        artifact_type = doc.get("artifactType") or config.get("mediaType")
        if artifact_type:
            entry["artifactType"] = artifact_type
        if isinstance(doc.get("annotations"), dict) and doc["annotations"]:
            entry["annotations"] = doc["annotations"]
        manifests = [m for m in index.get("manifests") or [] if m.get("digest") != digest]
        index["manifests"] = [*manifests, entry]
        self.put_manifest(tag, dumps(index), OCI_INDEX)
        return digest


@dataclass
class _Session:
    """An upload session: its current URL (None: open a new one) and minimum chunk."""

    location: str | None
    min_chunk: int


class _SessionLost(Exception):
    """The registry forgot an upload session (restarted, expired): start a new one."""


def _range_end(header: str | None, default: int) -> int:
    """Bytes the registry holds from its ``Range: [bytes=]0-<last>`` header."""
    if not header:
        return default
    value = header.split("=", 1)[-1]
    _start, _, end = value.partition("-")
    try:
        last = int(end)
    except ValueError:
        return default
    # distribution says "0-0" for an empty upload as well as for one byte; chunks are never
    # one byte long, so reading it as empty costs at most a 416 and a retry.
    return 0 if last <= 0 else last + 1


MAX_TAG_PAGES = 1000  # a million tags at the default page size


def _next_link(header: str | None, current: str) -> str:
    if not header or 'rel="next"' not in header:
        return ""
    target = header.split(";", 1)[0].strip().strip("<>")
    return urllib.parse.urljoin(current, target) if target else ""


class _Counting:
    """A body stream for http.client: counts what is read, reports progress, honours cancel."""

    def __init__(
        self,
        src: IO[bytes] | _Limited,
        on_progress: Callable[[int], None] | None,
        cancel: threading.Event,
    ) -> None:
        self.src = src
        self.on_progress = on_progress
        self.cancel = cancel
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if self.cancel.is_set():
            raise _Cancelled()
        data = self.src.read(n if n > 0 else CHUNK)
        self.count += len(data)
        if self.on_progress is not None:
            self.on_progress(self.count)
        return data

    def close(self) -> None:
        if isinstance(self.src, _Limited):
            return
        self.src.close()


def _same(obj: Any) -> Any:
    return obj


class _Limited:
    def __init__(self, src: IO[bytes], n: int) -> None:
        self.src = src
        self.left = n

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.src.read(min(n if n > 0 else CHUNK, self.left))
        self.left -= len(data)
        return data


class BlobStream(io.RawIOBase):
    """A blob download that resumes after a dropped connection (``Range`` from where it broke;
    a registry that ignores ``Range`` is read past the bytes we have)."""

    def __init__(
        self,
        repo: Repository,
        digest: str,
        size: int,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.repo = repo
        self.digest = digest
        self.size = size
        self.on_read = on_read
        self.offset = 0
        self.resp: http.client.HTTPResponse | None = None
        self.failures = 0

    def readable(self) -> bool:
        return True

    def _open(self) -> http.client.HTTPResponse:
        client = self.repo.client
        headers = {"Range": f"bytes={self.offset}-"} if self.offset else {}
        resp = self.repo._req(
            "GET",
            f"/v2/{self.repo.path}/blobs/{self.digest}",
            self.repo.pull_scope,
            headers=headers,
            follow=True,
        )
        if resp.status == 404:
            resp.read()
            raise NotFound(
                f"blob {self.digest} is missing from {client.host}/{self.repo.path}",
                "the registry's copy of the image is incomplete",
            )
        if resp.status == 206 and self.offset:
            start = (resp.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start != str(self.offset):
                resp.close()
                raise _Transient(f"asked for bytes from {self.offset}, got range {start!r}")
            return resp
        if resp.status != 200:
            raise _fail(resp, f"blob {self.digest}")
        skip = self.offset
        while skip:
            data = resp.read(min(skip, CHUNK))
            if not data:
                raise _Transient("blob ended while skipping to the resume point")
            skip -= len(data)
        return resp

    def readinto(self, b: Any) -> int:
        client = self.repo.client
        view = memoryview(b).cast("B")
        while True:
            if client.cancel.is_set():
                raise _Cancelled()
            try:
                if self.resp is None:
                    self.resp = self._open()  # its requests are retried inside
                n = self.resp.readinto(view)
                if n == 0 and self.offset < self.size:
                    raise _Transient("connection closed before the end of the blob")
            except (_Transient, OSError, http.client.HTTPException) as e:
                self._close_resp(broken=True)
                self.failures += 1
                if self.failures > client.options.retries:
                    raise TophanError(
                        f"download of {self.digest} failed: {e}", "the registry keeps dropping it"
                    ) from e
                time.sleep(_backoff(self.failures - 1))
                continue
            self.offset += n
            client.bytes_received += n
            if self.on_read is not None and n:
                self.on_read(self.offset)
            return int(n)

    def _close_resp(self, broken: bool = False) -> None:
        if self.resp is not None:
            if broken:
                self.resp.close()
            self.resp = None

    def close(self) -> None:
        if self.resp is not None:
            # An unread remainder would confuse the next request on this connection.
            if not self.resp.isclosed():
                self.resp.close()
            self.resp = None
        super().close()


# -- push and pull ----------------------------------------------------------------------------


def _open_blob(path: str) -> IO[bytes]:
    return open(path, "rb", buffering=0)


def _sources_path(store: StoreRoot, digest: str) -> str:
    return store.path("refs", "blobsources", digest.replace(":", "-"))


def known_sources(store: StoreRoot, digest: str) -> list[str]:
    """``host/repository`` places this store pushed ``digest`` to or pulled it from."""
    try:
        with open(_sources_path(store, digest), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


def remember_sources(store: StoreRoot, place: str, digests: Iterable[str]) -> None:
    """Best effort: a lost entry only costs a mount that becomes an upload."""
    from tophan._internal.fs import atomic_write

    os.makedirs(store.path("refs", "blobsources"), 0o755, exist_ok=True)
    for digest in set(digests):
        places = [p for p in known_sources(store, digest) if p != place]
        places = [place, *places][:16]
        with contextlib.suppress(OSError):
            atomic_write(_sources_path(store, digest), ("\n".join(places) + "\n").encode())


def _run_parallel(jobs: int, tasks: Sequence[Callable[[], None]], cancel: threading.Event) -> None:
    """Run ``tasks`` on ``jobs`` threads; the first failure cancels the rest and is raised."""
    if not tasks:
        return
    with ThreadPoolExecutor(max(1, min(jobs, len(tasks)))) as pool:
        futures: list[Future[None]] = [pool.submit(t) for t in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            cancel.set()
            for f in futures:
                f.cancel()
            wait(futures)
            real = [e for e in errors if not isinstance(e, _Cancelled)]
            raise (real or errors)[0]  # type: ignore[misc]


def push(
    store: StoreRoot,
    image_name: str,
    destination: str,
    *,
    options: Options | None = None,
    progress: Progress | None = None,
) -> TransferReport:
    """Push a stored image to ``destination`` (``host/repo[:tag]``). Blobs the registry has are
    skipped, blobs it has elsewhere are mounted, the rest are uploaded; the manifest goes last,
    byte for byte as stored (so its digest — and any signature over it — stays the same)."""
    options = options or Options()
    progress = progress or NoProgress()
    image = Images(store).get(image_name, ensure_layers=False)
    ref = remote_reference(destination)
    if ref.digest and ref.digest != image.digest:
        raise UsageError(
            f"cannot push {image.name} ({image.digest}) as {ref.digest}", "push to a tag instead"
        )
    client = Client(ref.domain, options)
    repo = Repository(client, ref.path)
    report = TransferReport(str(ref), image.digest, name=image.name)
    manifest_bytes = Images(store).blobs.read(image.digest, "manifest")
    blobs: list[Descriptor] = [image.config_descriptor]
    for li in image.layer_infos:
        blobs.append(Descriptor(li.media_type, li.blob, li.blob_size, {}))
    unique = list({d.digest: d for d in blobs}.values())
    for d in unique:
        if not Images(store).blobs.exists(d.digest):
            raise NotFound(
                f"blob {d.digest} of {image.name} is missing from the store", "run `fsck`"
            )
    place = f"{ref.domain}/{ref.path}"
    lock = threading.Lock()

    def send(d: Descriptor) -> None:
        key = d.digest
        progress.start(key, d.digest[7:19], d.size)
        if repo.blob_exists(d.digest):
            action = "exists"
        else:
            action = ""
            location = None
            if options.mount:
                for source in known_sources(store, d.digest):
                    host, _, path = source.partition("/")
                    if host == ref.domain and path != ref.path:
                        location = repo.mount_blob(d.digest, path)
                        if location is None:
                            action = "mounted"
                        break
            if not action:
                path = Images(store).blobs.path(d.digest)
                repo.upload_blob(
                    d.digest,
                    d.size,
                    functools.partial(_open_blob, path),
                    location=location,
                    on_progress=lambda n: progress.update(key, n),
                )
                action = "uploaded"
        progress.finish(key, action)
        with lock:
            report.blobs[d.digest] = action

    try:
        _run_parallel(options.jobs, [functools.partial(send, d) for d in unique], client.cancel)
        tag = ref.tag or ref.digest or "latest"
        digest, _ = repo.put_manifest(tag, manifest_bytes, image.media_type)
        if digest != image.digest:
            raise IntegrityError(f"pushed manifest hashed to {digest}, expected {image.digest}")
    finally:
        client.close()
    report.bytes_sent = client.bytes_sent
    remember_sources(store, place, [d.digest for d in unique])
    return report


MAX_INDEX_DEPTH = 4  # indexes over indexes: OCI allows them; real images nest one or two


def resolve(
    repo: Repository, reference: str, platform: Platform, what: str
) -> tuple[Manifest, str | None]:
    """The image manifest ``reference`` names (choosing ``platform`` from an index), and the
    index's digest when there was one."""
    top = current = repo.get_manifest(reference)
    for _ in range(MAX_INDEX_DEPTH):
        doc = current.doc()
        if not is_index(doc, current.media_type):
            return current, (None if current is top else top.digest)
        entries = [
            Descriptor.parse(m, f"{what}: index entry {i}")
            for i, m in enumerate(json_list(doc, "manifests", what))
        ]
        chosen = select_platform(entries, platform, what)
        current = repo.get_manifest(chosen.digest)
        if len(current.data) != chosen.size:
            raise IntegrityError(f"{what}: manifest {chosen.digest} size differs from the index")
    raise IntegrityError(
        f"{what}: an index of indexes nested more than {MAX_INDEX_DEPTH} levels deep",
        "a real image has an index over its manifests, rarely one more level",
    )


def pull(
    store: StoreRoot,
    source: str,
    name: str | None = None,
    *,
    options: Options | None = None,
    progress: Progress | None = None,
    trust: str = "",
) -> TransferReport:
    """Pull ``source`` (``host/repo[:tag|@digest]``) into the store as ``name`` (default: the
    reference as written). ``trust``: the policy's verdict (``tophan.trust.record``), stored in
    the image's ref with it. Layers the store has are neither downloaded nor unpacked again;
    everything else is verified while it streams and published in one step, or not at all."""
    from tophan.image.images import Images

    options = options or Options()
    progress = progress or NoProgress()
    ref = remote_reference(source)
    local = normalize_name(name or source)
    platform = options.platform or Platform.host()
    client = Client(ref.domain, options)
    repo = Repository(client, ref.path)
    images = Images(store)
    report = TransferReport(str(ref), "", name=local)
    try:
        manifest, index_digest = resolve(repo, ref.reference, platform, str(ref))
        report.digest = manifest.digest
        doc = parse_manifest(manifest.doc(), manifest.media_type, str(ref))
        config = Descriptor.parse(doc["config"], "config")
        if config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
            raise UsageError(
                f"{ref} is an artifact ({config.media_type}), not a container image",
                "pull it with an artifact tool such as oras",
            )
        layers = [Descriptor.parse(d, f"layer {i}") for i, d in enumerate(doc["layers"])]
        for d in layers:
            if not is_distributable(d.media_type):
                raise UsageError(
                    f"{ref}: layer {d.digest} is non-distributable ({d.media_type})",
                    "such layers must be fetched from their vendor; tophan does not",
                )
        with images.transaction() as tx:
            tx.add_bytes(manifest.data, manifest.digest, what=f"manifest of {ref}")
            if tx.has_blob(config.digest):
                config_bytes = images.blobs.read(config.digest, "config")
                report.blobs[config.digest] = "exists"
            else:
                config_bytes = repo.read_blob(config.digest, config.size, f"config of {ref}")
                tx.add_bytes(config_bytes, config.digest, what=f"config of {ref}")
                report.blobs[config.digest] = "downloaded"
            raw_config = loads(config_bytes, f"config of {ref}")
            diff_ids = config_diff_ids(raw_config, len(layers), str(ref))
            pairs = {d.digest: (d, diff_id) for d, diff_id in zip(layers, diff_ids, strict=True)}
            lock = threading.Lock()

            def fetch(d: Descriptor, diff_id: str) -> None:
                key = d.digest
                progress.start(key, d.digest[7:19], d.size)
                if tx.has_blob(d.digest) and tx.tree_for(diff_id):
                    action = "exists"
                elif tx.has_blob(d.digest):
                    with open(tx.blob_path(d.digest), "rb") as f:
                        tx.ingest_layer(
                            f, digest=d.digest, size=d.size, diff_id=diff_id, what=f"layer {key}"
                        )
                    action = "local"
                else:
                    with repo.open_blob(
                        d.digest, d.size, lambda n: progress.update(key, n)
                    ) as stream:
                        tx.ingest_layer(
                            stream,  # type: ignore[arg-type]
                            digest=d.digest,
                            size=d.size,
                            diff_id=diff_id,
                            what=f"layer {d.digest}",
                        )
                    action = "downloaded"
                progress.finish(key, action)
                with lock:
                    report.blobs[d.digest] = action

            tasks = [functools.partial(fetch, d, diff_id) for d, diff_id in pairs.values()]
            _run_parallel(options.jobs, tasks, client.cancel)
            tx.set_ref(
                local,
                manifest.digest,
                source=f"pulled from {ref}",
                index=index_digest or "",
                trust=trust,
            )
            tx.commit()
    finally:
        client.close()
    report.bytes_received = client.bytes_received
    remember_sources(
        store,
        f"{ref.domain}/{ref.path}",
        [manifest.digest, config.digest, *(d.digest for d in layers)],
    )
    return report


def list_tags(reference: str, options: Options | None = None) -> list[str]:
    ref = remote_reference(reference)
    client = Client(ref.domain, options)
    try:
        return Repository(client, ref.path).tags()
    finally:
        client.close()


def repository_for(reference: str, options: Options | None = None) -> tuple[Repository, Reference]:
    """A :class:`Repository` for ``reference`` (the caller closes ``repo.client``)."""
    ref = remote_reference(reference)
    return Repository(Client(ref.domain, options), ref.path), ref
