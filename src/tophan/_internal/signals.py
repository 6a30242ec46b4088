"""The signal calls and numbers a container start uses, taken from the C module ``_signal``.

``import signal`` makes an enum member of every signal number when it is imported, and brings
enum, functools and collections along: ~9 ms measured here (``python -X importtime tophan run``),
a sixth of a whole `tophan run`. ``_signal`` has the same calls, with plain ints. They are
declared here with their types, so mypy checks what runs (the module has no stub of its own).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType
    from typing import Any

    Handler = Callable[[int, FrameType | None], Any] | int

_c: Any = __import__("_signal")

SIGHUP: int = _c.SIGHUP
SIGINT: int = _c.SIGINT
SIGQUIT: int = _c.SIGQUIT
SIGTRAP: int = _c.SIGTRAP
SIGKILL: int = _c.SIGKILL
SIGUSR1: int = _c.SIGUSR1
SIGUSR2: int = _c.SIGUSR2
SIGPIPE: int = _c.SIGPIPE
SIGTERM: int = _c.SIGTERM
SIGCHLD: int = _c.SIGCHLD
SIGCONT: int = _c.SIGCONT
SIGXFSZ: int = _c.SIGXFSZ
SIGWINCH: int = _c.SIGWINCH
SIG_DFL: int = _c.SIG_DFL
SIG_BLOCK: int = _c.SIG_BLOCK
SIG_SETMASK: int = _c.SIG_SETMASK


def pthread_sigmask(how: int, mask: Iterable[int]) -> set[int]:
    return set(_c.pthread_sigmask(how, mask))


def signal(signum: int, handler: Handler) -> Handler:
    old: Handler = _c.signal(signum, handler)
    return old


def sigwaitinfo(sigset: Iterable[int]) -> Any:
    """A ``signal.struct_siginfo`` (si_signo, si_code, si_pid...)."""
    return _c.sigwaitinfo(sigset)


def sigtimedwait(sigset: Iterable[int], timeout: float) -> Any:
    """A ``signal.struct_siginfo``, or None after ``timeout`` seconds."""
    return _c.sigtimedwait(sigset, timeout)
