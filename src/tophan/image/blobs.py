"""Content-addressed blobs: OCI manifests, configs and compressed layers.

A blob lives at ``<root>/blobs/<alg>/<hex>`` and its name is the digest of its bytes, so the same
content is stored once whoever brought it. Blobs are written into a staging dir (hashed while
they stream) and renamed into place by the image transaction that references them, under the
store lock, so ``gc`` never sees a blob before the ref that keeps it alive.

Digests are validated before they become paths: a hostile manifest naming ``sha256:../../x``
must never reach ``open``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re

from tophan.errors import IntegrityError, NotFound, TophanError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import IO, Any

    from tophan._internal.root import StoreRoot

CHUNK = 1 << 20
# Manifests, configs and indexes are read into memory; registries cap them at 4 MiB.
MAX_DOCUMENT = 4 << 20
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


class Aborted(Exception):
    """A transfer stopped on purpose (another one of the same operation failed)."""


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def check_digest(value: object, what: str = "digest") -> str:
    """Return ``value`` if it is a digest we can verify (sha256 or sha512), else refuse it."""
    if not is_digest(value):
        shown = repr(value)[:90]
        raise IntegrityError(
            f"invalid {what} {shown}", "expected sha256:<64 hex> or sha512:<128 hex>"
        )
    return str(value)


def new_hash(digest_or_alg: str) -> Any:
    alg = digest_or_alg.split(":", 1)[0]
    if alg not in ("sha256", "sha512"):
        raise IntegrityError(f"unsupported digest algorithm {alg!r}", "use sha256 or sha512")
    return hashlib.new(alg)


def digest_of(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


def dumps(obj: Any) -> bytes:
    """The JSON bytes we write for manifests, configs and indexes: compact and stable."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


MAX_DEPTH = 32  # image documents nest 4-6 levels; more is an attack on the parser or on us


def loads(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from a registry, archive or layout: at most MAX_DEPTH levels deep."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise IntegrityError(f"{what} is nested too deeply (JSON)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    if _depth(obj) > MAX_DEPTH:
        raise IntegrityError(f"{what} is nested more than {MAX_DEPTH} levels deep")
    return obj


def _depth(obj: object) -> int:
    """How deep ``obj`` nests, found without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
    return deepest


class VerifyingReader(io.RawIOBase):
    """Reads ``src`` while hashing it; at its end the bytes must be exactly ``size`` long and hash
    to ``digest``, else :class:`IntegrityError` (never a silently short or long blob).

    ``size`` may be None when unknown (then only the digest is checked). ``on_read`` sees every
    chunk (progress bars). ``tee`` receives a copy of every byte (the staged blob file)."""

    def __init__(
        self,
        src: IO[bytes],
        digest: str | None,
        size: int | None,
        *,
        what: str = "blob",
        tee: IO[bytes] | None = None,
        on_read: Callable[[int], None] | None = None,
        alg: str = "sha256",
    ) -> None:
        self.src = src
        self.digest = digest
        self.size = size
        self.what = what
        self.tee = tee
        self.on_read = on_read
        self.hash = new_hash(digest or alg)
        self.count = 0
        self.finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.finished:
            return 0
        view = memoryview(b).cast("B")
        want = len(view)
        if self.size is not None:
            # one byte past the declared size, to notice a longer stream
            want = min(want, self.size - self.count + 1)
        src: Any = self.src
        if want <= 0:
            n = 0
        elif hasattr(src, "readinto"):
            n = src.readinto(view[:want]) or 0
        else:
            data = src.read(want)
            n = len(data)
            view[:n] = data
        if n == 0:
            self._finish()
            return 0
        self.count += n
        if self.size is not None and self.count > self.size:
            raise IntegrityError(
                f"{self.what} is longer than its descriptor says ({self.size} bytes)",
                "the source is corrupt or lies about the blob",
            )
        chunk = view[:n]
        self.hash.update(chunk)
        if self.tee is not None:
            self.tee.write(chunk)
        if self.on_read is not None:
            self.on_read(n)
        return n

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.size is not None and self.count != self.size:
            raise IntegrityError(
                f"{self.what} is truncated: {self.count} of {self.size} bytes",
                "the transfer was cut short or the source is corrupt",
            )
        actual = f"{self.hash.name}:{self.hash.hexdigest()}"
        if self.digest is not None and actual != self.digest:
            raise IntegrityError(
                f"{self.what} does not match its digest: expected {self.digest}, got {actual}",
                "the source is corrupt; nothing was stored",
            )
        self.digest = actual

    def drain(self) -> str:
        """Read to the end (verifying) and return the digest."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass
        self._finish()
        assert self.digest is not None
        return self.digest


def read_verified(src: IO[bytes], digest: str | None, size: int | None, what: str) -> bytes:
    """A small document (manifest, config), verified, refused when absurdly large."""
    if size is not None and size > MAX_DOCUMENT:
        raise IntegrityError(f"{what} is {size} bytes, over the {MAX_DOCUMENT} byte limit")
    reader = VerifyingReader(src, digest, size, what=what)
    out = bytearray()
    buf = bytearray(65536)
    while n := reader.readinto(buf):
        out += buf[:n]
        if len(out) > MAX_DOCUMENT:
            raise IntegrityError(f"{what} is over the {MAX_DOCUMENT} byte limit")
    reader.drain()
    return bytes(out)


class Blobs:
    """``store.blobs``: read access to the content-addressed blob store.

    Writing goes through an image transaction (``tophan.images.Transaction``), which stages blobs
    and publishes them together with the refs that keep them."""

    def __init__(self, store: StoreRoot) -> None:
        self.store = store

    def path(self, digest: str) -> str:
        alg, _, hexd = check_digest(digest).partition(":")
        return self.store.path("blobs", alg, hexd)

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the store", "run `fsck`") from None

    def open(self, digest: str) -> IO[bytes]:
        try:
            return open(self.path(digest), "rb", buffering=CHUNK)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is missing from the store", "run `fsck`") from None
        except OSError as e:
            raise TophanError(f"cannot read blob {digest}: {e.strerror}") from e

    def read(self, digest: str, what: str = "document") -> bytes:
        """A small blob's bytes, checked against its digest."""
        with self.open(digest) as f:
            return read_verified(f, digest, None, f"{what} {digest}")

    def all(self) -> Iterator[str]:
        for alg in ("sha256", "sha512"):
            d = self.store.path("blobs", alg)
            try:
                entries = os.listdir(d)
            except FileNotFoundError:
                continue
            for entry in entries:
                if is_digest(f"{alg}:{entry}"):
                    yield f"{alg}:{entry}"

    def verify(self, digest: str) -> str | None:
        """None if the blob still hashes to its name, else what is wrong with it."""
        try:
            with self.open(digest) as f:
                VerifyingReader(f, digest, None, what=f"blob {digest}").drain()
        except TophanError as e:
            return e.message
        return None
