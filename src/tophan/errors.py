"""Errors that reach users: one line of what went wrong, why, and what to do.

The CLI prints ``str(error)`` and exits with ``error.rc``; no traceback ever reaches a user for
something they can fix. Library callers catch :class:`TophanError` (or a subclass).
"""

from __future__ import annotations


class TophanError(Exception):
    """Base class. ``rc`` is the exit code the CLI uses (1 runtime failure, 2 usage error)."""

    rc = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(TophanError):
    """Wrong arity, unknown subcommand or flag, invalid name."""

    rc = 2


class NotFound(TophanError):
    """A named layer, workspace or store does not exist."""


class Exists(TophanError):
    """A name is already taken."""


class InUse(TophanError):
    """Something still uses what the caller wants to remove or change (a mount, a workspace)."""


class MountError(TophanError):
    """The kernel refused a mount or unmount."""


class ArchiveError(TophanError):
    """A tar archive is malformed, truncated, or unsafe to extract."""


class IntegrityError(TophanError):
    """Content does not match its recorded digest."""
