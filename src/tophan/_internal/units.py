"""Sizes and durations as users write them, with docker's grammar (one parser each).

Sizes follow docker's ``RAMInBytes``: a number, an optional space, an optional unit letter
(k, m, g, t, p; any case; binary multiples) and an optional ``b``/``ib``: ``1024``, ``100k``,
``512MiB``, ``1.5g``. Durations follow Go's ``time.ParseDuration`` (docker's ``--health-*``):
a sequence of number+unit (``ns us µs ms s m h``) such as ``30s``, ``1m30s``, ``1.5h``; as
tophan always has, a bare number is seconds (``10``).
"""

from __future__ import annotations

from tophan.errors import UsageError

# Sizes are read without `re`: importing it costs `tophan run -m 64m` ~10 ms (measured with
# python -X importtime), a sixth of a start. Durations (apps, health checks) use it.
_DIGITS = frozenset("0123456789")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_HINT = "use a number and an optional unit: 512m, 2g"

_NUMBER = r"(?a:\d+\.?\d*|\.\d+)"
_DURATION_PART = rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)"
_DURATION = rf"(?:{_NUMBER}(?:ns|us|µs|μs|ms|s|m|h))+"
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9}
_NS.update({"m": 60 * 10**9, "h": 3600 * 10**9})
_DURATION_HINT = "use e.g. 30s, 1m30s, 500ms (a bare number is seconds)"


def parse_size(text: str, what: str = "") -> int:
    """Bytes of a size such as ``512m``; ``what`` (a flag name) prefixes the error."""
    s = text.strip().lower()
    end = 0
    while end < len(s) and (s[end] in _DIGITS or s[end] == "."):
        end += 1
    number, unit = s[:end], s[end:]
    unit = unit[1:] if unit[:1] == " " else unit  # one optional space, as docker
    letter = unit[:1] if unit[:1] and unit[:1] in _SIZE_UNITS else ""
    rest = unit[len(letter) :]
    whole, dot, frac = number.partition(".")
    # "10ib" has no unit letter for its "i" to qualify: docker refuses it too.
    bad_unit = rest not in ("", "b", "ib") or (rest == "ib" and not letter)
    if not whole or (dot and not frac) or "." in frac or bad_unit:
        raise UsageError(f"{what + ': ' if what else ''}invalid size {text!r}", _SIZE_HINT)
    if dot:
        return int(float(number) * _SIZE_UNITS[letter])
    return int(number) * _SIZE_UNITS[letter]


def parse_duration_ns(text: str | float, what: str) -> int:
    """Nanoseconds of a duration such as ``1m30s``; never negative."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: invalid duration {text!r}", _DURATION_HINT)
    if isinstance(text, int | float):
        if text < 0 or text != text:
            raise UsageError(f"{what}: invalid duration {text!r}", "it must not be negative")
        return round(text * 10**9)
    import re

    s = text.strip()
    if re.fullmatch(_NUMBER, s):
        return round(float(s) * 10**9)
    if not re.fullmatch(_DURATION, s):
        raise UsageError(f"{what}: invalid duration {text!r}", _DURATION_HINT)
    # Decimal arithmetic on the digits: 0.1s is exactly 100ms, as in Go.
    total = 0
    for number, unit in re.findall(_DURATION_PART, s):
        whole, _, frac = number.partition(".")
        total += int(whole or "0") * _NS[unit]
        if frac:
            total += int(frac) * _NS[unit] // 10 ** len(frac)
    return total


def parse_duration(text: str | float, what: str) -> float:
    """Seconds of a duration such as ``1m30s``; never negative."""
    return parse_duration_ns(text, what) / 10**9
