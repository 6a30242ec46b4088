"""Compressed streams: detection by content on the way in, reproducible output on the way out."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import IO, Any, cast

from tophan.errors import UsageError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"


class Prefixed(io.RawIOBase):
    """A non-seekable stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self.head:
            n = min(len(view), len(self.head))
            view[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        rest: Any = self.rest
        if hasattr(rest, "readinto"):
            return int(rest.readinto(view) or 0)
        data = rest.read(len(view))
        view[: len(data)] = data
        return len(data)


def peek(src: IO[bytes], n: int, *, buffered: bool = True) -> tuple[bytes, IO[bytes]]:
    """The first ``n`` bytes of ``src`` and a stream that still starts with them (``buffered``:
    behind a 1 MiB buffer; else raw, for readers that move whole chunks themselves)."""
    peek = getattr(src, "peek", None)
    if peek is not None and isinstance(src, io.RawIOBase):
        # A reader of whole chunks (tophan.image.images' pipes) shows its first bytes without
        # another buffer behind it.
        head = bytes(peek(n)[:n])
        if len(head) == n or not head:
            return head, src
    head = b""
    while len(head) < n:
        chunk = src.read(n - len(head))
        if not chunk:
            break
        head += chunk
    if not buffered:
        return head, Prefixed(head, src)  # type: ignore[return-value]
    return head, io.BufferedReader(Prefixed(head, src), buffer_size=1 << 20)


def detect(head: bytes) -> str | None:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return None


def open_decompressed(src: IO[bytes]) -> IO[bytes]:
    """``src`` decompressed if it is gzip, zstd, xz or bzip2 (by content), else as it is."""
    head, stream = peek(src, 6)
    kind = detect(head)
    if kind is None:
        return stream
    if kind == "gzip":
        gzip: Any
        try:
            # ISA-L's gzip reader: the same checks, about twice as fast as the standard one.
            from isal import igzip as gzip
        except ImportError:  # pragma: no cover - isal is a dependency
            import gzip

        return cast("IO[bytes]", gzip.GzipFile(fileobj=stream, mode="rb"))
    if kind == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(stream, "rb")
    import bz2

    return bz2.BZ2File(stream, "rb")


@contextlib.contextmanager
def compressor(kind: str | None, out: IO[bytes]) -> Iterator[IO[bytes]]:
    """A writer compressing into ``out``; the same input always gives the same bytes."""
    if kind is None:
        yield out
        return
    if kind == "gzip":
        import gzip

        # mtime=0 and no file name: the header carries nothing that varies between runs.
        with gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=6, mtime=0) as z:
            yield z  # type: ignore[misc]
        return
    if kind == "zstd":
        import zstandard

        cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
        with cctx.stream_writer(out, closefd=False) as z:
            yield z
        return
    raise UsageError(f"unknown compression {kind!r}", "use gzip or zstd")
