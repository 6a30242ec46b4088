"""Private helpers under every package: raw syscalls (``libc``), ``key=value`` meta files
(``meta``), name rules (``names``), compressed streams (``compression``), files and locks
(``fs``) and the store's disk (``root``: ``StoreRoot``, the paths, the writer lock, staging).

Not public API: names here change without notice.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def exports(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` (PEP 562): ``table`` maps each exported name to
    the module that defines it, imported on first use, so that ``import tophan`` stays cheap and
    a command loads only the modules it calls.

    Here rather than in a module of its own: every command loads this package anyway, and one
    more module costs a start ~0.2 ms (``python -X importtime``)."""

    def getattr_(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        # __import__ rather than importlib.import_module: importlib (and warnings) cost ~1 ms
        return getattr(__import__(module, fromlist=[name]), name)

    return getattr_
