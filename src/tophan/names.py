"""Names of layers and workspaces: the overlayd rule, plus no leading dash."""

from __future__ import annotations

import re

from tophan.errors import UsageError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

NAME_RULE = "1-64 characters of A-Z a-z 0-9 . _ -, not '.' or '..', not starting with '-'"


def is_valid(name: str) -> bool:
    return (
        _NAME.fullmatch(name) is not None and name not in (".", "..") and not name.startswith("-")
    )


def check(name: str, kind: str) -> str:
    """Return ``name`` if valid, else raise a usage error naming the rule."""
    if not is_valid(name):
        raise UsageError(f"invalid {kind} name: {name!r}", f"names are {NAME_RULE}")
    return name
