"""Names of layers and workspaces: the overlayd rule, plus no leading dash."""

from __future__ import annotations

from tophan.errors import UsageError

_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

NAME_RULE = "1-64 characters of A-Z a-z 0-9 . _ -, not '.' or '..', not starting with '-'"


def is_valid(name: str) -> bool:
    return (
        0 < len(name) <= 64
        and _ALLOWED.issuperset(name)
        and name not in (".", "..")
        and not name.startswith("-")
    )


def check(name: str, kind: str) -> str:
    """Return ``name`` if valid, else raise a usage error naming the rule."""
    if not is_valid(name):
        raise UsageError(f"invalid {kind} name: {name!r}", f"names are {NAME_RULE}")
    return name
