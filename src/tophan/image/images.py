"""Images: ordered layers plus a config, stored as an OCI manifest and config in the blob store.

On disk (see docs/images.md)::

    <root>/blobs/sha256/<hex>        manifests, configs, compressed layer blobs (content-addressed)
    <root>/refs/images/<quoted name> key=value: digest (of the manifest), created_at, source
    <root>/refs/diffids/<alg>-<hex>  key=value: layer — the layer tree a DiffID unpacks to
    <root>/layers/<hex>/tree         the unpacked layers (shared with ``store.layers``)

A layer has three identities: its *blob* digest (compressed bytes, what registries move), its
*DiffID* (sha256 of the uncompressed tar, what the image config lists) and its *layer* digest (our
canonical tar, what the tree is stored under). For layers we export ourselves DiffID and layer
digest are equal; a foreign tar (another tool's ordering or headers) unpacks to a tree whose
canonical tar differs, so ``refs/diffids`` records where each DiffID's tree is.

Everything an import, pull or create produces is staged in a :class:`Transaction` and published
under the store lock in one step: blobs, then trees, then DiffID entries, then the image refs.
A failure before that leaves nothing; a crash during it leaves only unreferenced blobs or trees,
which ``gc`` removes.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import cast

from tophan._internal import meta
from tophan._internal.fs import is_temporary, rmtree, write_meta
from tophan.errors import Exists, IntegrityError, NotFound, TophanError, UsageError
from tophan.image.blobs import (
    CHUNK,
    Aborted,
    Blobs,
    VerifyingReader,
    digest_of,
    dumps,
    is_digest,
    loads,
    new_hash,
)
from tophan.image.spec import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    config_diff_ids,
    layer_compression,
    normalize_name,
    oci_layer_type,
    parse_manifest,
)
from tophan.layer.layers import Layers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from typing import IO, Any

    from tophan._internal.root import StoreRoot

DEFAULT_COMPRESSION = "gzip"
_OCI_KEYS = {
    "Entrypoint": "entrypoint",
    "Cmd": "cmd",
    "Env": "env",
    "WorkingDir": "working_dir",
    "User": "user",
    "ExposedPorts": "exposed_ports",
    "Volumes": "volumes",
    "Labels": "labels",
    "StopSignal": "stop_signal",
    "Healthcheck": "healthcheck",
}


# -- the config -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Healthcheck:
    """Docker's Healthcheck field. Durations are nanoseconds (as in the JSON); 0 = default.

    ``test`` is ``["CMD", arg...]``, ``["CMD-SHELL", command]`` or ``["NONE"]`` (disabled)."""

    test: list[str]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    @classmethod
    def from_oci(cls, obj: object) -> Healthcheck | None:
        if not isinstance(obj, dict) or not isinstance(obj.get("Test"), list):
            return None

        def num(key: str) -> int:
            v = obj.get(key, 0)
            return int(v) if isinstance(v, int | float) else 0

        return cls(
            [str(t) for t in obj["Test"]],
            num("Interval"),
            num("Timeout"),
            num("StartPeriod"),
            num("StartInterval"),
            num("Retries"),
        )

    def as_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (the OCI ``config`` object).

    Attributes are snake_case; ``cfg["Cmd"]`` and ``cfg.get("WorkingDir")`` also work with the
    OCI key names. ``extra`` keeps keys we do not interpret (ArgsEscaped, OnBuild, Shell, …) so
    they survive a round trip."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    exposed_ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_oci(cls, obj: object) -> ImageConfig:
        if not isinstance(obj, dict):
            return cls()

        def strlist(key: str) -> list[str] | None:
            v = obj.get(key)
            return [str(x) for x in v] if isinstance(v, list) else None

        def keys(key: str) -> list[str]:
            v = obj.get(key)
            return sorted(str(k) for k in v) if isinstance(v, dict) else []

        labels = obj.get("Labels")
        return cls(
            entrypoint=strlist("Entrypoint"),
            cmd=strlist("Cmd"),
            env=strlist("Env") or [],
            working_dir=str(obj.get("WorkingDir") or ""),
            user=str(obj.get("User") or ""),
            exposed_ports=keys("ExposedPorts"),
            volumes=keys("Volumes"),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            stop_signal=str(obj.get("StopSignal") or ""),
            healthcheck=Healthcheck.from_oci(obj.get("Healthcheck")),
            extra={k: v for k, v in obj.items() if k not in _OCI_KEYS},
        )

    def as_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.as_oci()
        out.update(self.extra)
        return out

    def env_dict(self) -> dict[str, str]:
        out = {}
        for item in self.env:
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def with_env(self, updates: Iterable[str]) -> ImageConfig:
        """``K=V`` items replace ``K`` (keeping its position) or are appended."""
        env = list(self.env)
        for item in updates:
            key = item.partition("=")[0]
            for i, old in enumerate(env):
                if old.partition("=")[0] == key:
                    env[i] = item
                    break
            else:
                env.append(item)
        return replace(self, env=env)

    # Read-only mapping by OCI key names, so ``dict(image.config)`` is the OCI config object.
    def __getitem__(self, key: str) -> Any:
        return self.as_oci()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_oci().get(key, default)

    def keys(self) -> list[str]:
        return list(self.as_oci())

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_oci())

    def __len__(self) -> int:
        return len(self.as_oci())

    def __bool__(self) -> bool:
        return True


# -- images -----------------------------------------------------------------------------------


@dataclass
class LayerInfo:
    """One layer of an image: the tree (``digest``), its DiffID and the blob carrying it."""

    digest: str  # the layer tree in store.layers (what gets mounted)
    diff_id: str
    blob: str
    blob_size: int
    media_type: str

    @property
    def compression(self) -> str | None:
        return layer_compression(self.media_type)


class Image:
    """An image as stored: ``layers`` are layer digests bottom→top (trees present in the store,
    mountable via ``layer_paths``), ``config`` the runtime config."""

    def __init__(
        self,
        store: StoreRoot,
        name: str,
        digest: str,
        manifest: dict[str, Any],
        raw_config: dict[str, Any],
        layer_infos: list[LayerInfo],
        ref: dict[str, str],
    ) -> None:
        self.store = store
        self.name = name
        self.digest = digest
        self.manifest = manifest
        self.raw_config = raw_config
        self.layer_infos = layer_infos
        self.ref = ref
        self.config = ImageConfig.from_oci(raw_config.get("config"))

    def __repr__(self) -> str:
        return f"Image({self.name!r}, {self.digest!r})"

    @property
    def layers(self) -> list[str]:
        return [li.digest for li in self.layer_infos]

    @property
    def diff_ids(self) -> list[str]:
        return [li.diff_id for li in self.layer_infos]

    @property
    def layer_paths(self) -> list[str]:
        """Tree directories bottom→top (reverse it for an overlayfs lowerdir list)."""
        return [Layers(self.store).tree_path(d) for d in self.layers]

    @property
    def media_type(self) -> str:
        return str(self.manifest.get("mediaType") or OCI_MANIFEST)

    @property
    def config_descriptor(self) -> Descriptor:
        return Descriptor.parse(self.manifest["config"], "config")

    @property
    def platform(self) -> Platform:
        c = self.raw_config
        return Platform(
            str(c.get("os", "")), str(c.get("architecture", "")), str(c.get("variant", "") or "")
        )

    @property
    def created(self) -> str:
        return str(self.raw_config.get("created") or "")

    @property
    def size(self) -> int:
        """Bytes a registry holds for it: manifest + config + layer blobs."""
        return (
            self.ref_manifest_size
            + self.config_descriptor.size
            + sum(li.blob_size for li in self.layer_infos)
        )

    @property
    def ref_manifest_size(self) -> int:
        return Blobs(self.store).size(self.digest)

    @property
    def source(self) -> str:
        return self.ref.get("source", "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "media_type": self.media_type,
            "created": self.created,
            "platform": str(self.platform),
            "size": self.size,
            "source": self.source,
            # what the policy said at pull or start (tophan.trust.record), as recorded
            "verification": loads(self.ref["trust"].encode(), "trust record")
            if self.ref.get("trust")
            else None,
            "config_digest": self.config_descriptor.digest,
            "config": self.config.as_oci(),
            "layers": [
                {
                    "digest": li.digest,
                    "diff_id": li.diff_id,
                    "blob": li.blob,
                    "blob_size": li.blob_size,
                    "media_type": li.media_type,
                    "path": Layers(self.store).tree_path(li.digest),
                }
                for li in self.layer_infos
            ],
            "manifest": self.manifest,
            "image_config": self.raw_config,
        }


def now_rfc3339() -> str:
    """The creation time we write: ``$SOURCE_DATE_EPOCH`` when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return rfc3339(int(epoch) if epoch and epoch.isdigit() else int(time.time()))


def rfc3339(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _with_rootfs(raw: dict[str, Any], diff_ids: list[str]) -> dict[str, Any]:
    """``raw`` with its ``rootfs``, placed before ``history`` as Docker and we always wrote it
    (the bytes, hence the digest, of an image made twice from the same inputs stay the same)."""
    out = {k: v for k, v in raw.items() if k not in ("rootfs", "history")}
    out["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    if "history" in raw:
        out["history"] = raw["history"]
    return out


def new_config(
    config: ImageConfig, platform: Platform, created: str, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """An OCI image config without ``rootfs`` (:meth:`Images.assemble` adds it)."""
    raw: dict[str, Any] = {
        "created": created,
        "architecture": platform.architecture,
        "os": platform.os,
    }
    if platform.variant:
        raw["variant"] = platform.variant
    raw["config"] = config.as_oci()
    raw["history"] = history
    return raw


# A name is one file in refs/images, quoted ('/' and ':' take 3 bytes): its file name, with the
# temporary's prefix and suffix that atomic_write adds, must fit in NAME_MAX (255).
_MAX_REF_FILE = 220


def _ref_file(name: str) -> str:
    quoted = urllib.parse.quote(name, safe="")
    if len(quoted) > _MAX_REF_FILE:
        raise UsageError(
            f"image name too long: {name[:48]}… ({len(name)} characters)",
            "a name takes at most about 150 characters here (fewer with many '/' or ':')",
        )
    return quoted


def _diffid_file(diff_id: str) -> str:
    return diff_id.replace(":", "-")


# -- staging and publishing -------------------------------------------------------------------


class _HashingWriter:
    """Counts and hashes what a compressor writes into the staged blob file."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = new_hash("sha256")
        self.size = 0

    def write(self, data: Any) -> int:
        self.hash.update(data)
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.size += n
        self.f.write(data)
        return n

    def flush(self) -> None:
        self.f.flush()

    @property
    def closed(self) -> bool:
        return False

    @property
    def digest(self) -> str:
        return f"sha256:{self.hash.hexdigest()}"


class _Inflater:
    """One gzip member's inflater: ISA-L's (about twice zlib's speed, the same checks of the
    header, CRC and size) when ``isal`` is installed, else zlib's."""

    def __init__(self) -> None:
        try:
            from isal import igzip_lib
        except ImportError:  # pragma: no cover - isal is a dependency; zlib stays the fallback
            import zlib

            self.error: type[Exception] = zlib.error
            self.d: Any = zlib.decompressobj(31)
            self.igzip = False
        else:
            self.error = cast("type[Exception]", igzip_lib.IsalError)
            self.d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
            self.igzip = True

    @property
    def eof(self) -> bool:
        return bool(self.d.eof)

    def unused(self) -> bytes:
        return bytes(self.d.unused_data)

    def run(self, data: Any) -> Iterator[bytes]:
        """Inflate ``data`` (which may be reused once this ends), at most ``_OUT_MAX`` bytes at
        a time; ends at the member's end or when more input is needed."""
        d = self.d
        try:
            if self.igzip:
                # Unconsumed input stays inside the decompressor: no copy of a tail per call.
                out = d.decompress(data, _OUT_MAX)
                while True:
                    if out:
                        yield out
                    if d.eof or d.needs_input:
                        return
                    out = d.decompress(b"", _OUT_MAX)
            while True:
                out = d.decompress(data, _OUT_MAX)
                if out:
                    yield out
                data = d.unconsumed_tail
                if d.eof or not data:
                    return
        except self.error as e:
            raise IntegrityError(f"corrupt gzip stream: {e}") from e

    def end(self) -> Iterator[bytes]:
        """The input ended: what the inflater still holds, then it must be at the member's end."""
        if not self.eof:
            yield from self.run(b"") if self.igzip else self._flush()
        if not self.eof:
            raise IntegrityError("gzip stream is truncated")

    def _flush(self) -> Iterator[bytes]:
        try:
            out = self.d.flush()
        except self.error as e:
            raise IntegrityError(f"corrupt gzip stream: {e}") from e
        if out:
            yield out


# The most one decompress call returns: bounds memory whatever the compression ratio (and
# buffers this size are recycled by malloc, where bigger ones would be fresh pages each time).
_OUT_MAX = CHUNK


def _read_full(src: IO[bytes], view: memoryview) -> int:
    """Fill ``view`` unless the stream ends first: a short chunk is known to be the last, so
    a verifying source has checked the blob's digest before that chunk is decompressed (a
    corrupt blob is reported as such, not as the corrupt gzip stream it also is)."""
    reader: Any = src
    got = 0
    while got < len(view):
        n = reader.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _gunzip(src: IO[bytes]) -> Iterator[bytes]:
    """The decompressed chunks of gzip ``src`` (one or more members, then maybe zero padding),
    from 1 MiB of input at a time (``gzip.GzipFile`` parses headers in Python and feeds the
    inflater 8 KiB at a time)."""
    d = _Inflater()
    buf = bytearray(CHUNK)
    whole = memoryview(buf)
    padding = False  # after the last member: only zeros may follow
    while n := _read_full(src, whole):
        data: Any = whole[:n]
        while data:
            if padding:
                if bytes(data).strip(b"\0"):
                    raise IntegrityError("garbage after the end of a gzip stream")
                break
            if d.eof:
                if not bytes(data).strip(b"\0"):
                    padding = True
                    break
                if not b"\x1f\x8b".startswith(bytes(data[:2])):
                    raise IntegrityError("garbage after a gzip stream: no gzip header")
                d = _Inflater()  # another member follows (what `cat a.gz b.gz` makes)
            yield from d.run(data)
            data = d.unused() if d.eof else b""
    yield from d.end()


def _unzstd(src: IO[bytes]) -> Iterator[bytes]:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
    while data := reader.read(_OUT_MAX):
        yield data


def _plain_chunks(kind: str | None, src: IO[bytes]) -> Iterator[bytes]:
    """``src`` decompressed (``kind`` is None, "gzip" or "zstd"), in chunks."""
    if kind == "gzip":
        return _gunzip(src)
    if kind == "zstd":
        # Buffered: the blob's end (and its digest check) is met before its last frame is
        # decoded, so a corrupt blob is reported as such.
        return _unzstd(cast("IO[bytes]", io.BufferedReader(cast("io.RawIOBase", src), CHUNK)))

    def plain() -> Iterator[bytes]:
        while data := src.read(CHUNK):
            yield data

    return plain()


class _ChunkReader(io.RawIOBase):
    """A reader over an iterator of chunks, without copying them into another buffer."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.cur = memoryview(b"")
        self.pos = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes | None:
        return next(self.chunks, None)

    def _fill(self) -> bool:
        while self.pos >= len(self.cur):
            if self.eof:
                return False
            chunk = self._next()
            if chunk is None:
                self.eof = True
                return False
            self.cur, self.pos = memoryview(chunk), 0
        return True

    def readinto(self, b: Any) -> int:
        if not self._fill():
            return 0
        view = memoryview(b).cast("B")
        n = min(len(view), len(self.cur) - self.pos)
        view[:n] = self.cur[self.pos : self.pos + n]
        self.pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if not size or not self._fill():
            return b""
        data = bytes(self.cur[self.pos : self.pos + size])
        self.pos += len(data)
        return data

    def readall(self) -> bytes:
        parts = []
        while self._fill():
            parts.append(bytes(self.cur[self.pos :]))
            self.pos = len(self.cur)
        return b"".join(parts)

    def take(self, size: int) -> memoryview:
        """Up to ``size`` bytes (at least one, none at the end) as a view of the chunk they are
        in: no copy. The view stays valid however far the reader goes on."""
        if not size or not self._fill():
            return memoryview(b"")
        view = self.cur[self.pos : self.pos + size]
        self.pos += len(view)
        return view

    def peek(self, size: int = 0) -> bytes:
        if not self._fill():
            return b""
        return bytes(self.cur[self.pos : self.pos + max(size, 1)])


class _Pipe(_ChunkReader):
    """A :class:`_ChunkReader` whose chunks are made on a thread of their own, at most ``depth``
    ahead: decompressing, hashing and writing the blob overlap the reader's work (hashlib and
    the inflaters release the GIL). The producer's exception is the reader's; ``close``
    stops the producer and waits for it (it may be writing into a file the caller owns)."""

    def __init__(self, chunks: Iterator[bytes], depth: int = 4) -> None:
        import queue

        super().__init__(chunks)
        self.q: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="tophan-pipe", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for chunk in self.chunks:
                if self.stop.is_set():
                    return
                self.q.put(chunk)
            self.q.put(None)
        except BaseException as e:
            self.q.put(e)

    def _next(self) -> bytes | None:
        if self.error is not None:
            raise self.error
        item = self.q.get()
        if isinstance(item, BaseException):
            self.error = item
            raise item
        return item

    def drain(self) -> None:
        """Read to the end (the producer's checks run there)."""
        while self._fill():
            self.pos = len(self.cur)

    def close(self) -> None:
        if self.thread.is_alive():
            import queue

            self.stop.set()
            while self.thread.is_alive():
                try:
                    self.q.get(timeout=0.05)
                except queue.Empty:
                    pass
            self.thread.join()
        super().close()


def _decompressor(kind: str, src: IO[bytes]) -> IO[bytes]:
    return cast("IO[bytes]", io.BufferedReader(_ChunkReader(_plain_chunks(kind, src)), CHUNK))


def _checked(actual: str, expected: str | None, what: str) -> str:
    if expected is not None and actual != expected:
        raise IntegrityError(
            f"{what} does not match its digest: expected {expected}, got {actual}",
            "the source is corrupt; nothing was stored",
        )
    return actual


class _Hashed:
    """Chunks passed through while hashing them; checked against ``digest`` at their end."""

    def __init__(self, chunks: Iterator[bytes], digest: str | None, what: str) -> None:
        self.chunks = chunks
        self.expected = digest
        self.what = what
        self.hash = new_hash(digest or "sha256")
        self.size = 0
        self.digest: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        h = self.hash
        for chunk in self.chunks:
            h.update(chunk)
            self.size += len(chunk)
            yield chunk
        self.digest = _checked(f"{h.name}:{h.hexdigest()}", self.expected, self.what)


@dataclass
class StagedLayer:
    """What ingesting one layer produced (or found already stored)."""

    blob: str
    blob_size: int
    media_type: str
    diff_id: str
    digest: str


HOLDS = "holds"  # in a transaction's staging dir: "blob|tree DIGEST" lines it builds on


def live_holds(store: StoreRoot) -> tuple[set[str], set[str]]:
    """(blobs, trees) that transactions in progress build on."""
    blobs: set[str] = set()
    trees: set[str] = set()
    for line in store.staging_lines("image", HOLDS):
        kind, _, digest = line.partition(" ")
        (blobs if kind == "blob" else trees).add(digest)
    return blobs, trees


class Transaction:
    """Stage blobs, layer trees and image refs; ``commit()`` publishes them all at once.

    Safe to feed from several threads (parallel layer transfers). Use as a context manager:
    leaving it without ``commit()`` discards everything staged."""

    def __init__(self, images: Images) -> None:
        self.images = images
        self.store = images.store
        images.ensure_dirs()
        self.staging = self.store.staging("image")
        self._lock = threading.Lock()
        self._n = 0
        self.blobs: dict[str, str] = {}  # digest -> staged path
        self.trees: dict[str, tuple[str, int]] = {}  # layer digest -> (staged dir, tar size)
        self.diffids: dict[str, str] = {}  # DiffID -> layer digest
        self.refs: dict[str, dict[str, str]] = {}  # image name -> ref fields
        self.replace: set[str] = set()
        self.attached: dict[str, dict[str, str]] = {}  # subject -> tag -> manifest digest

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.staging.discard()

    def _new_path(self, kind: str) -> str:
        with self._lock:
            self._n += 1
            return os.path.join(self.staging.path, f"{kind}-{self._n}")

    # -- blobs -----------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        """Staged here, or in the store: then held for this transaction (see :meth:`_hold`)."""
        with self._lock:
            if digest in self.blobs:
                return True
        return self._hold("blob", digest, lambda: self.images.blobs.exists(digest))

    def _hold(self, kind: str, digest: str, present: Callable[[], bool]) -> bool:
        """Whether the store has ``digest``; if so it stays until this transaction ends.

        A concurrent `image rm` or `gc` decides what to delete under the store lock and reads
        the holds of live transactions (:func:`live_holds`) there: checking and recording under
        the same lock, a pull never builds on a blob or tree that is being deleted."""
        with self.store.lock():
            if not present():
                return False
            with open(os.path.join(self.staging.path, HOLDS), "a") as f:
                f.write(f"{kind} {digest}\n")
        return True

    def blob_path(self, digest: str) -> str:
        """Where to read a blob this transaction has staged or the store holds."""
        with self._lock:
            staged = self.blobs.get(digest)
        return staged or self.images.blobs.path(digest)

    def _adopt_blob(self, path: str, digest: str) -> None:
        with self._lock:
            if digest not in self.blobs:
                self.blobs[digest] = path
                return
        os.unlink(path)

    def add_bytes(self, data: bytes, digest: str | None = None, what: str = "document") -> str:
        """Stage a small blob (manifest, config); checked against ``digest`` when given."""
        actual = digest_of(data, digest.split(":", 1)[0] if digest else "sha256")
        if digest is not None and actual != digest:
            raise IntegrityError(
                f"{what} does not match its digest: expected {digest}, got {actual}",
                "the source is corrupt; nothing was stored",
            )
        if not self.has_blob(actual):
            path = self._new_path("blob")
            with open(path, "wb") as f:
                f.write(data)
            self._adopt_blob(path, actual)
        return actual

    def add_stream(
        self,
        src: IO[bytes],
        digest: str,
        size: int | None,
        *,
        what: str = "blob",
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        """Stage a blob streamed from ``src``, verified against ``digest`` (and ``size``)."""
        path = self._new_path("blob")
        try:
            with open(path, "wb", buffering=CHUNK) as f:
                VerifyingReader(src, digest, size, what=what, tee=f, on_read=on_read).drain()
        except BaseException:
            os.unlink(path)
            raise
        self._adopt_blob(path, digest)

    # -- layers ----------------------------------------------------------------------------

    def tree_for(self, diff_id: str) -> str | None:
        """The layer digest whose tree ``diff_id`` unpacks to, if stored or staged."""
        with self._lock:
            digest = self.diffids.get(diff_id)
            if digest is not None and digest in self.trees:
                return digest
        digest = self.images.layer_for_diff_id(diff_id)
        tree = self.images.layers.tree_path(digest) if digest is not None else ""
        if digest is not None and self._hold("tree", digest, lambda: os.path.isdir(tree)):
            return digest
        return None

    def ingest_layer(
        self,
        src: IO[bytes],
        *,
        digest: str | None = None,
        size: int | None = None,
        diff_id: str | None = None,
        compress: str | None = None,
        on_read: Callable[[int], None] | None = None,
        what: str = "layer",
    ) -> StagedLayer:
        """Stage one layer read from ``src`` (compressed or not, sniffed by content).

        The bytes are checked against ``digest``/``size`` (the blob) and ``diff_id`` (their
        uncompressed form) while they stream, and unpacked into a staged tree unless the DiffID's
        tree is already there. A plain tar is stored as a ``compress``-ed blob when asked (the
        compression is reproducible, so the same tar always gives the same blob)."""
        from tophan._internal.compression import detect, peek

        head, stream = peek(src, 6, buffered=False)

        kind = detect(head)
        if kind not in (None, "gzip", "zstd"):
            raise IntegrityError(f"{what} is {kind}-compressed", "OCI layers are tar, gzip or zstd")
        known_tree = self.tree_for(diff_id) if diff_id else None
        # A blob already stored (unpacked again after its tree went) needs no second copy.
        keep = not (digest and self.has_blob(digest))
        blob_path = self._new_path("blob")
        try:
            with open(blob_path, "wb", buffering=CHUNK) as f:
                if kind is None and compress is not None:
                    from tophan._internal.compression import compressor

                    hashing = _HashingWriter(f)
                    with compressor(compress, cast("IO[bytes]", hashing)) as z:
                        plain = VerifyingReader(
                            stream, diff_id, size, what=what, tee=z, on_read=on_read
                        )
                        layer, _ = self._unpack(
                            cast("IO[bytes]", io.BufferedReader(plain, CHUNK)), known_tree, what
                        )
                        actual_diff = plain.drain()
                    blob, blob_size = hashing.digest, hashing.size
                    media_kind: str | None = compress
                else:
                    # Download, blob hash and copy, decompression and DiffID hash on one thread;
                    # unpacking on this one (and the tree's digest on a third).
                    raw = VerifyingReader(
                        stream, digest, size, what=what, tee=f if keep else None, on_read=on_read
                    )
                    chunks = _plain_chunks(kind, cast("IO[bytes]", raw))
                    plain_what = f"{what} (uncompressed)"
                    if known_tree is None and (diff_id or "sha256:").startswith("sha256:"):
                        # The extractor hashes its input too: for an archive that is already
                        # canonical (a tophan export), the DiffID and the tree's digest are
                        # one hash.
                        with _Pipe(chunks) as pipe:
                            layer, input_digest = self._unpack(
                                cast("IO[bytes]", pipe), None, what, hash_input=True
                            )
                        actual_diff = _checked(input_digest, diff_id, plain_what)
                    else:
                        hashed = _Hashed(chunks, diff_id, plain_what)
                        with _Pipe(iter(hashed)) as pipe:
                            layer, _ = self._unpack(cast("IO[bytes]", pipe), known_tree, what)
                            pipe.drain()
                        assert hashed.digest is not None
                        actual_diff = hashed.digest
                    blob, blob_size, media_kind = raw.drain(), raw.count, kind
        except BaseException:
            os.unlink(blob_path)
            raise
        if keep:
            self._adopt_blob(blob_path, blob)
        else:
            os.unlink(blob_path)
        with self._lock:
            self.diffids[actual_diff] = layer
        return StagedLayer(blob, blob_size, oci_layer_type(media_kind), actual_diff, layer)

    def _unpack(
        self, plain: IO[bytes], known_tree: str | None, what: str, hash_input: bool = False
    ) -> tuple[str, str]:
        """The digest of the tree ``plain`` unpacks to (staged unless stored already) and, with
        ``hash_input``, the digest of ``plain`` itself (read to its end)."""
        if known_tree is not None:
            return known_tree, ""
        from tophan.layer import tarimport

        d = self._new_path("layer")
        tree = os.path.join(d, "tree")
        os.makedirs(tree, 0o755)
        try:
            stats = tarimport.extract(
                plain,
                tree,
                xattr_ns=self.store.xattr_ns,
                privileged=self.store.privileged,
                hash_input=hash_input,
            )
        except TophanError as e:
            # The extractor reports a failing read as a corrupt archive; when the reader was
            # ours (digest check, transfer error, cancel), that is the error to report.
            cause = e.__cause__
            if isinstance(cause, TophanError | Aborted):
                raise cause from None
            raise type(e)(f"{what}: {e.message}", e.hint) from e
        with self._lock:
            if stats.digest in self.trees:
                duplicate = True
            else:
                duplicate = False
                self.trees[stats.digest] = (d, stats.size)
        if duplicate or os.path.isdir(self.images.layers.tree_path(stats.digest)):
            if not duplicate:
                with self._lock:
                    del self.trees[stats.digest]
            rmtree(d)  # the store has it already: layers are never stored twice
        return stats.digest, stats.input_digest

    def link_diff_id(self, diff_id: str, layer: str) -> None:
        with self._lock:
            self.diffids[diff_id] = layer

    # -- refs ------------------------------------------------------------------------------

    def attach(self, subject: str, tag: str, manifest: bytes, blobs: list[bytes]) -> str:
        """Stage an artifact attached to the manifest ``subject`` under ``tag`` (a cosign
        signature manifest under ``sha256-H.sig``): its blobs, then its manifest. Published
        with the refs; an image's attachments live and die with it."""
        for data in blobs:
            self.add_bytes(data, what=f"blob attached to {subject}")
        digest = self.add_bytes(manifest, what=f"manifest attached to {subject}")
        with self._lock:
            self.attached.setdefault(subject, {})[tag] = digest
        return digest

    def set_ref(
        self,
        name: str,
        manifest_digest: str,
        *,
        source: str,
        replace_existing: bool = True,
        **extra: str,
    ) -> None:
        name = normalize_name(name)
        fields = {"name": name, "digest": manifest_digest, "source": source}
        fields.update({k: v for k, v in extra.items() if v})
        with self._lock:
            self.refs[name] = fields
            if replace_existing:
                self.replace.add(name)

    # -- publishing ------------------------------------------------------------------------

    def commit(self) -> None:
        """Publish everything staged, under the store lock, refs last."""
        images = self.images
        with self.store.lock():
            for name in self.refs:
                if name not in self.replace and images.exists(name):
                    raise Exists(f"image exists: {name}", "pick another name or `image rm` it")
            for digest, path in self.blobs.items():
                final = images.blobs.path(digest)
                if not os.path.exists(final):
                    os.makedirs(os.path.dirname(final), 0o755, exist_ok=True)
                    os.chmod(path, 0o644)
                    os.rename(path, final)
            for digest, (d, size) in self.trees.items():
                final = self.store.path("layers", digest.split(":", 1)[1])
                if not os.path.isdir(final):
                    write_meta(os.path.join(d, "meta"), {"digest": digest, "size": size})
                    os.chmod(d, 0o700)  # as an imported layer's (its staging dir)
                    os.rename(d, final)
            for diff_id, layer in self.diffids.items():
                images.write_diff_id(diff_id, layer)
            now = int(time.time())
            for subject, tags in self.attached.items():
                images.write_attached(subject, {**images.attached(subject), **tags})
            for name, fields in self.refs.items():
                # What the ref needs must be there now: a concurrent `image rm` or gc may have
                # removed a blob we found stored when we started.
                images.check_complete(fields["digest"])
                write_meta(
                    images.ref_path(name),
                    {**fields, "created_at": now},
                )


# -- the image store --------------------------------------------------------------------------


class Images:
    """``store.images``: create, get, list, tag and remove images."""

    def __init__(
        self, store: StoreRoot, *, references: Callable[[], set[str]] | None = None
    ) -> None:
        self.store = store
        self.blobs = Blobs(store)
        self.layers = Layers(store)
        # Every layer digest still needed (tophan.references, passed in by the store façade):
        # removing an image removes the trees nothing else holds.
        self._references = references

    def ensure_dirs(self) -> None:
        """Stores made before images existed lack these; creating them is idempotent."""
        for sub in ("blobs/sha256", "refs/images", "refs/diffids"):
            os.makedirs(self.store.path(sub), 0o755, exist_ok=True)

    def transaction(self) -> Transaction:
        return Transaction(self)

    # -- refs ------------------------------------------------------------------------------

    def ref_path(self, name: str) -> str:
        return self.store.path("refs", "images", _ref_file(name))

    def exists(self, name: str) -> bool:
        return os.path.exists(self.ref_path(normalize_name(name)))

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.store.path("refs", "images"))
        except FileNotFoundError:
            return []
        out = []
        for entry in entries:
            if is_temporary(entry):
                continue
            out.append(urllib.parse.unquote(entry))
        return sorted(out)

    def _read_ref(self, name: str) -> dict[str, str]:
        try:
            ref = meta.read(self.ref_path(name))
        except FileNotFoundError:
            raise NotFound(f"no such image: {name}", "see `image list`") from None
        except OSError as e:
            raise TophanError(f"image {name}: unreadable ref: {e}", "run `fsck`") from e
        if not is_digest(ref.get("digest")):
            raise TophanError(f"image {name}: corrupt ref", "run `fsck`")
        return ref

    def ref(self, name: str) -> dict[str, str]:
        """The fields of ``name``'s ref (digest, source, the trust record...), nothing loaded."""
        return self._read_ref(normalize_name(name))

    def set_ref_field(self, name: str, digest: str, key: str, value: str) -> None:
        """Set one field of ``name``'s ref, atomically, if it still names ``digest`` (a
        re-verification must not be recorded for an image re-pulled meanwhile)."""
        norm = normalize_name(name)
        with self.store.lock():
            ref = self._read_ref(norm)
            if ref["digest"] != digest:
                raise TophanError(f"image {norm} changed meanwhile", "try again")
            write_meta(self.ref_path(norm), {**ref, key: value})

    # -- attachments (signatures) ---------------------------------------------------------

    def _attached_path(self, subject: str) -> str:
        return self.store.path("refs", "attached", _diffid_file(subject))

    def attached(self, subject: str) -> dict[str, str]:
        """tag -> manifest digest of what is attached to the manifest ``subject``."""
        try:
            fields = meta.read(self._attached_path(subject))
        except OSError:
            return {}
        return {k: v for k, v in fields.items() if is_digest(v)}

    def write_attached(self, subject: str, tags: dict[str, str]) -> None:
        """With the store lock held: record ``tags`` (tag -> manifest digest) for ``subject``."""
        os.makedirs(self.store.path("refs", "attached"), 0o755, exist_ok=True)
        write_meta(self._attached_path(subject), dict(tags))

    def _attached_blobs(self, subject: str) -> set[str]:
        """Every blob the attachments of ``subject`` need (manifests, configs, layers)."""
        out = set()
        for digest in self.attached(subject).values():
            out.add(digest)
            try:
                doc = loads(self.blobs.read(digest, "attached manifest"), "attached manifest")
            except (TophanError, OSError):
                continue  # fsck's business
            for d in [doc.get("config"), *(doc.get("layers") or [])]:
                if isinstance(d, dict) and is_digest(d.get("digest")):
                    out.add(str(d["digest"]))
        return out

    def write_diff_id(self, diff_id: str, layer: str) -> None:
        path = self.store.path("refs", "diffids", _diffid_file(diff_id))
        try:
            if meta.read(path).get("layer") == layer:
                return
        except OSError:
            pass
        write_meta(path, {"diff_id": diff_id, "layer": layer})

    def layer_for_diff_id(self, diff_id: str) -> str | None:
        try:
            layer = meta.read(self.store.path("refs", "diffids", _diffid_file(diff_id)))["layer"]
        except (OSError, KeyError):
            # A layer we exported ourselves: its DiffID is its digest.
            if os.path.isdir(self.layers.tree_path(diff_id)):
                return diff_id
            return None
        return layer if is_digest(layer) else None

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: str, *, ensure_layers: bool = True) -> Image:
        """The image ``name`` (``app`` means ``app:latest``). Its layer trees are guaranteed to be
        in the store: any that went missing (say, `layer rm` of the last name of a layer the
        image shares) is unpacked again from the image's own blob."""
        norm = normalize_name(name)
        ref = self._read_ref(norm)
        image = self.load(norm, ref["digest"], ref)
        if ensure_layers:
            missing = [
                li
                for li in image.layer_infos
                if not os.path.isdir(self.layers.tree_path(li.digest))
            ]
            if missing:
                self._restore_trees(missing)
                image = self.load(norm, ref["digest"], ref)
        return image

    def load(self, name: str, digest: str, ref: dict[str, str] | None = None) -> Image:
        """An :class:`Image` from a stored manifest digest."""
        manifest = parse_manifest(
            loads(self.blobs.read(digest, "manifest"), f"manifest {digest}"),
            None,
            f"image {name}",
        )
        cdesc = Descriptor.parse(manifest["config"], "config")
        raw_config = loads(self.blobs.read(cdesc.digest, "config"), f"config {cdesc.digest}")
        infos = self._layer_infos(name, manifest, raw_config)
        return Image(self.store, name, digest, manifest, raw_config, infos, ref or {})

    def _layer_infos(
        self, name: str, manifest: dict[str, Any], raw_config: dict[str, Any]
    ) -> list[LayerInfo]:
        descs = [
            Descriptor.parse(d, f"image {name}: layer {i}")
            for i, d in enumerate(manifest["layers"])
        ]
        diff_ids = config_diff_ids(raw_config, len(descs), f"image {name}")
        out = []
        for desc, diff_id in zip(descs, diff_ids, strict=True):
            layer = self.layer_for_diff_id(diff_id) or diff_id
            out.append(LayerInfo(layer, diff_id, desc.digest, desc.size, desc.media_type))
        return out

    def all(self) -> list[Image]:
        out = []
        for name in self.names():
            try:
                out.append(self.get(name, ensure_layers=False))
            except NotFound:
                continue  # removed while we listed
        return out

    def check_complete(self, manifest_digest: str) -> None:
        """Refuse to point a name at a manifest whose blobs or trees are not all there."""
        manifest = loads(self.blobs.read(manifest_digest, "manifest"), "manifest")
        for d in [manifest["config"], *manifest["layers"]]:
            if not self.blobs.exists(d["digest"]):
                raise TophanError(
                    f"blob {d['digest']} went missing while storing the image",
                    "something removed it concurrently; retry",
                )

    def _restore_trees(self, missing: list[LayerInfo]) -> None:
        with self.transaction() as tx:
            for li in missing:
                with self.blobs.open(li.blob) as f:
                    tx.ingest_layer(
                        f,
                        digest=li.blob,
                        size=li.blob_size,
                        diff_id=li.diff_id,
                        what=f"layer {li.blob}",
                    )
            tx.commit()

    # -- creating --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        layers: Sequence[str],
        *,
        base: str | None = None,
        config: ImageConfig | None = None,
        compression: str | None = DEFAULT_COMPRESSION,
        platform: Platform | None = None,
        annotations: dict[str, str] | None = None,
        created: str | None = None,
        replace_existing: bool = False,
        jobs: int = 2,
    ) -> Image:
        """A new image ``name``: ``base``'s layers (if any), then the named ``layers``
        **bottom→top**, with ``config`` (default: the base's, else empty).

        Layer blobs are compressed reproducibly (``compression``: "gzip", "zstd" or None), or
        reused when an image in the store already carries that layer with that compression."""
        name = normalize_name(name)
        if compression not in ("gzip", "zstd", None):
            raise UsageError(f"unknown compression {compression!r}", "use gzip, zstd or none")
        if not replace_existing and self.exists(name):
            raise Exists(f"image exists: {name}", "pick another name or `image rm` it first")
        base_image = self.get(base) if base else None
        named = [self.layers.get(n) for n in layers]
        if base_image is None and not named:
            raise UsageError("an image needs at least one layer", "pass -l LAYER or --from IMAGE")
        if config is None:
            config = base_image.config if base_image else ImageConfig()
        if platform is None:
            platform = base_image.platform if base_image else Platform.host()
        stamp = created or now_rfc3339()
        stack: list[LayerInfo | str] = list(base_image.layer_infos) if base_image else []
        stack += [la.digest for la in named]
        history: list[dict[str, Any]] = []
        if base_image is not None:
            base_history = base_image.raw_config.get("history")
            if isinstance(base_history, list):
                history.extend(base_history)
        history += [
            {"created": stamp, "created_by": f"tophan image create (layer {la.name})"}
            for la in named
        ]
        raw_config = new_config(config, platform, stamp, history)
        source = f"created from {base_image.name}" if base_image else "created"
        return self.assemble(
            name,
            stack,
            raw_config,
            compression=compression,
            annotations=annotations,
            source=source,
            replace_existing=replace_existing,
            jobs=jobs,
        )

    def assemble(
        self,
        name: str,
        stack: Sequence[LayerInfo | str],
        raw_config: dict[str, Any],
        *,
        compression: str | None = DEFAULT_COMPRESSION,
        annotations: dict[str, str] | None = None,
        source: str = "created",
        replace_existing: bool = False,
        jobs: int = 2,
    ) -> Image:
        """Image ``name`` from a stack bottom→top and a config (``rootfs`` is filled in here).

        A ``LayerInfo`` (a base image's layer) keeps its blob as it is; a layer digest gets a
        blob another image already carries with ``compression``, else one compressed now.
        The same inputs give the same manifest digest (what reproducible builds rely on)."""
        name = normalize_name(name)
        with self.transaction() as tx:
            known = self.known_blobs()
            digests = [x for x in stack if isinstance(x, str)]
            staged = iter(self._layer_blobs(tx, digests, compression, known, jobs))
            layer_descs: list[dict[str, Any]] = []
            diff_ids: list[str] = []
            for item in stack:
                if isinstance(item, LayerInfo):
                    # keep the base's blobs as they are; only the media type family changes
                    desc = (oci_layer_type(item.compression), item.blob, item.blob_size)
                    diff_ids.append(item.diff_id)
                else:
                    one = next(staged)
                    desc = (one.media_type, one.blob, one.blob_size)
                    diff_ids.append(one.diff_id)
                layer_descs.append({"mediaType": desc[0], "digest": desc[1], "size": desc[2]})
            raw_config = _with_rootfs(raw_config, diff_ids)
            config_bytes = dumps(raw_config)
            config_digest = tx.add_bytes(config_bytes)
            manifest: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": config_digest,
                    "size": len(config_bytes),
                },
                "layers": layer_descs,
            }
            if annotations:
                manifest["annotations"] = dict(sorted(annotations.items()))
            manifest_digest = tx.add_bytes(dumps(manifest))
            tx.set_ref(name, manifest_digest, source=source, replace_existing=replace_existing)
            tx.commit()
        return self.get(name)

    def known_blobs(self) -> dict[tuple[str, str | None], LayerInfo]:
        """(layer digest, compression) -> a stored blob carrying it, from the stored images."""
        out: dict[tuple[str, str | None], LayerInfo] = {}
        for image in self.all():
            for li in image.layer_infos:
                if self.blobs.exists(li.blob):
                    out.setdefault((li.digest, li.compression), li)
        return out

    def _layer_blobs(
        self,
        tx: Transaction,
        digests: list[str],
        compression: str | None,
        known: dict[tuple[str, str | None], LayerInfo],
        jobs: int,
    ) -> list[StagedLayer]:
        from concurrent.futures import ThreadPoolExecutor

        def one(digest: str) -> StagedLayer:
            hit = known.get((digest, compression))
            if hit is not None:
                # (a blob from a Docker schema 2 image gets the OCI name of its media type)
                media_type = oci_layer_type(hit.compression)
                return StagedLayer(hit.blob, hit.blob_size, media_type, hit.diff_id, digest)
            return self._compress_layer(tx, digest, compression)

        unique = list(dict.fromkeys(digests))
        with ThreadPoolExecutor(max(1, min(jobs, len(unique) or 1))) as pool:
            done = dict(zip(unique, pool.map(one, unique), strict=True))
        return [done[d] for d in digests]

    def _compress_layer(self, tx: Transaction, digest: str, compression: str | None) -> StagedLayer:
        from tophan.layer import tarexport

        path = tx._new_path("blob")
        tree = self.layers.tree_path(digest)
        with open(path, "wb", buffering=CHUNK) as f:
            hashing = _HashingWriter(f)
            actual = tarexport.export(
                tree, cast("IO[bytes]", hashing), xattr_ns=self.store.xattr_ns, compress=compression
            )
        if actual != digest:
            os.unlink(path)
            raise IntegrityError(
                f"layer {digest} changed on disk (now {actual})", "run `layer verify`"
            )
        tx._adopt_blob(path, hashing.digest)
        tx.link_diff_id(digest, digest)
        return StagedLayer(
            hashing.digest, hashing.size, oci_layer_type(compression), digest, digest
        )

    # -- naming and removing ---------------------------------------------------------------

    def tag(self, name: str, new_name: str) -> Image:
        """Point ``new_name`` at ``name``'s manifest (moving it if it named another image)."""
        image = self.get(name, ensure_layers=False)
        new = normalize_name(new_name)
        fields: dict[str, str | int | list[str]] = {
            "name": new,
            "digest": image.digest,
            "source": image.source or f"tagged from {image.name}",
            "created_at": int(time.time()),
        }
        if image.ref.get("trust"):
            # What a pull verified holds for the manifest, whatever it is called here.
            fields["trust"] = image.ref["trust"]
        with self.store.lock():
            self.check_complete(image.digest)
            write_meta(self.ref_path(new), fields)
        return self.get(new, ensure_layers=False)

    def remove(self, name: str) -> list[str]:
        """Remove a name; blobs and layer trees nothing else references go with it.
        Returns the digests of the blobs removed."""
        if self._references is None:
            raise TypeError("Images.remove needs the store's references: use Store(...).images")
        norm = normalize_name(name)
        self._read_ref(norm)
        with self.store.lock():
            os.unlink(self.ref_path(norm))
            hidden, removed = self.gc(self._references())
        for path in hidden:
            rmtree(path)
        return removed

    def referenced(self) -> tuple[set[str], set[str]]:
        """(blob digests, layer digests) the image refs keep alive."""
        blobs: set[str] = set()
        trees: set[str] = set()
        for name in self.names():
            try:
                ref = self._read_ref(name)
                image = self.load(name, ref["digest"], ref)
            except TophanError:
                # an unreadable image keeps at least its manifest; fsck reports it
                try:
                    blobs.add(self._read_ref(name)["digest"])
                except TophanError:
                    pass
                continue
            blobs.add(image.digest)
            blobs |= self._attached_blobs(image.digest)
            blobs.add(image.config_descriptor.digest)
            for li in image.layer_infos:
                blobs.add(li.blob)
                trees.add(li.digest)
        held_blobs, held_trees = live_holds(self.store)
        return blobs | held_blobs, trees | held_trees

    # -- housekeeping (called by maintenance.gc / fsck) ------------------------------------

    def gc(self, keep_trees: set[str]) -> tuple[list[str], list[str]]:
        """With the store lock held by the caller: hide every blob no image references, and the
        trees only images used (``keep_trees``: what names, workspaces, runs and images still
        need). Returns (hidden paths to delete after unlocking, removed blob digests).

        Everything a transaction publishes is referenced by a ref written under the same lock,
        so an unreferenced blob is garbage, never work in progress."""
        self.ensure_dirs()
        keep_blobs, _ = self.referenced()
        hidden, removed = [], []
        for digest in sorted(self.blobs.all()):
            if digest not in keep_blobs:
                path = self.store.hide(self.blobs.path(digest))
                if path is not None:
                    hidden.append(path)
                    removed.append(digest)
                # where registries have it (tophan.image.registry's mount hints) goes with it
                with contextlib.suppress(OSError):
                    os.unlink(self.store.path("refs", "blobsources", _diffid_file(digest)))
        attached = self.store.path("refs", "attached")
        for entry in sorted(os.listdir(attached)) if os.path.isdir(attached) else []:
            # the attachments of an image that is gone go with it
            if not is_temporary(entry) and entry.replace("-", ":", 1) not in keep_blobs:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(attached, entry))
        diffids = self.store.path("refs", "diffids")
        for entry in sorted(os.listdir(diffids)):
            if is_temporary(entry):
                continue
            path = os.path.join(diffids, entry)
            try:
                layer = meta.read(path)["layer"]
            except (OSError, KeyError):
                continue  # an atomic_write temporary
            if layer in keep_trees or not is_digest(layer):
                continue
            tree = self.store.hide(self.store.path("layers", layer.split(":", 1)[1]))
            if tree is not None:
                hidden.append(tree)
            os.unlink(path)
        return hidden, removed

    def fsck(self) -> list[str]:
        """Problems: blobs that no longer match their digest, images whose manifest, config or
        layer blobs are missing."""
        self.ensure_dirs()
        problems = []
        for digest in sorted(self.blobs.all()):
            wrong = self.blobs.verify(digest)
            if wrong is not None:
                problems.append(f"blob {digest}: {wrong}")
        for name in self.names():
            try:
                image = self.get(name, ensure_layers=False)
            except TophanError as e:
                problems.append(f"image {name}: {e.message}")
                continue
            for li in image.layer_infos:
                if not self.blobs.exists(li.blob):
                    problems.append(f"image {name}: layer blob {li.blob} is missing")
        return problems
