"""Sizes and durations: the one parser of each (tophan._internal.units), docker's grammar."""

from __future__ import annotations

import pytest

from tophan._internal.units import parse_duration, parse_duration_ns, parse_size
from tophan.errors import UsageError

MiB = 1 << 20


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1024", 1024),
        ("0", 0),
        ("100k", 100 << 10),
        ("100KB", 100 << 10),
        ("512m", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("512 m", 512 * MiB),
        ("1.5g", 3 << 29),
        ("2t", 2 << 40),
        ("1p", 1 << 50),
        ("7b", 7),
        (" 64M ", 64 * MiB),
    ],
)
def test_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text", ["", "m", "-1", "1x", "1.2.3m", "1.m", ".5m", "12 mbx", "1e3", "10ib", "1\u0661"]
)
def test_size_errors(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_size(text, "--memory")
    assert str(e.value).startswith(f"--memory: invalid size {text!r}")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("30s", 30 * 10**9),
        ("1m30s", 90 * 10**9),
        ("500ms", 500 * 10**6),
        ("1.5h", 5400 * 10**9),
        ("0.1s", 100 * 10**6),
        (".5s", 500 * 10**6),
        ("2us", 2000),
        ("2µs", 2000),
        ("7ns", 7),
        ("1h2m3s4ms", (3723 * 1000 + 4) * 10**6),
        ("10", 10 * 10**9),  # tophan: a bare number is seconds
        ("0", 0),
        (2.5, 2_500_000_000),
    ],
)
def test_duration(text: str | float, ns: int) -> None:
    assert parse_duration_ns(text, "--x") == ns
    assert parse_duration(text, "--x") == ns / 10**9


@pytest.mark.parametrize("text", ["", "s", "-1s", "-5", "1x", "1 s", "1.2.3s", "1sm", "inf", -1])
def test_duration_errors(text: str | float) -> None:
    with pytest.raises(UsageError) as e:
        parse_duration(text, "--health-interval")
    assert str(e.value).startswith("--health-interval: invalid duration")
    assert "\n" not in str(e.value)
