"""Small metadata files: ``key=value`` lines, like the seed tool's ``meta`` files.

Cheaper to read than JSON (no ``json``/``re`` import on the CLI's path commands), readable with
grep, and what overlayd users already know. Values escape backslash and newline; lists are
comma-joined (names cannot contain commas).
"""

from __future__ import annotations

import os


def dumps(items: dict[str, str | int | list[str]]) -> bytes:
    lines = []
    for key, value in items.items():
        if isinstance(value, list):
            value = ",".join(value)
        text = str(value).replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"{key}={text}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def loads(data: bytes) -> dict[str, str]:
    out = {}
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        key, eq, value = line.partition("=")
        if eq:
            if "\\" in value:
                value = _unescape(value)
            out[key] = value
    return out


def _unescape(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt == "n" else nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read(path: str) -> dict[str, str]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return loads(b"".join(chunks))


def split_list(value: str) -> list[str]:
    return value.split(",") if value else []
